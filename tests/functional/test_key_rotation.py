"""Key rotation across the real system: Mosquitto, an HQ process, a van process.  `provision rotate` at HQ, the
signed rotate_key command to the running van, records flowing under the new key, the old key refused."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioning.keys import HQKeys, NodeBundle
from provisioning.rotation import pending_command_args
from sync.downlink import build, command
from sync.envelope import Envelope, encode
from tests.conftest import ADMIN_PASSWORD, REPO, Broker, Proc, free_port, http_ok, mobile_office_cmd, spawn, wait_until
from tests.functional.test_hq_commands import publish
from tests.helpers import ApiClient, hq_token

pytestmark = pytest.mark.functional


def test_rotation_on_a_running_van(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker, procs: list[Proc]) -> None:
    old_sign = bundle.sign
    hq_port, port = free_port(), free_port()
    procs.append(spawn(mobile_office_cmd("hq", "--hq-data-dir", str(hq_keys.directory), "--hq-broker", mosquitto.url, "--hq-host", "127.0.0.1",
                                         "--hq-port", str(hq_port)), tmp_path / "hq.log"))
    procs.append(spawn(mobile_office_cmd("node", "--bundle", str(bundle.directory), "--data-dir", str(tmp_path / "node"), "--broker", mosquitto.url,
                                         "--gpsd", f"127.0.0.1:{free_port()}", "--http-host", "127.0.0.1", "--http-port", str(port),
                                         "--trust-kernel-clock", "assume"),  # commands wait for trusted time; this clock is right
                       tmp_path / "node.log"))
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz") and http_ok(f"http://127.0.0.1:{hq_port}/healthz"), 60, what="node and HQ")
    api, hq = ApiClient(f"http://127.0.0.1:{port}"), ApiClient(f"http://127.0.0.1:{hq_port}", hq_token(hq_keys.directory))
    api.login("admin", ADMIN_PASSWORD)
    wait_until(lambda: api.get("/api/v1/status")["link"]["mqtt"] == "up", 30, what="node on the broker")

    r = subprocess.run([sys.executable, "-m", "mobile_office.cli", "provision", "rotate", "van-01", "--hq-dir", str(hq_keys.directory),
                        "--out", str(tmp_path / "new"), "--bundle", str(bundle.directory)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    args = pending_command_args(hq_keys.directory, "van-01")
    # What HQ's dashboard sends for rotate_key (hq/web.py adds the sealed arguments).
    publish(mosquitto, "mo/v1/van-01/down/cmd", build(hq_keys.sign, "van-01", "cmd", 1, [command("rot-1", "rotate_key", time.time() + 600, **args)], 1))
    wait_until(lambda: (bundle.directory / "node_sign.key").read_bytes() == (tmp_path / "new" / "node_sign.key").read_bytes(), 30,
               what="the van to apply the rotation")

    status, doc = api.request("POST", "/api/v1/applications", {"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776",
                                                               "service_code": "RES-01"})
    assert status == 201, doc
    wait_until(lambda: hq.get("/api/v1/stats")["records"] == 1, 60, what="the record at HQ under the new key")
    record = json.loads((hq_keys.directory / "nodes" / "van-01.json").read_text())
    assert record.get("rotated_at") and "next_sign_public" not in record

    # The old key is refused now: a message signed with it is rejected by HQ's ingest.
    rejected = hq.get("/api/v1/data-classes")["ingest"]["rejected"]
    publish(mosquitto, "mo/v1/van-01/up/evt", encode(Envelope("van-01", "evt", 900, (b'{"type":"x"}',), 900), old_sign))
    wait_until(lambda: hq.get("/api/v1/data-classes")["ingest"]["rejected"] > rejected, 30, what="HQ to refuse the old key")
