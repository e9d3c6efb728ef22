"""The satellite heartbeat in one 50-byte credit: 46 bytes, authenticated by a truncated MAC.

An SBD plan bills in 50-byte credits (RockBLOCK-style).  A signed envelope
with its 64-byte Ed25519 signature costs three; this format costs one and
still carries the position, the time quality and the backlog per class.

Layout (big-endian, 46 bytes)::

    B   0xB1            format marker (an envelope starts with "MO", 0x4D)
    4s  node tag        SHA-256("mo-node:" + node id)[:4]: which van, without spelling its id
    4s  instance tag    SHA-256("mo-instance:" + node instance id)[:4]: which of its databases (re-flash safe)
    I   seq             the ``status`` stream's sequence: HQ stores it idempotently, so a replay is a duplicate
    I   time            Unix seconds of the heartbeat (the node's best time)
    B   flags           bit 0 trusted time, bit 1 has a fix
    i   lat, i lon      1e-7 degrees
    B   speed           km/h, saturating at 255
    B   course          2-degree steps (0..179)
    5H  backlog         pending items of rec, pos, evt, blob, audit, saturating at 65535
    8s  MAC             HMAC-SHA256(key, the 38 bytes before)[:8]

The MAC key is shared at enrolment without a new secret on the card
(sync.pairkey: X25519 between the van's signing key and HQ's sealing key).
A 64-bit tag makes a forgery a 2^-64 guess per message, each of which costs
the forger a satellite session; a replay is caught by the sequence number.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from . import pairkey
from .errors import EnvelopeError, SyncError

MARKER = 0xB1
MAC_LEN = 8
_BODY = struct.Struct(">B4s4sIIBiiBB5H")
SIZE = _BODY.size + MAC_LEN
BACKLOG_STREAMS = ("rec", "pos", "evt", "blob", "audit")
# The heartbeat key's label (sync.pairkey): what the deployed vans use, so it never changes.
PURPOSE = b"mo sbd heartbeat v1"


@dataclass(frozen=True)
class Heartbeat:
    time: float
    lat: float
    lon: float
    speed: float  # m/s
    course: float  # degrees
    trusted_time: bool
    has_fix: bool
    depth: dict[str, int]


def node_tag(node_id: str) -> bytes:
    return hashlib.sha256(b"mo-node:" + node_id.encode()).digest()[:4]


def instance_tag(instance: str) -> bytes:
    return hashlib.sha256(b"mo-instance:" + instance.encode()).digest()[:4]


def provisional_instance(tag: bytes) -> str:
    """The instance HQ files a heartbeat under when it has not yet seen that database over MQTT.

    Hex like a real instance id (8 random bytes, 16 digits), and half as long, so never one of them.
    """
    return tag.hex()


def node_mac_key(node_id: str, sign: Ed25519PrivateKey, hq_seal_public: X25519PublicKey) -> bytes:
    """The van's side of the heartbeat key (its signing key, HQ's public sealing key)."""
    return pairkey.van_key(PURPOSE, node_id, sign, hq_seal_public)


def hq_mac_key(node_id: str, node_sign_public: Ed25519PublicKey, hq_seal: X25519PrivateKey) -> bytes:
    """HQ's side of the same key (the van's enrolled public signing key, HQ's private sealing key)."""
    return pairkey.hq_key(PURPOSE, node_id, node_sign_public, hq_seal)


def pack(node_id: str, seq: int, hb: Heartbeat, key: bytes, instance: str = "") -> bytes:
    if not 0 < seq <= 0xFFFFFFFF:
        raise SyncError(f"heartbeat sequence {seq} does not fit 32 bits")
    depth = [min(0xFFFF, max(0, int(hb.depth.get(s, 0)))) for s in BACKLOG_STREAMS]
    body = _BODY.pack(MARKER, node_tag(node_id), instance_tag(instance), seq, max(0, min(0xFFFFFFFF, int(hb.time))),
                      (1 if hb.trusted_time else 0) | (2 if hb.has_fix else 0),
                      round(max(-90.0, min(90.0, hb.lat)) * 1e7), round(max(-180.0, min(180.0, hb.lon)) * 1e7),
                      max(0, min(255, round(hb.speed * 3.6))), round((hb.course % 360) / 2) % 180, *depth)
    return body + hmac.new(key, body, hashlib.sha256).digest()[:MAC_LEN]


def is_compact(payload: bytes) -> bool:
    return len(payload) == SIZE and payload[0] == MARKER


def open_heartbeat(payload: bytes,
                   candidates: Callable[[bytes], Iterable[tuple[str, bytes]]]) -> tuple[str, int, Heartbeat, bytes]:
    """(node id, seq, heartbeat, instance tag) of a compact heartbeat whose MAC verifies under one of the tag's candidate keys."""
    if not is_compact(payload):
        raise EnvelopeError("not a compact heartbeat")
    body, mac = payload[:_BODY.size], payload[_BODY.size:]
    _m, tag, itag, seq, t, flags, lat, lon, kmh, course2, *depth = _BODY.unpack(body)
    expected = (node for node, key in candidates(tag) if hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest()[:MAC_LEN], mac))
    node_id = next(expected, None)
    if node_id is None:
        raise EnvelopeError("compact heartbeat: no enrolled van's key verifies it")
    if seq == 0 or not (-900_000_000 <= lat <= 900_000_000 and -1_800_000_000 <= lon <= 1_800_000_000) or course2 >= 180:
        raise EnvelopeError("compact heartbeat: field out of range")
    hb = Heartbeat(float(t), lat / 1e7, lon / 1e7, kmh / 3.6, course2 * 2.0, bool(flags & 1), bool(flags & 2),
                   {s: n for s, n in zip(BACKLOG_STREAMS, depth, strict=True) if n})
    return node_id, seq, hb, itag
