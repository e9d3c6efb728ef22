"""Envelope v1/v2: the signed, sequence-numbered unit that crosses the link.

Layout (big-endian), documented byte by byte in docs/protocol.md::

    0   2  magic b"MO"
    2   1  version (1, or 2 when the sender names its node instance)
    3   1  flags: bit0 body is zlib-compressed, bit1 downlink (signed by HQ),
             bit2 body is a delta-coded position batch (sync.poscodec),
             bit3 the sender's clock was GPS-disciplined (trusted time),
             bit4 the last field is a MAC, not a signature (uplinks only, see below)
    4   1  stream code (see STREAMS)
    5   1  node id length N (1..64)
    6   N  node id, ASCII
    .   1  v2 only: instance id length M (1..16)
    .   M  v2 only: instance id (random bytes chosen when the node's database was made)
    .   8  first sequence number (u64)
    .   2  item count (u16)
    .   8  HLC timestamp (u64, 48-bit ms + 16-bit counter)
    .   *  body: items, each a varint length then the bytes (maybe compressed)
    -64 64 Ed25519 signature over every byte before it, or with bit4:
    -32 32 HMAC-SHA256 over every byte before it, under the key the van shares with HQ (sync.pairkey)

Why two: HQ verifies every uplink message, and at one item per message an
Ed25519 verification is a third of HQ's whole cost per message (0.1 ms; an
HMAC is 3 us).  Between two parties who share a key a MAC authenticates as a
signature does (the broker, other vans and anyone on the way cannot make one);
what it does not give is proof to a third party, which HQ never needed (it
keeps items, not envelopes).  So vans MAC their uplinks, and everything HQ
sends (acks, commands, the catalogue) stays signed: a van must know HQ's word
without trusting anyone else's copy of a key.  HQ takes both forms, so a van
on older software, or one set to ``--uplink-auth signature``, still gets through.

The same bytes travel over MQTT and, when small enough, as one Iridium SBD
message, so HQ verifies both paths identically.  An envelope without an
instance id (v1, all downlinks and old vans) has instance ``""``.

Numbers are bounded so both ends can store and re-encode what they accept:
``encode`` refuses an HLC above ``HLC_MAX`` (signed 64 bits) and sequence
numbers past ``MAX_SEQ`` (2^40 - 1, so HQ can give each node instance its own
range of a signed 64-bit column); ``decode`` refuses such sequence numbers
but passes any HLC through, so the receiver can quarantine the envelope
(``HLC.check``) instead of merging it.
"""

from __future__ import annotations

import abc
import hmac
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from . import pairkey, poscodec
from .clock import HLC_MAX
from .errors import EnvelopeError

MAGIC = b"MO"
VERSION = 1
VERSION_INSTANCE = 2  # v1 plus the sender's node instance id
MAX_INSTANCE = 16
MAX_SEQ = (1 << 40) - 1
FLAG_COMPRESSED = 0x01
FLAG_DOWNLINK = 0x02
FLAG_POSCODEC = 0x04
FLAG_TRUSTED_TIME = 0x08
FLAG_MAC = 0x10
SIG_LEN = 64
MAC_LEN = 32
MAX_NODE_ID = 64
MAX_ITEMS = 0xFFFF
# Compression only pays above this size; tiny SBD messages stay raw.
COMPRESS_MIN = 96

UP_STREAMS = {"status": 1, "pos": 2, "rec": 3, "audit": 4, "evt": 5, "blob": 6}
DOWN_STREAMS = {"ack": 16, "cmd": 17, "assign": 18, "prereg": 19, "catalog": 20}
# Reconciliation edits of HQ-owned fields (application status): sync/reconcile.py.
DOWN_STREAMS["recon"] = 21
# Kinds HQ may send to one node on mo/v1/{node}/down/{kind}.
DOWN_KINDS = ("ack", "cmd", "assign", "prereg", "recon")
STREAMS = {**UP_STREAMS, **DOWN_STREAMS}
STREAM_NAMES = {v: k for k, v in STREAMS.items()}

