"""The AT line parser and the +SBDIX parser never crash or hang, whatever bytes arrive."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.at import AtChannel
from devices.errors import ModemError
from devices.modem import SbdixResult
from firmware_sim.nmea import ReceiverState, checksum, epoch
from firmware_sim.route import Route


@given(st.lists(st.binary(max_size=64), max_size=20))
@settings(max_examples=200, deadline=None)
def test_at_channel_feeding_any_bytes(chunks: list[bytes]) -> None:
    async def run() -> list[str]:
        ch = AtChannel("/dev/null")
        urcs: list[str] = []
        ch.urc_handlers.append(urcs.append)
        for c in chunks:
            ch._feed(c)  # idle: lines are parsed, URCs dispatched, the rest dropped
        ch._feed(b"\r\nSBDRING\r\n")
        return urcs

    urcs = asyncio.run(run())
    assert urcs and urcs[-1] == "SBDRING"


@given(st.binary(max_size=200))
@settings(max_examples=200, deadline=None)
def test_read_line_under_noise_then_ok(noise: bytes) -> None:
    async def run() -> list[str]:
        ch = AtChannel("/dev/null")
        ch._busy = True
        # noise may be anything except a final result code of its own
        ch._feed(noise.replace(b"OK", b"").replace(b"ERROR", b"") + b"\r\n+CSQ:3\r\nOK\r\n")
        deadline = asyncio.get_running_loop().time() + 1
        return await ch.collect(deadline, "AT+CSQ")

    lines = asyncio.run(run())
    assert lines[-1] == "+CSQ:3"


@given(st.text(max_size=80))
def test_sbdix_parser_rejects_or_parses(line: str) -> None:
    try:
        r = SbdixResult.parse(line)
    except ModemError:
        return
    assert r.mo_status >= 0


def test_sbdix_all_six_fields() -> None:
    r = SbdixResult.parse("+SBDIX: 32, 7, 2, 3, 0, 1")
    assert (r.mo_status, r.momsn, r.mt_status, r.mtmsn, r.mt_length, r.mt_queued) == (32, 7, 2, 3, 0, 1)
    assert not r.mo_ok


@given(st.floats(0, 20000), st.booleans())
@settings(max_examples=50, deadline=None)
def test_every_generated_nmea_sentence_has_a_valid_checksum(t: float, fix: bool) -> None:
    import random

    out = epoch(1_780_000_000 + t, Route.from_trip("TRIP-NORTH").at(t), ReceiverState(fix=fix), random.Random(1))
    lines = [ln for ln in out.split(b"\r\n") if ln]
    assert {ln[3:6] for ln in lines} >= {b"GGA", b"RMC", b"GSA", b"GSV"}
    for ln in lines:
        body, cs = ln[1:].split(b"*")
        assert checksum(body.decode()) == cs.decode()
        assert ln.startswith(b"$") and len(ln) <= 82  # NMEA 0183 sentence limit


@pytest.mark.parametrize("payload", [b"", b"\x00", bytes(range(256)) + bytes(84)])
def test_checksum_definition(payload: bytes) -> None:
    from devices.modem import sbd_checksum

    assert int.from_bytes(sbd_checksum(payload), "big") == sum(payload) % 65536


def test_sky_signal_model() -> None:
    from firmware_sim.modem import SkySignal

    t = [0.0]
    sky = SkySignal(lambda: t[0], blocked=[(100, 200)])
    bars = [sky() for _ in range(200)]
    assert all(1 <= b <= 5 for b in bars) and len(set(bars)) > 1  # fades, never 0 under open sky
    t[0] = 150
    assert sky() == 0  # under the depot roof


def test_receiver_jitter_is_metres_not_kilometres() -> None:
    import random

    from firmware_sim.gps_pty import jittered
    from firmware_sim.route import haversine

    pos = Route.from_trip("TRIP-NORTH").at(0)
    rnd = random.Random(5)
    d = [haversine(pos.lat, pos.lon, j.lat, j.lon) for j in (jittered(pos, 2.5, rnd) for _ in range(500))]
    assert 0.5 < sum(d) / len(d) < 8 and max(d) < 30
