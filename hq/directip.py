"""Iridium DirectIP at HQ: the MO receiver (gateway → HQ) and the MT client (HQ → gateway).

Transport only: MO payloads go to a callback (HQ passes them to the same
``Ingest.handle`` as MQTT traffic, with channel "sbd"); the sender is known
from the payload's signature, the IMEI is only informative.

Message layout (big-endian): protocol revision (1 byte, = 1), overall length
(2 bytes, everything after this field), then information elements, each
IEI (1 byte), length (2 bytes), data.

* MO header 0x01 (28 bytes): CDR reference u32, IMEI 15 ASCII, session
  status u8, MOMSN u16, MTMSN u16, time of session u32 (Unix seconds).
* MO payload 0x02: the bytes the van sent.  MO location 0x03: ignored.
* MO confirmation 0x05 (1 byte, 1 = received), sent back by this receiver.
* MT header 0x41 (21 bytes): client message id u32, IMEI, disposition flags u16.
* MT payload 0x42.  MT confirmation 0x44 (25 bytes): client message id u32,
  IMEI, auto id reference u32, MT message status i16 (>0 queue position,
  <0 error).
"""

from __future__ import annotations

import asyncio
import logging
import ipaddress
import struct
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from kit.clock import Clock, SystemClock

from .errors import HQError

log = logging.getLogger(__name__)

PROTOCOL_REVISION = 1
MO_HEADER, MO_PAYLOAD, MO_LOCATION, MO_CONFIRMATION = 0x01, 0x02, 0x03, 0x05
MT_HEADER, MT_PAYLOAD, MT_CONFIRMATION = 0x41, 0x42, 0x44
_MO_HEADER = struct.Struct(">I15sBHHI")
_MT_HEADER = struct.Struct(">I15sH")
_MT_CONF = struct.Struct(">I15sIh")
MAX_MESSAGE = 4096  # far above any SBD message: a larger claim is garbage


class DirectIpError(HQError):
    """A DirectIP message that does not parse."""


@dataclass(frozen=True)
class MoMessage:
    cdr: int
    imei: str
    session_status: int
    momsn: int
    mtmsn: int
    session_time: int
    payload: bytes


def parse_ies(body: bytes) -> dict[int, bytes]:
    ies: dict[int, bytes] = {}
    pos = 0
    while pos < len(body):
        if pos + 3 > len(body):
            raise DirectIpError("truncated information element header")
        iei, n = body[pos], int.from_bytes(body[pos + 1 : pos + 3], "big")
        if pos + 3 + n > len(body):
            raise DirectIpError(f"information element 0x{iei:02x} runs past the message")
        ies[iei] = body[pos + 3 : pos + 3 + n]
        pos += 3 + n
    return ies


def ie(iei: int, data: bytes) -> bytes:
    return bytes([iei]) + len(data).to_bytes(2, "big") + data


def message(*ies: bytes) -> bytes:
    body = b"".join(ies)
    return bytes([PROTOCOL_REVISION]) + len(body).to_bytes(2, "big") + body


def parse_mo(body: bytes) -> MoMessage:
    ies = parse_ies(body)
    if MO_HEADER not in ies or len(ies[MO_HEADER]) != _MO_HEADER.size:
        raise DirectIpError("MO message without a valid header")
    cdr, imei, status, momsn, mtmsn, t = _MO_HEADER.unpack(ies[MO_HEADER])
    return MoMessage(cdr, imei.decode("ascii", errors="replace"), status, momsn, mtmsn, t, ies.get(MO_PAYLOAD, b""))