_FIXED = struct.Struct(">QHQ")


@dataclass(frozen=True)
class Envelope:
    node_id: str
    stream: str
    first_seq: int
    items: tuple[bytes, ...]
    hlc: int
    downlink: bool = False
    trusted_time: bool = False
    instance: str = ""  # hex of the node instance id; "" for v1 (old vans, downlinks)

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.items) - 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise EnvelopeError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 35:
            raise EnvelopeError("varint too long")


def pack_items(items: Sequence[bytes]) -> bytes:
    return b"".join(_varint(len(i)) + i for i in items)


def unpack_items(body: bytes, count: int) -> tuple[bytes, ...]:
    items = []
    pos = 0
    for _ in range(count):
        n, pos = _read_varint(body, pos)
        if pos + n > len(body):
            raise EnvelopeError("item runs past the body")
        items.append(body[pos : pos + n])
        pos += n
    if pos != len(body):
        raise EnvelopeError("trailing bytes after the last item")
    return tuple(items)


def encode(env: Envelope, key: Ed25519PrivateKey | MacKey, compress: bool | None = None) -> bytes:
    """The envelope's bytes, signed with ``key`` (Ed25519) or, for a van's uplink, authenticated with its MacKey."""
    node = env.node_id.encode("ascii")
    if not 1 <= len(node) <= MAX_NODE_ID:
        raise EnvelopeError("node id must be 1..64 ASCII characters")
    if not 1 <= len(env.items) <= MAX_ITEMS:
        raise EnvelopeError("an envelope carries 1..65535 items")
    if not 0 <= env.hlc <= HLC_MAX:
        raise EnvelopeError(f"HLC {env.hlc} out of range")
    if not env.first_seq >= 0 or env.first_seq + len(env.items) - 1 > MAX_SEQ:
        raise EnvelopeError("sequence number out of range")
    try:
        inst = bytes.fromhex(env.instance)
    except ValueError as exc:
        raise EnvelopeError("instance id must be hex") from exc
    if len(inst) > MAX_INSTANCE:
        raise EnvelopeError("instance id longer than 16 bytes")
    mac = isinstance(key, MacKey)
    if mac and env.downlink:
        raise EnvelopeError("HQ's messages are signed, never MAC-authenticated")
    flags = (FLAG_DOWNLINK if env.downlink else 0) | (FLAG_TRUSTED_TIME if env.trusted_time else 0) | (FLAG_MAC if mac else 0)
    if env.stream == "pos" and poscodec.can_encode(env.items):
        body = poscodec.encode_batch(env.items)
        flags |= FLAG_POSCODEC
    else:
        body = pack_items(env.items)
    if compress is None:
        compress = len(body) >= COMPRESS_MIN
    if compress:
        # Level 6: the same size as 9 on sealed records and GPS batches (within 1%), a third less CPU on the van.
        packed = zlib.compress(body, 6)
        if len(packed) < len(body):
            body = packed
            flags |= FLAG_COMPRESSED
    if inst:
        head = MAGIC + bytes([VERSION_INSTANCE, flags, STREAMS[env.stream], len(node)]) + node + bytes([len(inst)]) + inst
    else:
        head = MAGIC + bytes([VERSION, flags, STREAMS[env.stream], len(node)]) + node
    unsigned = head + _FIXED.pack(env.first_seq, len(env.items), env.hlc) + body
    return unsigned + (key.tag(unsigned) if isinstance(key, MacKey) else key.sign(unsigned))


def peek_node_id(data: bytes) -> str:
    """The claimed sender, read before verification to pick the key."""
    if len(data) < 6 + MAC_LEN or data[:2] != MAGIC:
        raise EnvelopeError("not a Mobile Office envelope")
    n = data[5]
    try:
        return data[6 : 6 + n].decode("ascii")
    except UnicodeDecodeError as exc:
        raise EnvelopeError("node id is not ASCII") from exc


