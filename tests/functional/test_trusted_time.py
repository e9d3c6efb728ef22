"""Trusted time against real components: a node process under libfaketime, real gpsd on a simulated receiver, Mosquitto, HQ.

* the van's clock days behind, GPS serving the true time: records made before the fix are marked and
  numbered without a date; once the fix arrives new numbers carry the true date and HQ corrects the earlier ones;
* an old receiver after a week-number rollover (gpsd itself on a stale clock, so it does not fix the year):
  positions kept, their time not trusted, HQ's fleet never shows the receiver's year;
* a cold boot with no GPS at all: intake works, records are marked, HQ shows their time as unconfirmed.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from firmware_sim.gps_pty import NmeaPty, gpsd_binary, real_gpsd
from firmware_sim.route import Route
from kit.timesource import WEEK_ROLLOVER_S, boot_id
from provisioning.keys import HQKeys, NodeBundle
from sync.downlink import build, command
from sync.poscodec import boot32, unpack_position
from tests.conftest import ADMIN_PASSWORD, Broker, Proc, free_port, http_ok, mobile_office_cmd, spawn
from tests.functional.test_hq_commands import publish
from tests.helpers import ApiClient, hq_token

pytestmark = pytest.mark.functional

DAYS_BEHIND = 3
# libfaketime shifts the wall clock only: the monotonic clock stays the kernel's, as on a real van
FAKETIME_ENV = {"DONT_FAKE_MONOTONIC": "1", "FAKETIME_DONT_RESET": "1"}


async def until(pred: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    """Poll without blocking the event loop (the simulated receiver writes from it); the deadline only bounds a hang."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = pred()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last!r})" if last else ""))


def need(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed (bin/setup --test installs it)")


@pytest.fixture
async def receiver() -> AsyncIterator[NmeaPty]:
    if gpsd_binary() is None:
        pytest.skip("gpsd is not installed")
    async with NmeaPty(Route.from_trip("TRIP-NORTH"), speedup=1, period=0.5) as pty:
        pty.fix_enabled = False  # the van starts in a garage
        yield pty


async def start_node(bundle: NodeBundle, data: Path, broker: Broker, gpsd_port: int, procs: list[Proc], log: Path,
                     faketime: str | None = None) -> ApiClient:
    port = free_port()
    cmd = mobile_office_cmd(
        "node", "--bundle", str(bundle.directory), "--data-dir", str(data), "--broker", broker.url,
        "--gpsd", f"127.0.0.1:{gpsd_port}", "--http-host", "127.0.0.1", "--http-port", str(port), "--ack-timeout", "2",
        "--position-interval", "1",
        # this container's kernel may be synchronised while the node's (faked) clock is not: only GPS counts here
        "--trust-kernel-clock", "off",
    )
    if faketime is not None:
        cmd = ["faketime", "-f", faketime, *cmd]
    procs.append(spawn(cmd, log, env=FAKETIME_ENV if faketime else None))
    await until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, what="node to serve")
    api = ApiClient(f"http://127.0.0.1:{port}")
    api.login("admin", ADMIN_PASSWORD)
    return api


async def start_hq(hq_dir: Path, broker: Broker, procs: list[Proc], log: Path) -> ApiClient:
    port = free_port()
    procs.append(spawn(mobile_office_cmd("hq", "--hq-data-dir", str(hq_dir), "--hq-broker", broker.url, "--hq-host", "127.0.0.1",
                                         "--hq-port", str(port)), log))
    await until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, what="HQ to serve")
    return ApiClient(f"http://127.0.0.1:{port}", await asyncio.to_thread(hq_token, hq_dir))  # HQ's API needs a token


def submit(api: ApiClient, surname: str, rnokpp: str = "1759013776") -> dict[str, str]:
    status, doc = api.request("POST", "/api/v1/applications", {"surname": surname, "given_name": "Тарас", "rnokpp": rnokpp,
                                                             "service_code": "RES-01"})
    assert status == 201, doc
    return dict(doc)


