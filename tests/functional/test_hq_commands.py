"""A signed 'lock' command from HQ locks the van's store; a forged one does nothing."""

from __future__ import annotations

import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from provisioning.keys import HQKeys, NodeBundle
from sync.downlink import build, command
from tests.conftest import ADMIN_PASSWORD, Broker, Proc, free_port, http_ok, mobile_office_cmd, spawn, wait_until
from tests.helpers import ApiClient

pytestmark = pytest.mark.functional


def publish(broker: Broker, topic: str, payload: bytes) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-hq-console", protocol=paho.MQTTv5)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


def test_signed_lock_command(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker, procs: list[Proc]) -> None:
    port = free_port()
    node = spawn(mobile_office_cmd("node", "--bundle", str(bundle.directory), "--data-dir", str(tmp_path / "node"), "--broker", mosquitto.url,
                                   "--gpsd", f"127.0.0.1:{free_port()}", "--http-host", "127.0.0.1", "--http-port", str(port),
                                   # expiry is judged in trusted time; this machine's clock is right but nothing disciplines it
                                   "--trust-kernel-clock", "assume"), tmp_path / "node.log")
    procs.append(node)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 30, what="node")
    api = ApiClient(f"http://127.0.0.1:{port}")
    api.login("admin", ADMIN_PASSWORD)
    wait_until(lambda: api.get("/api/v1/status")["link"]["mqtt"] == "up", 30, what="node on the broker")
    assert api.get("/api/v1/status")["store"]["locked"] is False

    # A command signed by someone else is refused: the store stays open.
    forged = build(Ed25519PrivateKey.generate(), "van-01", "cmd", 1, [command("c-1", "lock", time.time() + 600)], 1)
    publish(mosquitto, "mo/v1/van-01/down/cmd", forged)
    expired = build(hq_keys.sign, "van-01", "cmd", 1, [command("c-2", "lock", time.time() - 1)], 1)
    publish(mosquitto, "mo/v1/van-01/down/cmd", expired)
    time.sleep(1.0)  # nothing to wait for: give the node time to (not) act on them
    assert api.get("/api/v1/status")["store"]["locked"] is False

    publish(mosquitto, "mo/v1/van-01/down/cmd", build(hq_keys.sign, "van-01", "cmd", 2, [command("c-3", "lock", time.time() + 600)], 2))
    wait_until(lambda: api.get("/api/v1/status")["store"]["locked"] is True, 30, what="the store to lock")
    status, _ = api.request("POST", "/api/v1/applications", {"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776", "service_code": "RES-01"})
    assert status == 401  # the session was closed with the lock
