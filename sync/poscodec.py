"""GPS positions: the canonical item and the delta-coded batch body.

A position item in the outbox (and in HQ's ``items`` table) is one of:

* v1, 16 bytes ``>dii``: GPS time (s), lat, lon in 1e-7 degrees (skeleton);
* v2, 21 bytes ``>diiHHB``: the same plus speed (cm/s), course (1/100 degree)
  and flags (bit0: time is GPS-disciplined, i.e. trusted);
* v3, 33 bytes ``>diiHHBdI``: v2 plus the node's monotonic time (s) and the
  first 32 bits of its boot id, for a position whose time is *not* trusted,
  so that HQ can correct it from the boot's time fix (docs/protocol.md#time).
  Rare (a receiver whose time is refused), so such batches go uncoded.

On the wire a batch of positions does not carry the items one by one.
``encode_batch`` writes them column by column (times, lats, lons, speeds,
courses, flags), each column as zigzag varints of the *second* difference
(the change in the step), so steady driving and standing still become
runs of zero bytes that zlib then squeezes to almost nothing.  Time is
quantised to 1 ms, which is all a 1 Hz receiver gives.  ``decode_batch``
restores byte-identical canonical items, so HQ's per-seq idempotency and
the signature over the batch both still hold.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import EnvelopeError

POS_V1 = struct.Struct(">dii")
POS_V2 = struct.Struct(">diiHHB")
POS_V3 = struct.Struct(">diiHHBdI")
FLAG_TRUSTED_TIME = 0x01
CODEC_V2 = 2


@dataclass(frozen=True)
class Position:
    time: float
    lat: float
    lon: float
    speed: float | None = None  # m/s
    course: float | None = None  # degrees true
    trusted_time: bool = False
    mono: float | None = None  # the node's monotonic time, with ``boot``: only for an untrusted time (v3)
    boot: int | None = None  # first 32 bits of the node's boot id


def boot32(boot_id: str) -> int:
    """The part of a boot id a v3 position carries."""
    return int(boot_id[:8], 16)


def pack_position(p: Position) -> bytes:
    speed = 0 if p.speed is None else max(0, min(0xFFFF, round(p.speed * 100)))
    course = 0 if p.course is None else round((p.course % 360.0) * 100) % 36000
    flags = FLAG_TRUSTED_TIME if p.trusted_time else 0
    if not p.trusted_time and p.mono is not None and p.boot is not None:
        return POS_V3.pack(round(p.time * 1000) / 1000, round(p.lat * 1e7), round(p.lon * 1e7), speed, course, flags, p.mono, p.boot)
    return POS_V2.pack(round(p.time * 1000) / 1000, round(p.lat * 1e7), round(p.lon * 1e7), speed, course, flags)


def unpack_position(item: bytes) -> Position:
    if len(item) == POS_V2.size:
        t, lat, lon, speed, course, flags = POS_V2.unpack(item)
        return Position(t, lat / 1e7, lon / 1e7, speed / 100, course / 100, bool(flags & FLAG_TRUSTED_TIME))
    if len(item) == POS_V3.size:
        t, lat, lon, speed, course, flags, mono, boot = POS_V3.unpack(item)
        return Position(t, lat / 1e7, lon / 1e7, speed / 100, course / 100, bool(flags & FLAG_TRUSTED_TIME), mono, boot)
    if len(item) == POS_V1.size:
        t, lat, lon = POS_V1.unpack(item)
        return Position(t, lat / 1e7, lon / 1e7)
    raise EnvelopeError(f"a position item is 16, 21 or 33 bytes, not {len(item)}")


def _zz(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _unzz(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _put(out: bytearray, n: int) -> None:
    n = _zz(n)
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _get(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise EnvelopeError("truncated position batch")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return _unzz(result), pos
        shift += 7
        if shift > 70:
            raise EnvelopeError("varint too long in position batch")


# A thinned point (empty item, see outbox.make_room_for_positions) repeats the
# previous values with this out-of-byte-range flag, so it costs ~nothing.
_THINNED = 0x100
# Seconds: far past any GPS time, and small enough that second differences of ms fit the 64-bit zigzag.
_MAX_TIME = float(2**40)


def can_encode(items: Sequence[bytes]) -> bool:
    """Only v2 (or thinned) items whose time survives 1 ms quantisation are delta-coded."""
    for it in items:
        if not it:
            continue
        if len(it) != POS_V2.size:
            return False
        t = POS_V2.unpack(it)[0]
        # a garbage time (NaN, 1e300) would not survive the varints: such a batch goes uncoded
        if not (math.isfinite(t) and abs(t) < _MAX_TIME) or struct.pack(">d", round(t * 1000) / 1000) != it[:8]:
            return False
    return True


def encode_batch(items: Sequence[bytes]) -> bytes:
    rows: list[tuple[float, int, int, int, int, int]] = []
    last: tuple[float, int, int, int, int, int] = (0.0, 0, 0, 0, 0, 0)
    for it in items:
        if it:
            last = POS_V2.unpack(it)
            rows.append(last)
        else:
            rows.append((*last[:5], _THINNED))
    cols: list[list[int]] = [
        [round(r[0] * 1000) for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
        [r[5] for r in rows],
    ]
    out = bytearray([CODEC_V2])
    for col in cols:
        prev = step = 0
        for v in col:
            d = v - prev
            _put(out, d - step)
            prev, step = v, d
    return bytes(out)


def decode_batch(body: bytes, count: int) -> tuple[bytes, ...]:
    if not body or body[0] != CODEC_V2:
        raise EnvelopeError("unknown position codec")
    pos = 1
    cols: list[list[int]] = []
    for _ in range(6):
        col: list[int] = []
        prev = step = 0
        for _ in range(count):
            dd, pos = _get(body, pos)
            step += dd
            prev += step
            col.append(prev)
        cols.append(col)
    if pos != len(body):
        raise EnvelopeError("trailing bytes after the position batch")
    try:
        return tuple(
            b"" if cols[5][i] == _THINNED else POS_V2.pack(cols[0][i] / 1000, cols[1][i], cols[2][i], cols[3][i], cols[4][i], cols[5][i])
            for i in range(count)
        )
    except struct.error as exc:
        raise EnvelopeError("position out of range") from exc
