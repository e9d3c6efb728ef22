"""`mobile-office demo` starts on a bare machine on its own Mosquitto, answers on both ports, stops cleanly."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from tests.conftest import Proc, free_port, http_ok, mobile_office_cmd, mosquitto_path, spawn, wait_until
from tests.helpers import ApiClient

pytestmark = pytest.mark.functional


def test_demo_starts_serves_and_stops_cleanly(tmp_path: Path, procs: list[Proc]) -> None:
    node_port, hq_port = free_port(), free_port()
    demo = spawn(
        mobile_office_cmd("demo", "--data-dir", str(tmp_path / "demo"), "--http-port", str(node_port), "--hq-port", str(hq_port), "--admin-password", "демо-пароль"),
        tmp_path / "demo.log",
    )
    procs.append(demo)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{node_port}/healthz") and http_ok(f"http://127.0.0.1:{hq_port}/healthz"), 60, what="demo to serve")
    out = demo.output()
    assert f"http://127.0.0.1:{node_port}/" in out and f"http://127.0.0.1:{hq_port}/" in out
    assert "admin / демо-пароль" in out
    # The production MQTT 5 path: the demo's own Mosquitto (bin/setup installs it); amqtt only where it is missing.
    broker = re.search(r"Broker: (mqtt://127\.0\.0\.1:\d+) \(([^)]+)\)", out)
    assert broker is not None, out
    assert broker.group(2) == ("Mosquitto, MQTT 5" if mosquitto_path() else "embedded amqtt, MQTT 3.1.1")

    api = ApiClient(f"http://127.0.0.1:{node_port}")
    api.login("admin", "демо-пароль")
    status, doc = api.request("POST", "/api/v1/applications", {"surname": "Косач", "given_name": "Лариса", "rnokpp": "3184710691", "service_code": "RES-01"})
    assert status == 201, doc
    assert "demo-hq-token.txt" in out
    token = next(tmp_path.rglob("demo-hq-token.txt")).read_text().strip()
    assert ApiClient(f"http://127.0.0.1:{hq_port}").request("GET", "/api/v1/stats")[0] == 401  # the token is what opens it
    hq = ApiClient(f"http://127.0.0.1:{hq_port}", token)
    wait_until(lambda: hq.get("/api/v1/stats")["records"] == 1, 60, what="the record at HQ")
    # The simulated van's position reaches HQ through gpsd protocol and MQTT.
    wait_until(lambda: hq.get("/api/v1/fleet")[0]["lat"] is not None, 60, what="a position at HQ")

    assert demo.terminate() == 0
    out = demo.output()
    assert "Traceback" not in out, out[-3000:]
    assert not http_ok(f"http://127.0.0.1:{node_port}/healthz")
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", int(broker.group(1).rsplit(":", 1)[1]))) != 0  # its broker stopped with it