# Refuse decompression bombs: no honest batch inflates past this.
MAX_BODY = 16 * 1024 * 1024


class Verifier(Protocol):
    """What checks a van's signature: its Ed25519 public key, or HQ's key ring during a rotation."""

    def verify(self, signature: bytes, data: bytes) -> None: ...


class MacVerifier(abc.ABC):
    """What checks a MAC-authenticated envelope (HQ's key ring: the keys it shares with that van).

    A base class, not a runtime-checkable Protocol: ``decode`` asks "is this one?" for every message,
    and a Protocol answers that by inspecting attributes each time (a tenth of a MAC check).
    """

    @abc.abstractmethod
    def verify_mac(self, tag: bytes, data: bytes) -> None:
        """Raise InvalidSignature unless ``tag`` authenticates ``data``."""


# The envelope key's label (sync.pairkey): never the heartbeat's, so the two keys differ.
MAC_PURPOSE = b"mo envelope mac v1"


def van_mac_key(node_id: str, sign: Ed25519PrivateKey, hq_seal_public: X25519PublicKey) -> MacKey:
    """The key a van MACs its uplinks with (its signing key, HQ's public sealing key)."""
    return MacKey(pairkey.van_key(MAC_PURPOSE, node_id, sign, hq_seal_public))


def hq_mac_key(node_id: str, node_sign_public: Ed25519PublicKey, hq_seal: X25519PrivateKey) -> MacKey:
    """HQ's copy of the same key (the van's enrolled public key, one of HQ's sealing keys)."""
    return MacKey(pairkey.hq_key(MAC_PURPOSE, node_id, node_sign_public, hq_seal))