async def read_message(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(3)
    if head[0] != PROTOCOL_REVISION:
        raise DirectIpError(f"unsupported DirectIP protocol revision {head[0]}")
    n = int.from_bytes(head[1:3], "big")
    if n > MAX_MESSAGE:
        raise DirectIpError(f"message claims {n} bytes")
    return await reader.readexactly(n)


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    # An IPv4 gateway seen through a dual-stack socket arrives as ::ffff:a.b.c.d
    return addr.ipv4_mapped or addr if isinstance(addr, ipaddress.IPv6Address) else addr


class DirectIpReceiver:
    """``async with DirectIpReceiver(on_mo, port=10800):`` — one MO message per TCP connection.

    ``gateways``: the only peer addresses served (Iridium's gateways); anyone
    else is closed unanswered, counted, and logged once per address per
    ``reject_log_interval`` so that a scan cannot flood the log.  None: any
    peer (tests of the message format).
    """

    def __init__(self, on_mo: Callable[[MoMessage], Awaitable[None]], host: str = "0.0.0.0", port: int = 10800, timeout: float = 30.0,
                 gateways: Collection[str] | None = None, reject_log_interval: float = 3600.0, clock: Clock | None = None) -> None:
        self.on_mo = on_mo
        self.host, self.port = host, port
        self.timeout = timeout
        self.received = 0
        self.rejected = 0
        self.refused_peers = 0  # connections from addresses not in ``gateways``
        self.gateways = None if gateways is None else {a for a in (_address(g) for g in gateways) if a is not None}
        self.reject_log_interval = reject_log_interval
        self.clock = clock or SystemClock()
        self._logged: dict[str, float] = {}  # address -> when its refusal was last logged (monotonic)
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> DirectIpReceiver:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("DirectIP MO receiver on %s:%d", self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _log_refusal(self, peer: str, what: str, *args: object) -> None:
        now = self.clock.monotonic()
        last = self._logged.get(peer)
        if last is not None and now - last < self.reject_log_interval:
            return
        if len(self._logged) > 10_000:
            # bounded memory under a scan from many addresses: forget the old entries
            self._logged = {p: t for p, t in self._logged.items() if now - t < self.reject_log_interval}
        self._logged[peer] = now
        log.warning(what + " (logged once per %.0f s per address)", *args, self.reject_log_interval)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else "?"
        if self.gateways is not None and _address(peer) not in self.gateways:
            self.refused_peers += 1
            self._log_refusal(peer, "DirectIP connection from %s refused: not a configured gateway", peer)
            writer.transport.abort()  # no answer at all: nothing to learn for a scanner
            return
        try:
            body = await asyncio.wait_for(read_message(reader), self.timeout)
            mo = parse_mo(body)
            await self.on_mo(mo)
            self.received += 1
            writer.write(message(ie(MO_CONFIRMATION, b"\x01")))
            await writer.drain()
        except (TimeoutError, DirectIpError, asyncio.IncompleteReadError, ConnectionError) as exc:
            self.rejected += 1
            self._log_refusal(peer, "DirectIP MO from %s refused: %s", peer, exc)
        finally:
            writer.close()


@dataclass(frozen=True)
class MtConfirmation:
    client_id: int
    imei: str
    auto_id: int
    status: int  # > 0 position in the queue; 0 no payload; < 0 error

    @property
    def ok(self) -> bool:
        return self.status > 0


async def send_mt(host: str, port: int, imei: str, payload: bytes, client_id: int, timeout: float = 30.0) -> MtConfirmation:
    """Queue one MT message for a modem at the Iridium gateway."""
    if len(imei) != 15 or not imei.isdigit():
        raise DirectIpError("IMEI must be 15 digits")
    msg = message(ie(MT_HEADER, _MT_HEADER.pack(client_id, imei.encode(), 0)), ie(MT_PAYLOAD, payload))
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError) as exc:
        raise DirectIpError(f"cannot reach the DirectIP gateway {host}:{port}: {exc}") from exc
    try:
        writer.write(msg)
        await writer.drain()
        ies = parse_ies(await asyncio.wait_for(read_message(reader), timeout))
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
        raise DirectIpError(f"no MT confirmation from {host}:{port}: {exc}") from exc
    finally:
        writer.close()
    conf = ies.get(MT_CONFIRMATION)
    if conf is None or len(conf) != _MT_CONF.size:
        raise DirectIpError("MT confirmation missing or malformed")
    cid, im, auto, status = _MT_CONF.unpack(conf)
    return MtConfirmation(cid, im.decode("ascii", errors="replace"), auto, status)
