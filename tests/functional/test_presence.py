"""Presence at HQ: real Mosquitto, `mobile-office node` and `mobile-office hq` processes.

* ignition off (a clean exit): the node publishes a retained "offline" before it disconnects;
* power cut (SIGKILL behind a proxy that keeps the broker's socket open, as a dead radio does):
  the broker publishes the last will after 1.5 keepalives;
* a revoked van's status is ignored, and the fleet says "revoked".
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from provisioning.keys import HQKeys, NodeBundle, revoke_node
from tests.conftest import Broker, Proc, free_port, http_ok, mobile_office_cmd, spawn, wait_until
from tests.helpers import ApiClient, hq_token

pytestmark = pytest.mark.functional


def start_hq(hq_dir: Path, broker_url: str, procs: list[Proc], log: Path) -> ApiClient:
    port = free_port()
    procs.append(spawn(mobile_office_cmd("hq", "--hq-data-dir", str(hq_dir), "--hq-broker", broker_url, "--hq-host", "127.0.0.1",
                                         "--hq-port", str(port)), log))
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, what="HQ to serve")
    return ApiClient(f"http://127.0.0.1:{port}", hq_token(hq_dir))  # HQ's API needs a token


def start_node(bundle: NodeBundle, data: Path, broker_url: str, procs: list[Proc], log: Path, *extra: str) -> Proc:
    port = free_port()
    p = spawn(mobile_office_cmd("node", "--bundle", str(bundle.directory), "--data-dir", str(data), "--broker", broker_url,
                                "--gpsd", f"127.0.0.1:{free_port()}", "--http-host", "127.0.0.1", "--http-port", str(port), *extra), log)
    procs.append(p)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, what="node to serve")
    return p


def status_of(hq: ApiClient, node: str) -> str | None:
    for n in hq.get("/api/v1/fleet"):
        if n["node_id"] == node:
            return str(n["status"])
    return None


class HoldingProxy:
    """TCP proxy in its own thread; ``freeze()`` stops forwarding and never closes the broker's side (a power cut)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._held: list[asyncio.StreamWriter] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, upstream: bool) -> None:
        try:
            while data := await r.read(65536):
                if self.frozen.is_set():
                    break
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        if self.frozen.is_set() and upstream:
            self._held.append(w)  # the broker's socket stays open and silent
            return
        w.close()

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(r, uw, True), self._pipe(ur, w, False))

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def proxy(mosquitto: Broker) -> Iterator[HoldingProxy]:
    p = HoldingProxy(mosquitto.port)
    yield p
    p.close()


def retained_status(broker: Broker, node: str) -> dict[str, object]:
    """The broker's retained status of a van, read by a fresh subscriber."""
    got: list[dict[str, object]] = []
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="presence-probe")
    c.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    c.on_connect = lambda cl, _u, _f, _rc, _p: cl.subscribe(f"mo/v1/{node}/status", 1)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        wait_until(lambda: got, 20, what="the retained status")
    finally:
        c.disconnect()
        c.loop_stop()
    return got[0]


def test_ignition_off_shows_offline_at_hq(bundle: NodeBundle, hq_keys: HQKeys, mosquitto: Broker, procs: list[Proc], tmp_path: Path) -> None:
    hq = start_hq(hq_keys.directory, mosquitto.url, procs, tmp_path / "hq.log")
    gpio = tmp_path / "ignition"
    gpio.write_text("1\n")
    node = start_node(bundle, tmp_path / "node", mosquitto.url, procs, tmp_path / "node.log", "--ignition-gpio", str(gpio),
                      "--ignition-poll", "0.1", "--shutdown-sync-seconds", "2")
    wait_until(lambda: status_of(hq, "van-01") == "online", 60, what="van online at HQ")
    gpio.write_text("0\n")
    wait_until(lambda: node.process.poll() is not None, 60, what="the node to exit after ignition off")
    assert node.process.returncode == 0, node.output()
    # A clean DISCONNECT suppresses the will: only the node's own retained "offline" can say so.
    assert "offline status published" in node.output()
    wait_until(lambda: status_of(hq, "van-01") == "offline", 30, what="van offline at HQ after ignition off")
    assert retained_status(mosquitto, "van-01")["state"] == "offline"  # HQ restarting later sees the same


def test_power_cut_shows_offline_after_the_keepalive(bundle: NodeBundle, hq_keys: HQKeys, mosquitto: Broker, proxy: HoldingProxy,
                                                    procs: list[Proc], tmp_path: Path) -> None:
    hq = start_hq(hq_keys.directory, mosquitto.url, procs, tmp_path / "hq.log")
    node = start_node(bundle, tmp_path / "node", f"mqtt://127.0.0.1:{proxy.port}", procs, tmp_path / "node.log", "--mqtt-keepalive", "3")
    wait_until(lambda: status_of(hq, "van-01") == "online", 60, what="van online at HQ")
    proxy.freeze()  # the radio goes quiet with the power: no FIN reaches the broker
    node.kill()
    assert "offline status published" not in node.output()
    # Bound: 1.5 x 3 s keepalive plus a busy machine; the will is the only way "offline" can come now.
    wait_until(lambda: status_of(hq, "van-01") == "offline", 60, what="the last will at HQ")


def test_revoked_van_status_is_ignored(bundle: NodeBundle, hq_keys: HQKeys, mosquitto: Broker, procs: list[Proc], tmp_path: Path) -> None:
    hq = start_hq(hq_keys.directory, mosquitto.url, procs, tmp_path / "hq.log")
    node = start_node(bundle, tmp_path / "node", mosquitto.url, procs, tmp_path / "node.log")
    wait_until(lambda: status_of(hq, "van-01") == "online", 60, what="van online at HQ")
    revoke_node(hq_keys, "van-01")
    wait_until(lambda: status_of(hq, "van-01") == "revoked", 30, what="the fleet to show the van revoked")
    node.terminate()  # its "offline" arrives after the revocation: ignored like any other status
    assert "offline status published" in node.output()
    wait_until(lambda: "ignored: not an active van" in procs[0].output(), 30, what="HQ ignoring it")
    assert status_of(hq, "van-01") == "revoked"