def hq_records(hq_dir: Path) -> dict[str, tuple[float, int | None, float | None]]:
    """record id -> (created as HQ shows it, time_trusted, the van's original stamp)."""
    db = sqlite3.connect(hq_dir / "hq.db")
    try:
        return {r[0]: (float(r[1]), r[2], r[3]) for r in db.execute("SELECT record_id, created, time_trusted, created_node FROM records")}
    finally:
        db.close()


def audit_items(hq_dir: Path) -> int:
    db = sqlite3.connect(hq_dir / "hq.db")
    try:
        return int(db.execute("SELECT COUNT(*) FROM items WHERE stream = 'audit'").fetchone()[0])
    finally:
        db.close()


def today_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d")


def node_rows(data: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(f"file:{data / 'node.db'}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in db.execute(sql)]
    finally:
        db.close()


async def test_clock_days_behind_gets_true_time_from_gps_and_hq_corrects_earlier_records(
    tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker, procs: list[Proc], receiver: NmeaPty,
) -> None:
    need("faketime")
    hq_dir = bundle.directory.parent / "hq"
    hq = await start_hq(hq_dir, mosquitto, procs, tmp_path / "hq.log")
    gpsd_port = free_port()
    async with real_gpsd(receiver.device, gpsd_port):
        node = await start_node(bundle, tmp_path / "node", mosquitto, gpsd_port, procs, tmp_path / "node.log",
                                faketime=f"-{DAYS_BEHIND}d")
        # no sky yet: the node's own clock, days behind, and it knows it cannot vouch for it
        st = node.get("/api/v1/status")["time"]
        assert st["source"] == "unsynced" and st["trusted"] is False and st["offset"] is None
        early = submit(node, "Шевченко")
        assert "-U-" in early["number"] and today_utc() not in early["number"]
        # HQ's lock that expired an hour ago looks valid to a clock three days behind: it must wait, then expire
        await until(lambda: node.get("/api/v1/status")["link"]["mqtt"] == "up", 60, what="node on the broker")
        publish(mosquitto, "mo/v1/van-01/down/cmd", build(hq_keys.sign, "van-01", "cmd", 1, [command("stale", "lock", time.time() - 3600)], 1))
        await until(lambda: node_rows(tmp_path / "node", "SELECT id FROM downlink_deferred") == [("stale",)], 60, what="the command to wait")
        assert node.get("/api/v1/status")["store"]["locked"] is False

        receiver.fix_enabled = True  # out of the garage: GPS serves the true time
        st = await until(lambda: (s := node.get("/api/v1/status")["time"])["trusted"] and s, 90, what="trusted time from GPS")
        assert isinstance(st, dict) and st["source"] == "gps"
        assert abs(st["offset"] - DAYS_BEHIND * 86400) < 600  # the van's clock is three days behind
        late = submit(node, "Українка", "3184710691")  # the stale lock never ran: still logged in
        assert late["number"].split("-")[-2] == today_utc()  # the true date, not the van's clock's
        await until(lambda: node_rows(tmp_path / "node", "SELECT id, result FROM downlink_applied") == [("stale", "expired")], 60,
                    what="the command judged in trusted time")

        true_now = time.time()
        recs = await until(lambda: (r := hq_records(hq_dir)).get(early["id"], (0, 0))[1] == 1 and late["id"] in r and r, 90,
                           what="HQ to correct the early record")
        assert isinstance(recs, dict)
        created, trusted, original = recs[early["id"]]
        assert trusted == 1
        assert original is not None and abs(original - (true_now - DAYS_BEHIND * 86400)) < 600  # as the van stamped it
        assert abs(created - true_now) < 600  # corrected to the true time
        assert recs[late["id"]][1] is None and abs(recs[late["id"]][0] - true_now) < 600  # trusted from the start

        fleet = await until(lambda: (f := hq.get("/api/v1/fleet")) and f[0].get("position_time") and f, 60, what="a position at HQ")
        assert isinstance(fleet, list) and abs(fleet[0]["position_time"] - true_now) < 600
        # the audit chain, stamps inside its hashes, verifies at HQ: entries arrived and no break was found
        await until(lambda: hq.get("/api/v1/stats").get("audit_alerts") == 0 and audit_items(hq_dir) >= 2, 60, what="audit at HQ")
        assert hq.get("/api/v1/stats")["audit_alerts"] == 0


async def test_rollover_receiver_positions_kept_times_untrusted_and_never_shown(
    tmp_path: Path, bundle: NodeBundle, mosquitto: Broker, procs: list[Proc], receiver: NmeaPty,
) -> None:
    need("faketime")
    receiver.time_offset = -WEEK_ROLLOVER_S  # firmware that forgot a week-number rollover: 19.6 years ago
    receiver.fix_enabled = True
    hq_dir = bundle.directory.parent / "hq"
    hq = await start_hq(hq_dir, mosquitto, procs, tmp_path / "hq.log")
    gpsd_port = free_port()
    # gpsd fixes such a year itself when its own clock is right; a Pi that booted at 1970 has no such luck
    async with real_gpsd(receiver.device, gpsd_port, prefix=["faketime", "-f", "@1970-01-02 00:00:00"], env=FAKETIME_ENV):
        node = await start_node(bundle, tmp_path / "node", mosquitto, gpsd_port, procs, tmp_path / "node.log")
        st = await until(lambda: (s := node.get("/api/v1/status"))["gps"]["state"] == "fix" and s["time"]["gps_rejected"] and s,
                         90, what="the node to see the rollover date")
        assert isinstance(st, dict)
        assert st["gps"]["time"] is not None and datetime.fromtimestamp(st["gps"]["time"], timezone.utc).year < 2010  # what gpsd says
        assert st["time"] == {"source": "unsynced", "trusted": False, "offset": None, "gps_rejected": "impossible_date"}
        fleet = await until(lambda: (f := hq.get("/api/v1/fleet")) and f[0].get("lat") and f, 90, what="positions at HQ")
        assert isinstance(fleet, list)
        this_year = datetime.now(timezone.utc).year
        assert datetime.fromtimestamp(fleet[0]["position_time"], timezone.utc).year == this_year
        assert fleet[0]["position_time_trusted"] is False
        db = sqlite3.connect(hq_dir / "hq.db")
        try:
            items = [bytes(r[0]) for r in db.execute("SELECT payload FROM items WHERE node_id = 'van-01' AND stream = 'pos'")]
        finally:
            db.close()
        positions = [unpack_position(i) for i in items if i]
        assert positions and all(not p.trusted_time and datetime.fromtimestamp(p.time, timezone.utc).year == this_year for p in positions)
        assert all(abs(p.lat - 47.91) < 0.5 for p in positions)  # kept: the van is where it is
        assert all(p.boot == boot32(boot_id()) and p.mono is not None for p in positions)  # correctable by a later time fix
    node_log = (tmp_path / "node.log").read_text()
    assert node_log.count("rollover") == 1  # logged once, not once per fix


async def test_cold_boot_without_gps_intake_works_and_records_are_marked(
    tmp_path: Path, bundle: NodeBundle, mosquitto: Broker, procs: list[Proc],
) -> None:
    need("faketime")
    hq_dir = bundle.directory.parent / "hq"
    await start_hq(hq_dir, mosquitto, procs, tmp_path / "hq.log")
    # no gpsd at all, and a clock a week behind
    node = await start_node(bundle, tmp_path / "node", mosquitto, free_port(), procs, tmp_path / "node.log", faketime="-7d")
    saved = [submit(node, "Франко"), submit(node, "Франко")]
    numbers = [s["number"] for s in saved]
    assert len(set(numbers)) == 2 and all("-U-" in n for n in numbers)
    assert node.get("/api/v1/status")["time"]["source"] == "unsynced"
    recs = await until(lambda: (r := hq_records(hq_dir)) and all(s["id"] in r for s in saved) and r, 60, what="records at HQ")
    assert isinstance(recs, dict)
    assert all(recs[s["id"]][1] == 0 for s in saved)  # HQ holds them as unconfirmed
