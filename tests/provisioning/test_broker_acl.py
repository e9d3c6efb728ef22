"""The generated Mosquitto configuration, against the real Mosquitto: mTLS identities, per-van ACL, CRL."""

from __future__ import annotations

import queue
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion

from provisioning.ca import CA
from provisioning.keys import HQKeys, NodeBundle, AdminAccount, add_node
from provisioning.tls import client_context
from tests.conftest import ADMIN_PASSWORD, REPO, free_port, http_ok, mobile_office_cmd, mosquitto_path, spawn, wait_until
from tests.helpers import ApiClient, hq_token

pytestmark = pytest.mark.functional


def cli(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "mobile_office.cli", *args], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


class Client:
    def __init__(self, port: int, ctx: ssl.SSLContext | None, client_id: str) -> None:
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connected: queue.Queue[bool] = queue.Queue()
        self.c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
        if ctx is not None:
            self.c.tls_set_context(ctx)
        self.c.on_message = lambda c, u, m: self.inbox.put((m.topic, bytes(m.payload)))
        self.c.on_connect = lambda c, u, f, rc, p: self.connected.put(not rc.is_failure)
        # A refused certificate ends the connection before any CONNACK: answer "refused" at once, not after a timeout.
        self.c.on_connect_fail = lambda c, u: self.connected.put(False)
        self.disconnects: queue.Queue[str] = queue.Queue()
        self.c.on_disconnect = lambda c, u, f, rc, p: (self.disconnects.put(str(rc)), self.connected.put(False))
        self.subacks: queue.Queue[int] = queue.Queue()
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(mid)
        self.c.connect_async("127.0.0.1", port)
        self.c.loop_start()

    def ok(self) -> bool:
        try:
            return self.connected.get(timeout=10)
        except queue.Empty:
            return False

    def sub(self, topic: str) -> None:
        """Subscribe and wait for the broker's SUBACK (a refused filter is acknowledged too)."""
        mid = self.c.subscribe(topic, 1)[1]
        while self.subacks.get(timeout=15) != mid:
            pass

    def pub(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def messages_until(self, marker: bytes) -> list[tuple[str, bytes]]:
        """Everything received up to a marker sent after the forbidden messages (same path, so in order)."""
        got = []
        while True:
            topic, payload = self.inbox.get(timeout=15)
            if payload == marker:
                return got
            got.append((topic, payload))

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def broker(hq_keys: HQKeys, bundle: NodeBundle, tmp_path: Path) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    if mosquitto_path() is None:
        pytest.skip("Mosquitto is not installed (the test command installs it as root: apt-get install mosquitto)")
    add_node(hq_keys, "van-02", tmp_path / "bundle2", [AdminAccount("admin", "пароль-2-довгий", "van_admin")])
    cli("provision", "add-hq-worker", "hq-1", "--hq-dir", str(hq_keys.directory))
    port = free_port()
    out = tmp_path / "broker"
    cli("provision", "broker-config", "--hq-dir", str(hq_keys.directory), "--out", str(out), "--port", str(port), "--host", "127.0.0.1",
        # pytest's temporary directories are private to root: the test broker keeps root's identity
        "--run-as", "root")
    proc = subprocess.Popen([mosquitto_path() or "mosquitto", "-c", str(out / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    def up() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_until(up, 10, what="mosquitto with TLS")
    yield port, out, proc
    proc.terminate()
    proc.wait(10)


def test_acl_and_identities(broker: tuple[int, Path, subprocess.Popen[bytes]], hq_keys: HQKeys, bundle: NodeBundle, tmp_path: Path) -> None:
    port, _out, _proc = broker
    hq = Client(port, client_context(hq_keys.directory / "workers" / "hq-1", "worker"), "hq-1")
    van1 = Client(port, client_context(bundle.directory, "mqtt_client"), "van-01")
    van2 = Client(port, client_context(tmp_path / "bundle2", "mqtt_client"), "van-02")
    try:
        assert hq.ok() and van1.ok() and van2.ok()
        hq.sub("$share/hq/mo/v1/+/up/#")
        van1.sub("mo/v1/van-02/down/#")  # not allowed: silently gets nothing
        van1.sub("mo/v1/van-01/down/#")

        van1.pub("mo/v1/van-02/up/rec", b"forged by van-01")  # under another van's id
        van1.pub("mo/v1/van-01/up/rec", b"honest")
        van1.pub("mo/v1/van-01/up/rec", b"MARK-1")
        assert hq.messages_until(b"MARK-1") == [("mo/v1/van-01/up/rec", b"honest")]

        hq.pub("mo/v1/van-02/down/cmd", b"for van-02 only")
        hq.pub("mo/v1/van-01/down/cmd", b"MARK-2")
        assert van1.messages_until(b"MARK-2") == []  # van-01 cannot read van-02's downlink
    finally:
        for c in (hq, van1, van2):
            c.close()


def test_no_certificate_no_entry(broker: tuple[int, Path, subprocess.Popen[bytes]], hq_keys: HQKeys) -> None:
    port, _out, _proc = broker
    ctx = ssl.create_default_context(cafile=str(hq_keys.directory / "ca" / "ca.crt"))  # trusts the broker, shows no cert
    anon = Client(port, ctx, "anonymous")
    try:
        assert not anon.ok()
    finally:
        anon.close()


def test_revoked_van_cannot_connect(broker: tuple[int, Path, subprocess.Popen[bytes]], hq_keys: HQKeys, tmp_path: Path) -> None:
    port, out, proc = broker
    cli("provision", "revoke", "van-02", "--hq-dir", str(hq_keys.directory))
    assert "REVOKED" in cli("provision", "list", "--hq-dir", str(hq_keys.directory))
    assert "van-02" not in hq_keys.node_keys()  # HQ refuses its signature too
    # the new CRL goes to the broker, which restarts
    cli("provision", "broker-config", "--hq-dir", str(hq_keys.directory), "--out", str(out), "--port", str(port), "--host", "127.0.0.1",
        # pytest's temporary directories are private to root: the test broker keeps root's identity
        "--run-as", "root")
    proc.terminate()
    proc.wait(10)
    proc2 = subprocess.Popen([mosquitto_path() or "mosquitto", "-c", str(out / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), 1).close() is None, 10, what="mosquitto back")
        van2 = Client(port, client_context(tmp_path / "bundle2", "mqtt_client"), "van-02")
        van1 = Client(port, client_context(hq_keys.directory.parent / "bundle", "mqtt_client"), "van-01")
        try:
            assert not van2.ok()
            assert van1.ok()
        finally:
            van2.close()
            van1.close()
    finally:
        proc2.terminate()
        proc2.wait(10)


def test_node_and_hq_over_mutual_tls(broker: tuple[int, Path, subprocess.Popen[bytes]], hq_keys: HQKeys, bundle: NodeBundle,
                                     tmp_path: Path) -> None:
    port, _out, _proc = broker
    url = f"mqtts://127.0.0.1:{port}"
    hq_port, node_port = free_port(), free_port()
    procs = [
        spawn(mobile_office_cmd("hq", "--hq-data-dir", str(hq_keys.directory), "--hq-broker", url, "--hq-worker", "hq-1",
                                "--hq-host", "127.0.0.1", "--hq-port", str(hq_port)), tmp_path / "hq.log"),
        spawn(mobile_office_cmd("node", "--bundle", str(bundle.directory), "--data-dir", str(tmp_path / "node"), "--broker", url,
                                "--gpsd", f"127.0.0.1:{free_port()}", "--http-host", "127.0.0.1", "--http-port", str(node_port)),
              tmp_path / "node.log"),
    ]
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{node_port}/healthz") and http_ok(f"http://127.0.0.1:{hq_port}/healthz"), 30, what="node and HQ")
        api = ApiClient(f"http://127.0.0.1:{node_port}")
        api.login("admin", ADMIN_PASSWORD)
        status, _ = api.request("POST", "/api/v1/applications", {"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776", "service_code": "RES-01"})
        assert status == 201
        wait_until(lambda: api.get("/api/v1/status")["outbox"]["by_stream"]["rec"]["pending"] == 0, 60, what="HQ's ack over mTLS")
        assert ApiClient(f"http://127.0.0.1:{hq_port}", hq_token(hq_keys.directory)).get("/api/v1/stats")["records"] == 1
    finally:
        for p in procs:
            p.terminate()


def test_client_id_takeover_refused(broker: tuple[int, Path, subprocess.Popen[bytes]], hq_keys: HQKeys, bundle: NodeBundle,
                                    tmp_path: Path) -> None:
    """A van's certificate asking for hq-1's or another van's client id gets its own: nobody is kicked off."""
    port, _out, _proc = broker
    hq = Client(port, client_context(hq_keys.directory / "workers" / "hq-1", "worker"), "hq-1")
    van2 = Client(port, client_context(tmp_path / "bundle2", "mqtt_client"), "van-02")
    intruders: list[Client] = []
    try:
        assert hq.ok() and van2.ok()
        hq.sub("mo/v1/+/up/#")
        for stolen in ("hq-1", "van-02"):
            intruder = Client(port, client_context(bundle.directory, "mqtt_client"), stolen)
            intruders.append(intruder)
            assert intruder.ok()  # connected, under its certificate's identity
        # Round trips on the old sessions after the intruders' CONNACKs: a taken-over session would be closed by now.
        van2.pub("mo/v1/van-02/up/rec", b"still here")
        assert hq.messages_until(b"still here") == []
        hq.sub("mo/v1/+/status")
        assert hq.disconnects.empty() and van2.disconnects.empty()
        assert hq.c.is_connected() and van2.c.is_connected()
    finally:
        for c in (hq, van2, *intruders):
            c.close()


def test_oversized_packet_cuts_the_sender_off(broker: tuple[int, Path, subprocess.Popen[bytes]], hq_keys: HQKeys,
                                              bundle: NodeBundle) -> None:
    port, out, _proc = broker
    assert "max_packet_size 1048576" in (out / "mosquitto.conf").read_text()
    hq = Client(port, client_context(hq_keys.directory / "workers" / "hq-1", "worker"), "hq-1")
    van1 = Client(port, client_context(bundle.directory, "mqtt_client"), "van-01")
    try:
        assert hq.ok() and van1.ok()
        hq.sub("mo/v1/+/up/#")
        van1.pub("mo/v1/van-01/up/rec", b"x" * 60_000)  # an ordinary batch passes
        assert hq.messages_until(b"x" * 60_000) == []
        van1.c.publish("mo/v1/van-01/up/rec", b"y" * (2 * 1024 * 1024), qos=1)
        assert van1.disconnects.get(timeout=30)  # the broker hung up on it
        van1.close()
        van2 = Client(port, client_context(bundle.directory, "mqtt_client"), "van-01")
        assert van2.ok()
        van2.pub("mo/v1/van-01/up/rec", b"MARK")
        assert hq.messages_until(b"MARK") == []  # the oversized publish never reached HQ
        van2.close()
    finally:
        hq.close()
        van1.close()


def admitted(port: int, bundle_dir: Path, client_id: str) -> bool:
    """One fresh connection attempt with a van's certificate: did the broker accept it?"""
    client = Client(port, client_context(bundle_dir, "mqtt_client"), client_id)
    try:
        return client.ok()
    finally:
        client.close()


def wait_until_refused(port: int, bundle_dir: Path, client_id: str) -> None:
    """The broker applies a SIGHUP in its own loop, after the signal was sent: wait for the refusal, not for time."""
    wait_until(lambda: not admitted(port, bundle_dir, client_id), 60, interval=0.2, what=f"the broker to refuse {client_id}")


def _next_update(crl_path: Path) -> float:
    return x509.load_pem_x509_crl(crl_path.read_bytes()).next_update_utc.timestamp()


def test_crl_refresh_reaches_the_running_broker(broker: tuple[int, Path, subprocess.Popen[bytes]], hq_keys: HQKeys, tmp_path: Path) -> None:
    """refresh-crl re-signs the CRL with a long validity, copies it to the broker and makes the broker load it."""
    port, out, proc = broker
    assert _next_update(out / "crl.pem") - time.time() > 300 * 86400  # long validity, not 30 days
    # A revocation recorded at HQ but never published: the running broker still admits van-02.
    CA.load(hq_keys.directory / "ca").revoke("van-02")
    before = Client(port, client_context(tmp_path / "bundle2", "mqtt_client"), "van-02")
    assert before.ok()
    before.close()
    text = cli("provision", "refresh-crl", "--hq-dir", str(hq_keys.directory), "--crl-days", "400")
    assert f"broker pid {proc.pid} reloaded" in text
    assert (out / "crl.pem").read_bytes() == (hq_keys.directory / "ca" / "crl.pem").read_bytes()
    assert _next_update(out / "crl.pem") - time.time() > 399 * 86400
    wait_until_refused(port, tmp_path / "bundle2", "van-02")  # the broker reloaded the new list without a restart
    assert admitted(port, hq_keys.directory.parent / "bundle", "van-01")
    assert proc.poll() is None


def test_revoke_is_effective_at_the_broker_without_manual_steps(broker: tuple[int, Path, subprocess.Popen[bytes]], hq_keys: HQKeys,
                                                               tmp_path: Path) -> None:
    port, _out, proc = broker
    first = Client(port, client_context(tmp_path / "bundle2", "mqtt_client"), "van-02")
    assert first.ok()
    first.close()
    text = cli("provision", "revoke", "van-02", "--hq-dir", str(hq_keys.directory))
    assert "reloaded" in text
    wait_until_refused(port, tmp_path / "bundle2", "van-02")
    assert admitted(port, hq_keys.directory.parent / "bundle", "van-01")
    assert proc.poll() is None  # same broker process: nobody else was disconnected


def test_reload_command_and_a_broker_that_cannot_be_told(hq_keys: HQKeys, bundle: NodeBundle, tmp_path: Path) -> None:
    """A configured reload command runs; with no broker running, revoke says so and fails (the CRL is written all the same)."""
    cli("provision", "add-hq-worker", "hq-1", "--hq-dir", str(hq_keys.directory))
    marker = tmp_path / "reloaded"
    cli("provision", "broker-config", "--hq-dir", str(hq_keys.directory), "--out", str(tmp_path / "b1"), "--run-as", "root",
        "--broker-reload-command", f"touch {marker}")
    assert "run/mosquitto.pid" in (tmp_path / "b1" / "mosquitto.conf").read_text()
    assert "reloaded (touch" in cli("provision", "refresh-crl", "--hq-dir", str(hq_keys.directory))
    assert marker.exists()
    cli("provision", "broker-config", "--hq-dir", str(hq_keys.directory), "--out", str(tmp_path / "b2"), "--run-as", "root")
    r = subprocess.run([sys.executable, "-m", "mobile_office.cli", "provision", "revoke", "van-01", "--hq-dir", str(hq_keys.directory)],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0 and "no running broker" in r.stderr and "b2" in r.stderr
    assert "REVOKED" in cli("provision", "list", "--hq-dir", str(hq_keys.directory))
    assert (tmp_path / "b2" / "crl.pem").read_bytes() == (hq_keys.directory / "ca" / "crl.pem").read_bytes()