class MacKey(MacVerifier):
    """A key a van shares with HQ (sync.pairkey), for ``encode`` and ``decode`` of MAC-authenticated envelopes."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("a MAC key has 32 bytes or more")
        self._secret = secret

    def tag(self, data: bytes) -> bytes:
        return hmac.digest(self._secret, data, "sha256")

    def verify_mac(self, tag: bytes, data: bytes) -> None:
        if not hmac.compare_digest(self.tag(data), tag):
            raise InvalidSignature()


def decode(data: bytes, key_for: Callable[[str], Verifier | None]) -> Envelope:
    """Verify and parse; raises EnvelopeError on anything but a valid message."""
    node_id = peek_node_id(data)
    if data[2] not in (VERSION, VERSION_INSTANCE):
        raise EnvelopeError(f"unsupported envelope version {data[2]}")
    flags, code, n = data[3], data[4], data[5]
    if code not in STREAM_NAMES:
        raise EnvelopeError(f"unknown stream code {code}")
    fixed_at = 6 + n
    instance = ""
    if data[2] == VERSION_INSTANCE:
        if len(data) <= fixed_at:
            raise EnvelopeError("truncated envelope")
        m = data[fixed_at]
        if not 1 <= m <= MAX_INSTANCE:
            raise EnvelopeError("bad instance id length")
        instance = data[fixed_at + 1 : fixed_at + 1 + m].hex()
        fixed_at += 1 + m
    mac = bool(flags & FLAG_MAC)
    tag_len = MAC_LEN if mac else SIG_LEN
    if len(data) < fixed_at + _FIXED.size + tag_len:
        raise EnvelopeError("truncated envelope")
    key = key_for(node_id)
    if key is None:
        raise EnvelopeError(f"unknown signer for node {node_id!r}")
    unsigned, sig = data[:-tag_len], data[-tag_len:]
    try:
        if not mac:
            key.verify(sig, unsigned)
        elif isinstance(key, MacVerifier) and not flags & FLAG_DOWNLINK:
            key.verify_mac(sig, unsigned)
        else:  # HQ's messages are signed: a MAC cannot stand in for HQ's word
            raise EnvelopeError(f"a MAC-authenticated message from {node_id!r}, where only a signature is taken")
    except InvalidSignature as exc:
        raise EnvelopeError(f"bad {'MAC' if mac else 'signature'} on a message from {node_id!r}") from exc
    first_seq, count, hlc = _FIXED.unpack_from(data, fixed_at)
    if count == 0 or first_seq + count - 1 > MAX_SEQ:
        raise EnvelopeError("sequence number out of range")
    body = unsigned[fixed_at + _FIXED.size :]
    if flags & FLAG_COMPRESSED:
        try:
            d = zlib.decompressobj()
            body = d.decompress(body, MAX_BODY)
            if d.unconsumed_tail:
                raise EnvelopeError("compressed body too large")
        except zlib.error as exc:
            raise EnvelopeError("corrupt compressed body") from exc
    stream = STREAM_NAMES[code]
    downlink = bool(flags & FLAG_DOWNLINK)
    if downlink != (stream in DOWN_STREAMS):
        raise EnvelopeError("direction flag does not match the stream")
    items = poscodec.decode_batch(body, count) if flags & FLAG_POSCODEC else unpack_items(body, count)
    return Envelope(node_id, stream, first_seq, items, hlc, downlink, bool(flags & FLAG_TRUSTED_TIME), instance)


# Acks: one item per stream, cumulative: "HQ holds every seq <= upto".
_ACK = struct.Struct(">BQ")


def ack_items(acks: dict[str, int]) -> tuple[bytes, ...]:
    return tuple(_ACK.pack(UP_STREAMS[s], upto) for s, upto in sorted(acks.items()))


def parse_ack_items(items: Sequence[bytes]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        if len(item) != _ACK.size:
            raise EnvelopeError("malformed ack item")
        code, upto = _ACK.unpack(item)
        name = STREAM_NAMES.get(code)
        if name not in UP_STREAMS:
            raise EnvelopeError(f"ack for unknown stream code {code}")
        out[name] = upto
    return out


# Besides cumulative acks, an ack envelope may carry (first byte of the item):
#   0x80|code, u64 N           "resend stream from N": HQ saw a gap
#   0x40|code, u64 N, reason   "item N is quarantined at HQ" (UTF-8 reason)
RESEND = 0x80
QUARANTINE = 0x40


@dataclass
class AckMessage:
    acks: dict[str, int]
    resend_from: dict[str, int]
    quarantined: list[tuple[str, int, str]]


def resend_item(stream: str, from_seq: int) -> bytes:
    return _ACK.pack(RESEND | UP_STREAMS[stream], from_seq)


def quarantine_item(stream: str, seq: int, reason: str) -> bytes:
    return _ACK.pack(QUARANTINE | UP_STREAMS[stream], seq) + reason.encode()[:200]


def parse_ack_message(items: Sequence[bytes]) -> AckMessage:
    msg = AckMessage({}, {}, [])
    for item in items:
        if len(item) < _ACK.size:
            raise EnvelopeError("malformed ack item")
        code, n = _ACK.unpack_from(item)
        name = STREAM_NAMES.get(code & 0x3F)
        if name not in UP_STREAMS:
            raise EnvelopeError(f"ack for unknown stream code {code}")
        if code & RESEND:
            msg.resend_from[name] = n
        elif code & QUARANTINE:
            msg.quarantined.append((name, n, item[_ACK.size :].decode("utf-8", "replace")))
        elif len(item) == _ACK.size:
            msg.acks[name] = n
        else:
            raise EnvelopeError("malformed ack item")
    return msg


def topic_up(node_id: str, stream: str) -> str:
    return f"mo/v1/{node_id}/up/{stream}"


def topic_down(node_id: str, kind: str) -> str:
    return f"mo/v1/{node_id}/down/{kind}"


def topic_status(node_id: str) -> str:
    return f"mo/v1/{node_id}/status"


def topic_catalog() -> str:
    return "mo/v1/all/down/catalog"
