"""Link manager: MQTT while the broker answers, Iridium SBD when it has not for a while.

The decision runs on injected time (``step()`` is one tick), so a test
drives it with a ManualClock.  When MQTT has been down for
``sbd_after`` seconds and the modem does not report too little signal
(bars >= ``min_signal``, or unknown: signal strength is advisory, some
firmwares answer ERROR to AT+CSQ), every ``sbd_interval`` it sends ONE SBD message: the compact
42-byte heartbeat of ``sbdbeat`` (latest position, time quality, backlog
per class, a truncated MAC under a key shared with HQ at enrolment), one
50-byte credit.  A node built without HQ's sealing key falls back to a
signed envelope v1 on the ``status`` stream (three credits).  HQ's DirectIP
receiver hands the bytes to ``Ingest.handle(payload, channel="sbd")``.  MT
messages received in the same session are downlink envelopes (urgent
commands) and go to ``on_downlink``.  A failed session is tried again
after a backoff that doubles from ``retry_min`` up to ``sbd_interval``.

The heartbeats travel on their own sequence (``status`` stream, numbered
by this object and persisted in the outbox tables' counter) so HQ's
idempotency holds if the modem resends one, and a replay is a duplicate.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from . import sbdbeat
from .clock import HLC, Clock
from .envelope import Envelope, encode
from .errors import SyncError
from .sbdbeat import Heartbeat

if TYPE_CHECKING:
    from .uplink import Uplink

log = logging.getLogger(__name__)

SBD_MO_MAX = 340
HEARTBEAT_V1 = 1
# version, flags, GPS time (u32 s), lat, lon (i32 1e-7 deg), speed (u16 cm/s), course (u16 0.01 deg)
_HB = struct.Struct(">BBIiiHH")
_HB_DEPTH = struct.Struct(">BI")  # stream code, pending items


class SbdResultLike(Protocol):
    @property
    def ok(self) -> bool: ...


class SbdModemLike(Protocol):
    """What the link manager needs from devices.modem.SbdModem (already entered)."""

    async def send(self, payload: bytes) -> SbdResultLike: ...

    async def receive(self) -> list[bytes]: ...

    async def signal(self) -> int: ...


STREAM_CODES = {"status": 1, "pos": 2, "rec": 3, "audit": 4, "evt": 5, "blob": 6}
_CODE_NAMES = {v: k for k, v in STREAM_CODES.items()}


def pack_heartbeat(hb: Heartbeat) -> bytes:
    flags = (1 if hb.trusted_time else 0) | (2 if hb.has_fix else 0)
    out = _HB.pack(HEARTBEAT_V1, flags, int(hb.time) & 0xFFFFFFFF, round(hb.lat * 1e7), round(hb.lon * 1e7),
                   max(0, min(0xFFFF, round(hb.speed * 100))), round((hb.course % 360) * 100) % 36000)
    for name, n in sorted(hb.depth.items()):
        if name in STREAM_CODES and n:
            out += _HB_DEPTH.pack(STREAM_CODES[name], min(n, 0xFFFFFFFF))
    return out


def unpack_heartbeat(item: bytes) -> Heartbeat:
    if len(item) < _HB.size or item[0] != HEARTBEAT_V1 or (len(item) - _HB.size) % _HB_DEPTH.size:
        raise SyncError("not a heartbeat v1")
    _v, flags, t, lat, lon, speed, course = _HB.unpack_from(item)
    depth = {}
    for off in range(_HB.size, len(item), _HB_DEPTH.size):
        code, n = _HB_DEPTH.unpack_from(item, off)
        depth[_CODE_NAMES.get(code, str(code))] = n
    return Heartbeat(float(t), lat / 1e7, lon / 1e7, speed / 100, course / 100, bool(flags & 1), bool(flags & 2), depth)


class LinkManager:
    def __init__(
        self,
        node_id: str,
        key: Ed25519PrivateKey,
        clock: Clock,
        modem: SbdModemLike | None,
        mqtt_up: Callable[[], bool],
        heartbeat: Callable[[], Awaitable[Heartbeat]],
        next_seq: Callable[[], Awaitable[int]],
        on_downlink: Callable[[bytes], Awaitable[None]] | None = None,
        sbd_after: float = 300.0,
        sbd_interval: float = 900.0,
        min_signal: int = 2,
        mac_key: bytes | None = None,
        instance: Callable[[], str] = lambda: "",
        retry_min: float = 15.0,
    ) -> None:
        self.node_id = node_id
        self.mac_key = mac_key  # the compact heartbeat's key (sbdbeat); None: a signed envelope
        self.instance = instance  # the node database's instance id, as the uplink read it
        self._key = key
        self.clock = clock
        self.modem = modem
        self.mqtt_up = mqtt_up
        self.heartbeat = heartbeat
        self.next_seq = next_seq
        self.on_downlink = on_downlink
        self.sbd_after = sbd_after
        self.sbd_interval = sbd_interval
        self.min_signal = min_signal
        self.retry_min = retry_min
        self._backoff = retry_min
        self._retry_at: float | None = None
        self.hlc = HLC(clock)
        self._down_since: float | None = None
        self._last_sbd: float | None = None
        self.mode = "mqtt"
        self.sbd_sent = 0
        self.sbd_failed = 0

    def encode_heartbeat(self, hb: Heartbeat, seq: int) -> bytes:
        if self.mac_key is not None:
            return sbdbeat.pack(self.node_id, seq, hb, self.mac_key, self.instance())
        env = Envelope(self.node_id, "status", seq, (pack_heartbeat(hb),), self.hlc.tick(), trusted_time=hb.trusted_time,
                       instance=self.instance())
        data = encode(env, self._key, compress=False)
        if len(data) > SBD_MO_MAX:
            raise SyncError(f"heartbeat is {len(data)} bytes, over the SBD limit")
        return data

    async def step(self) -> str:
        """One decision; returns what it did: ``mqtt``, ``waiting``, ``no_signal``, ``sent``, ``failed``, ``backoff``, ``idle``."""
        now = self.clock.monotonic()
        if self.mqtt_up():
            self._down_since = None
            self._retry_at, self._backoff = None, self.retry_min
            self.mode = "mqtt"
            return "mqtt"
        if self._down_since is None:
            self._down_since = now
        if now - self._down_since < self.sbd_after or self.modem is None:
            self.mode = "waiting"
            return "waiting"
        self.mode = "sbd"
        if self._last_sbd is not None and now - self._last_sbd < self.sbd_interval:
            return "idle"
        if self._retry_at is not None and now < self._retry_at:
            return "backoff"
        bars: int | None
        try:
            bars = await self.modem.signal()
        except Exception as exc:  # noqa: BLE001 - the modem's own error root; a flaky modem must not stop the loop
            # Advisory only: ERROR or no answer to AT+CSQ means "unknown", not "none"; the session is tried.
            log.info("modem signal unknown (%s); trying the session anyway", type(exc).__name__)
            bars = None
        if bars is not None and bars < self.min_signal:
            return "no_signal"
        data = self.encode_heartbeat(await self.heartbeat(), await self.next_seq())
        try:
            result = await self.modem.send(data)
        except Exception as exc:  # noqa: BLE001 - a failed send is counted and retried, never fatal to the loop
            log.warning("SBD send failed: %s", type(exc).__name__)
            return self._failed(now)
        if not result.ok:
            return self._failed(now)
        self._last_sbd = now
        self._retry_at, self._backoff = None, self.retry_min
        self.sbd_sent += 1
        if self.on_downlink is not None:
            try:
                for mt in await self.modem.receive():
                    await self.on_downlink(mt)
            except Exception as exc:  # noqa: BLE001 - the MO was sent: a receive failure must not turn it into a failed send
                log.warning("SBD receive failed: %s", type(exc).__name__)
        return "sent"

    def _failed(self, now: float) -> str:
        self.sbd_failed += 1
        self._retry_at = now + min(self._backoff, self.sbd_interval)
        self._backoff = min(self._backoff * 2, self.sbd_interval)
        return "failed"

    async def run(self, tick: float = 5.0) -> None:
        while True:
            await self.step()
            await self.clock.sleep(tick)


def for_uplink(uplink: Uplink, modem: SbdModemLike | None, sbd_after: float = 300.0, sbd_interval: float = 900.0,
               min_signal: int = 2, hq_seal_public: X25519PublicKey | None = None) -> LinkManager:
    """The node's link manager over its MQTT uplink: what edge constructs with the (entered) modem."""

    async def heartbeat() -> Heartbeat:
        doc = await uplink.status_document()
        pos = doc.get("pos")
        depth = doc.get("depth")
        p: dict[str, Any] = pos if isinstance(pos, dict) else {}
        return Heartbeat(
            float(p.get("t") or uplink.clock.now()), float(p.get("lat") or 0.0), float(p.get("lon") or 0.0),
            float(p.get("speed") or 0.0), float(p.get("course") or 0.0), bool(doc.get("trusted_time")), bool(p),
            {str(k): int(v) for k, v in depth.items()} if isinstance(depth, dict) else {},
        )

    return LinkManager(uplink.node_id, uplink.signing_key, uplink.clock, modem, lambda: uplink.status.mqtt_up, heartbeat,
                       uplink.sbd_seq, uplink.handle_sbd_downlink, sbd_after, sbd_interval, min_signal,
                       sbdbeat.node_mac_key(uplink.node_id, uplink.signing_key, hq_seal_public) if hq_seal_public else None,
                       lambda: uplink.instance)
