"""No broker at all: the van's heartbeat reaches HQ by satellite (modem emulator → DirectIP)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from firmware_sim.gateway import SatelliteGateway
from firmware_sim.modem import ModemSim, ModemSimConfig
from provisioning.keys import NodeBundle
from sync import sbdbeat
from tests.conftest import Proc, free_port, http_ok, mobile_office_cmd, spawn
from tests.helpers import ApiClient

pytestmark = pytest.mark.functional


async def test_heartbeat_by_satellite_when_mqtt_is_down(tmp_path: Path, bundle: NodeBundle, procs: list[Proc]) -> None:
    hq_dir = bundle.directory.parent / "hq"
    dead_broker = f"mqtt://127.0.0.1:{free_port()}"
    hq_port, directip, node_port = free_port(), free_port(), free_port()
    hq = spawn(mobile_office_cmd("hq", "--hq-data-dir", str(hq_dir), "--hq-broker", dead_broker, "--hq-host", "127.0.0.1",
                                 "--hq-port", str(hq_port), "--directip-port", str(directip)), tmp_path / "hq.log")
    procs.append(hq)
    async with SatelliteGateway(hq_port=directip) as gw, ModemSim(ModemSimConfig(), gw) as modem:
        node = spawn(mobile_office_cmd("node", "--bundle", str(bundle.directory), "--data-dir", str(tmp_path / "node"),
                                       "--broker", dead_broker, "--gpsd", f"127.0.0.1:{free_port()}", "--http-host", "127.0.0.1",
                                       "--http-port", str(node_port), "--modem", modem.device, "--sbd-after", "1", "--sbd-interval", "2"),
                     tmp_path / "node.log")
        procs.append(node)
        fleet: list[dict[str, object]] = []
        for _ in range(300):
            if http_ok(f"http://127.0.0.1:{hq_port}/healthz"):
                fleet = await asyncio.to_thread(ApiClient(f"http://127.0.0.1:{hq_port}").get, "/api/v1/fleet")
                if fleet and fleet[0].get("link") == "sbd":
                    break
            await asyncio.sleep(0.2)
        assert fleet and fleet[0]["node_id"] == "van-01" and fleet[0]["link"] == "sbd", (fleet, node.output()[-2000:])
        # the compact heartbeat: one 50-byte credit each, keyed from the bundle's enrolment keys
        assert gw.delivered and all(len(p) == sbdbeat.SIZE <= 50 for _, _, p in gw.delivered)
        assert gw.confirmed >= 1
        status = await asyncio.to_thread(ApiClient(f"http://127.0.0.1:{node_port}").get, "/api/v1/status")
        assert status["link"]["mqtt"] == "down" and status["link"]["satellite"]["sessions_ok"] >= 1
        node.terminate()
