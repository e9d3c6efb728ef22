"""HQ's DirectIP receiver serves only the configured gateway addresses and logs a refused address once per period."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from hq.directip import MO_CONFIRMATION, MO_HEADER, MO_PAYLOAD, DirectIpReceiver, MoMessage, ie, message, parse_ies, read_message
from kit.clock import ManualClock

MO = message(ie(MO_HEADER, struct.pack(">I15sBHHI", 1, b"300434063839690", 0, 1, 0, 1_780_000_000)), ie(MO_PAYLOAD, b"signed"))


async def send(port: int) -> bytes:
    """One MO message as the gateway sends it; the receiver's answer (b"" if it hung up without one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(MO)
        await writer.drain()
        try:
            return await read_message(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return b""
    finally:
        writer.close()


async def test_a_configured_gateway_is_served() -> None:
    got: list[MoMessage] = []

    async def on_mo(mo: MoMessage) -> None:
        got.append(mo)

    async with DirectIpReceiver(on_mo, host="127.0.0.1", port=0, gateways=["192.0.2.7", "127.0.0.1"]) as rx:
        answer = await send(rx.port)
    assert parse_ies(answer)[MO_CONFIRMATION] == b"\x01"
    assert [m.payload for m in got] == [b"signed"] and rx.refused_peers == 0


async def test_other_addresses_are_refused_and_logged_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    got: list[MoMessage] = []

    async def on_mo(mo: MoMessage) -> None:
        got.append(mo)

    clock = ManualClock()
    caplog.set_level(logging.WARNING, logger="hq.directip")
    async with DirectIpReceiver(on_mo, host="127.0.0.1", port=0, gateways=["192.0.2.7"], reject_log_interval=600.0, clock=clock) as rx:
        for _ in range(20):
            assert await send(rx.port) == b""  # closed without an answer
        refusals = [r for r in caplog.records if "not a configured gateway" in r.getMessage()]
        assert len(refusals) == 1 and "127.0.0.1" in refusals[0].getMessage()
        clock.advance(601.0)
        assert await send(rx.port) == b""
        refusals = [r for r in caplog.records if "not a configured gateway" in r.getMessage()]
        assert len(refusals) == 2  # the next period logs it again
    assert got == [] and rx.refused_peers == 21
