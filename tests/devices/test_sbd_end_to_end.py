"""No broker at all: the van's heartbeat reaches HQ by satellite (modem emulator → DirectIP)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from firmware_sim.gateway import SatelliteGateway
from firmware_sim.modem import ModemSim, ModemSimConfig
from provisioning.keys import NodeBundle
from sync import sbdbeat
from tests.conftest import Proc, free_port, http_ok, mobile_office_cmd, spawn
from tests.helpers import ApiClient, hq_token

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
        hq_api = ApiClient(f"http://127.0.0.1:{hq_port}", await asyncio.to_thread(hq_token, hq_dir))

        async def hq_has_it() -> bool:
            nonlocal fleet
            if not await asyncio.to_thread(http_ok, f"http://127.0.0.1:{hq_port}/healthz"):
                return False
            fleet = await asyncio.to_thread(hq_api.get, "/api/v1/fleet")
            return bool(fleet) and fleet[0].get("link") == "sbd"

        await until(hq_has_it, "HQ to hold a heartbeat that came by satellite", node)
        assert fleet[0]["node_id"] == "van-01" and fleet[0]["link"] == "sbd"
        # HQ stores the message before it answers the gateway, and the modem reports the session to the node after
        # that: each is waited for, not assumed to have happened in that order (it failed on a busy machine).
        await until(lambda: _now(gw.confirmed >= 1), "the gateway to receive HQ's confirmation", node)
        # the compact heartbeat: one 50-byte credit each, keyed from the bundle's enrolment keys
        assert gw.delivered and all(len(p) == sbdbeat.SIZE <= 50 for _, _, p in gw.delivered)

        async def node_counted_it() -> bool:
            status = await asyncio.to_thread(ApiClient(f"http://127.0.0.1:{node_port}").get, "/api/v1/status")
            return bool(status["link"]["mqtt"] == "down" and status["link"]["satellite"]["sessions_ok"] >= 1)

        await until(node_counted_it, "the node to count a successful SBD session", node)
        node.terminate()


async def _now(value: bool) -> bool:
    return value


async def until(check: Callable[[], Awaitable[bool]], what: str, node: Proc, timeout: float = 120.0) -> None:
    """Poll an async condition; the timeout only bounds a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except (OSError, AssertionError):
            pass  # not serving yet
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; node log: {node.output()[-2000:]}")
