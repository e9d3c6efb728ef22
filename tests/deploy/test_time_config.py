"""The shipped time configuration (deploy/chrony.conf, deploy/gpsd.default) against the real programs."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from firmware_sim.gps_pty import NmeaPty, gpsd_binary
from firmware_sim.route import Route
from tests.conftest import REPO, free_port
from tests.deploy.test_unit_files import unit

DEPLOY = REPO / "deploy"
CHRONYD = shutil.which("chronyd") or ("/usr/sbin/chronyd" if Path("/usr/sbin/chronyd").exists() else None)


def chrony_parse(conf: Path) -> subprocess.CompletedProcess[str]:
    """``chronyd -p`` parses the file as the daemon would and prints it back; a bad directive or option exits 1."""
    if CHRONYD is None:
        pytest.skip("chrony is not installed (bin/setup --test installs it)")
    return subprocess.run([CHRONYD, "-p", "-f", str(conf)], capture_output=True, text=True, timeout=30)


def directives(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("#", "!", ";", "%"))]


def test_chronyd_accepts_the_shipped_config() -> None:
    r = chrony_parse(DEPLOY / "chrony.conf")
    assert r.returncode == 0, r.stderr
    parsed = directives(r.stdout)
    names = [d[0] for d in parsed]
    refclocks = [d for d in parsed if d[0] == "refclock"]
    # gpsd's SHM 0 (NMEA time) is a selectable source: the van may have no network at all
    assert any(d[1:3] == ["SHM", "0"] and "noselect" not in d for d in refclocks), refclocks
    assert any(d[1:3] == ["SHM", "1"] and "lock" in d for d in refclocks), refclocks  # PPS locked to the GPS seconds
    makestep = next(d for d in parsed if d[0] == "makestep")
    assert float(makestep[1]) <= 1.0 and int(makestep[2]) == -1  # step at any time: the sky may come hours after boot
    # no RTC to sync; never serve an unsynchronised clock as time
    assert "rtcsync" not in names and "rtcfile" not in names and "local" not in names


def test_a_broken_config_is_refused(tmp_path: Path) -> None:
    """The check above can fail: chronyd refuses a mistyped refclock option."""
    bad = tmp_path / "chrony.conf"
    bad.write_text((DEPLOY / "chrony.conf").read_text().replace("refid GPS precision", "refid GPS precission", 1))
    r = chrony_parse(bad)
    assert r.returncode != 0 and "Invalid refclock option" in r.stderr


def test_the_node_never_sets_the_clock() -> None:
    u = unit("mobile-office-node.service")
    assert u["ProtectClock"] == "yes"  # chrony owns the clock
    assert "time-sync.target" in u["After"]


def gpsd_options() -> list[str]:
    env = unit("gpsd.default")
    return shlex.split(env["GPSD_OPTIONS"].strip('"'))


def test_gpsd_reads_the_receiver_without_clients() -> None:
    assert "-n" in gpsd_options()  # chrony's SHM refclock gets time with no gpsd client connected


async def _first_tpv_with_time(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b'?WATCH={"enable":true,"json":true}\n')
        await writer.drain()
        while True:
            line = (await reader.readline()).decode()
            if not line:
                raise AssertionError("gpsd closed the connection")
            if '"class":"TPV"' in line and '"time"' in line:
                return line
    finally:
        writer.close()


async def test_gpsd_starts_with_the_shipped_options_and_serves_time() -> None:
    binary = gpsd_binary()
    if binary is None:
        pytest.skip("gpsd is not installed")
    port = free_port()
    async with NmeaPty(Route.from_trip("TRIP-NORTH"), speedup=1.0, period=0.2) as pty:
        proc = subprocess.Popen([binary, "-N", *gpsd_options(), "-S", str(port), pty.device],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            for _ in range(300):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                await asyncio.sleep(0.1)
            tpv = await asyncio.wait_for(_first_tpv_with_time(port), 60)
            assert '"mode":' in tpv
        finally:
            proc.terminate()
            proc.wait(10)
