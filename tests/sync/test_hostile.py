"""Hostile and broken input at HQ's ingest: HLC bounds, per-item quarantine, node instances (issue 15, items 1-3)."""

from __future__ import annotations

import asyncio
import itertools
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hq import fleet
from hq.store import HQStore
from sync import outbox, poscodec
from sync.auditchain import GENESIS, AuditEntry, entry_hash
from sync.clock import HLC, HLC_MAX, ClockSkew, ManualClock
from sync.db import open_db
from sync.downlink import Downlink, build, command
from sync.envelope import SIG_LEN, Envelope, decode, encode, parse_ack_message
from sync.errors import EnvelopeError
from sync.ingest import Ingest
from sync.linkmgr import Heartbeat, pack_heartbeat
from sync.mqtt import MqttSettings
from sync.uplink import Uplink

from .conftest import Keys

U64 = st.integers(0, 2**64 - 1)
NOW = 1_780_000_000.0


def forged_hlc(data: bytes, hlc: int, key: Ed25519PrivateKey) -> bytes:
    """The same envelope with any u64 in its HLC field, signed again (a van's key can sign anything)."""
    fixed_at = 6 + data[5] + (1 + data[6 + data[5]] if data[2] == 2 else 0)
    unsigned = bytearray(data[:-SIG_LEN])
    struct.pack_into(">Q", unsigned, fixed_at + 10, hlc)
    return bytes(unsigned) + key.sign(bytes(unsigned))


def record(rid: str) -> bytes:
    return json.dumps({"type": "application", "id": rid, "number": f"N-{rid}", "service_code": "RES-01", "created": NOW}).encode()


class Hq:
    """HQ's store and ingest on one SQLite file, kept across hypothesis examples on one event loop."""

    def __init__(self, path: Path, keys: Keys) -> None:
        self.keys = keys
        self.clock = ManualClock(NOW)
        self.runner = asyncio.Runner()
        self.store: HQStore = self.runner.run(HQStore.open(path, self.clock))
        pub = keys.node.public_key()
        self.ingest = Ingest(self.store, lambda n: pub if n.startswith("van-") else None, keys.hq, self.clock)
        self.seqs: dict[tuple[str, str], Iterator[int]] = {}

    def next_seq(self, node: str, stream: str, n: int = 1) -> int:
        it = self.seqs.setdefault((node, stream), itertools.count(1))
        first = next(it)
        for _ in range(n - 1):
            next(it)
        return first

    def handle(self, data: bytes) -> Any:
        ack = self.runner.run(self.ingest.handle(data, "mqtt"))
        assert ack is not None
        env = decode(ack, lambda n: self.keys.hq.public_key())  # every ack HQ makes encodes and verifies
        return env, parse_ack_message(env.items)

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async def run() -> list[tuple[Any, ...]]:
            async with self.store.db.execute(query, params) as cur:
                return list(await cur.fetchall())
        return self.runner.run(run())

    def close(self) -> None:
        self.runner.run(self.store.close())
        self.runner.close()


@pytest.fixture
def hq(tmp_path: Path, keys: Keys) -> Iterator[Hq]:
    h = Hq(tmp_path / "hq.db", keys)
    yield h
    h.close()


# -- item 1: HLC bounds ----------------------------------------------------------

@given(hlc=U64)
@example(hlc=HLC_MAX)
@example(hlc=HLC_MAX + 1)
@example(hlc=2**64 - 1)
def test_any_hlc_encodes_only_in_range_and_always_decodes(hlc: int) -> None:
    key = Ed25519PrivateKey.generate()
    env = Envelope("van-01", "rec", 1, (b"x",), hlc)
    if hlc <= HLC_MAX:
        assert decode(encode(env, key), lambda n: key.public_key()).hlc == hlc
    else:
        with pytest.raises(EnvelopeError):
            encode(env, key)
    # whatever the field holds, decode hands it over so the receiver can quarantine it (never struct.error)
    raw = forged_hlc(encode(Envelope("van-01", "rec", 1, (b"x",), 0, instance="00ff"), key), hlc, key)
    assert decode(raw, lambda n: key.public_key()).hlc == hlc


@given(last=st.integers(0, HLC_MAX), remote=U64, skew=st.floats(0.001, 10 * 365 * 86400.0))
@example(last=0, remote=2**63, skew=86400.0)
@example(last=0, remote=2**64 - 1, skew=86400.0)
def test_observe_never_takes_what_cannot_be_encoded(last: int, remote: int, skew: float) -> None:
    hlc = HLC(ManualClock(NOW), last, max_skew=skew)
    wall_ms = int(NOW * 1000)
    reason = hlc.check(remote)
    if reason is None:
        assert remote <= HLC_MAX and (remote >> 16) - wall_ms <= skew * 1000
        assert hlc.observe(remote) >= min(remote + 1, HLC_MAX)
    else:
        with pytest.raises(ClockSkew):
            hlc.observe(remote)
        assert hlc.last == last  # state untouched
    for _ in range(3):
        assert 0 <= hlc.tick() <= HLC_MAX
    encode(Envelope("van-01", "ack", 1, (b"\x03" + bytes(8),), hlc.tick(), downlink=True), Ed25519PrivateKey.generate())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hlc=U64)
@example(hlc=2**64 - 1)
@example(hlc=2**63)
@example(hlc=(int(NOW * 1000) + 86_400_000 + 1) << 16)
def test_hq_quarantines_an_envelope_with_a_poisoned_hlc_and_keeps_acking(hq: Hq, hlc: int) -> None:
    seq = hq.next_seq("van-01", "rec")
    raw = forged_hlc(encode(Envelope("van-01", "rec", seq, (record(f"p{seq}"),), 0), hq.keys.node), hlc, hq.keys.node)
    before = hq.ingest.hlc.last
    _ack_env, msg = hq.handle(raw)
    assert msg.acks == {"rec": seq}  # held, so the stream goes on
    out_of_bounds = hq.ingest.hlc.check(hlc) is not None
    if out_of_bounds:
        assert [q[1] for q in msg.quarantined] == [seq] and "HLC" in msg.quarantined[0][2]
        assert hq.ingest.hlc.last <= max(before, int(NOW * 1000) << 16) + 2  # never observed (only ticked for the ack)
        assert not hq.sql("SELECT 1 FROM records WHERE record_id = ?", (f"p{seq}",))  # not applied
    # the next van's ordinary envelope is still acked, with an HLC that encodes
    other = hq.next_seq("van-02", "rec")
    ack2, msg2 = hq.handle(encode(Envelope("van-02", "rec", other, (record(f"o{other}"),), int(NOW * 1000) << 16), hq.keys.node))
    assert msg2.acks == {"rec": other} and ack2.hlc <= HLC_MAX


async def test_van_refuses_a_downlink_stamped_too_far_ahead(tmp_path: Path, keys: Keys) -> None:
    clock = ManualClock(NOW)
    up = Uplink(tmp_path / "van.db", "van-01", keys.node, keys.hq.public_key(), MqttSettings(url="mqtt://127.0.0.1:1", client_id="van-01"),
                clock, max_clock_skew=3600.0)
    up._db = await open_db(tmp_path / "van.db")
    try:
        await outbox.create_schema(up._db)
        up.downlink = Downlink(up._db, clock)
        await up.downlink.create_schema()
        ahead = (int((NOW + 7200) * 1000)) << 16
        await up._on_message("mo/v1/van-01/down/cmd", build(keys.hq, "van-01", "cmd", 1, [command("c1", "sync_now", NOW + 60)], ahead))
        assert up.status.rejected_downlinks == 1 and up.hlc.last < ahead
        fine = (int(NOW * 1000)) << 16
        await up._on_message("mo/v1/van-01/down/cmd", build(keys.hq, "van-01", "cmd", 2, [command("c2", "sync_now", NOW + 60)], fine))
        assert up.status.rejected_downlinks == 1 and up.hlc.last > fine
    finally:
        await up._db.close()


# -- item 2: one item cannot block its stream -------------------------------------

def _audit_entry(seq: int, prev: bytes = GENESIS) -> bytes:
    e = AuditEntry(seq, NOW, "admin", "create", "application", f"a{seq}", "", prev, b"")
    return AuditEntry(e.seq, e.at, e.actor, e.action, e.entity, e.entity_id, e.reason, prev, entry_hash(prev, e.body())).wire()


def good_item(stream: str, n: int) -> bytes:
    if stream == "rec":
        return record(f"good-{n}")
    if stream == "pos":
        return poscodec.pack_position(poscodec.Position(NOW + n, 48.5, 35.0, 1.0, 2.0, True))
    if stream == "status":
        return pack_heartbeat(Heartbeat(NOW + n, 48.5, 35.0, 0.0, 0.0, True, True, {"rec": 1}))
    if stream == "audit":
        return _audit_entry(n)
    return json.dumps({"type": "note", "n": n}).encode()


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12), st.sampled_from(["dup", "ff" * 32, "1e400", "-1"]))
json_values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=6), kids, max_size=3)),
                           max_leaves=8)
shaped = st.fixed_dictionaries({}, optional={
    k: json_values for k in ("type", "id", "number", "service_code", "created", "score", "application_id", "at", "package", "comment_sealed",
                             "seq", "actor", "action", "entity", "reason", "prev", "hash")
}).map(lambda d: {**d, "type": d.get("type", "application")})
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda d: json.dumps(d).encode()),
    st.sampled_from(["application", "applicant", "rating"]).flatmap(lambda t: shaped.map(lambda d: json.dumps({**d, "type": t}).encode())),
    st.integers(10, 200_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(10, 5000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=st.sampled_from(["rec", "pos", "evt", "blob", "audit", "status"]), body=bodies, before=st.booleans())
@example(stream="rec", body=json.dumps({"type": "application", "id": "dup", "number": "x", "service_code": "s", "created": 1}).encode(),
         before=False)
@example(stream="rec", body=json.dumps({"type": "application", "id": "z", "number": "x", "service_code": "s", "created": 1,
                                        "package": {"a": 1}}).encode(), before=True)
@example(stream="rec", body=json.dumps({"type": "rating", "application_id": "a", "score": 2**70, "at": 1}).encode(), before=False)
@example(stream="audit", body=json.dumps({"seq": 1, "at": 1, "actor": "a", "action": "b", "entity": "c", "id": "d", "reason": "",
                                          "prev": 7, "hash": None}).encode(), before=False)
@example(stream="rec", body=b"[" * 100_000, before=False)
def test_no_item_blocks_its_stream_or_the_worker(hq: Hq, stream: str, body: bytes, before: bool) -> None:
    if not hq.sql("SELECT 1 FROM records WHERE record_id = 'dup'"):
        hq.handle(encode(Envelope("van-09", "rec", 1, (record("dup"),), 1), hq.keys.node))
    seq = hq.next_seq("van-01", stream, 2)
    good_seq = seq if before else seq + 1
    good = good_item(stream, good_seq)
    items = (good, body) if before else (body, good)
    _env, msg = hq.handle(encode(Envelope("van-01", stream, seq, items, int(NOW * 1000) << 16), hq.keys.node))
    assert msg.acks == {stream: seq + 1} and not msg.resend_from
    stored = dict(hq.sql("SELECT seq, payload FROM items WHERE node_id = 'van-01' AND stream = ? AND seq >= ?", (stream, seq)))
    assert bytes(stored[seq]) == items[0] and bytes(stored[seq + 1]) == items[1]
    if stream == "rec":
        assert hq.sql("SELECT 1 FROM records WHERE record_id = ?", (f"good-{good_seq}",))
    assert good_seq not in {q[1] for q in msg.quarantined}  # the good one is applied, not quarantined


POISON = [
    ("rec", b"[" * 50_000),
    ("rec", json.dumps({"type": "application", "id": "dup", "number": "x", "service_code": "s", "created": 1}).encode()),
    ("rec", json.dumps({"type": "application", "id": "q", "number": "x", "service_code": "s", "created": 1, "package": [1]}).encode()),
    ("rec", b'{"type": "rating", "application_id": "a", "score": 3, "at": "x"}'),
    ("rec", b'"' + b'\\"' * 100_000),
    ("audit", json.dumps({"seq": 1, "at": 1, "actor": "a", "action": "b", "entity": "c", "id": "d", "reason": "", "prev": 7, "hash": 1}).encode()),
    ("evt", b"{" * 10_000),
    ("status", b"\xff" * 40),
    ("pos", b"\x00" * 7),
]


async def test_poison_items_are_quarantined_on_both_backends(hq_store: HQStore, ingest: Ingest, keys: Keys) -> None:
    await ingest.handle(encode(Envelope("van-01", "rec", 1, (record("dup"),), 1), keys.node))
    seqs = {"rec": 2}
    for stream, body in POISON:
        seq = seqs.get(stream, 1)
        seqs[stream] = seq + 2
        ack = await ingest.handle(encode(Envelope("van-01", stream, seq, (body, good_item(stream, seq + 1)), 1), keys.node))
        msg = parse_ack_message(decode(ack or b"", lambda n: keys.hq.public_key()).items)
        assert msg.acks == {stream: seq + 1}, (stream, body[:40])
    q = {(r["stream"], r["seq"]) for r in await hq_store.quarantined()}
    # (rec 4, a taken record id, is ignored by the projection; rec 6 is stored with its list as text on
    # PostgreSQL, as the adapter converts what SQLite would have stored)
    assert {("rec", 2), ("rec", 8), ("rec", 10), ("status", 1), ("pos", 1)} <= q
    async with hq_store.db.execute("SELECT COUNT(*) FROM records WHERE record_id LIKE 'good-%'") as cur:
        assert (await cur.fetchone())[0] == 5  # type: ignore[index]
    async with hq_store.db.execute("SELECT COUNT(*) FROM audit_alerts WHERE node_id = 'van-01'") as cur:
        assert (await cur.fetchone())[0] == 1  # type: ignore[index]


# -- item 3: node instances --------------------------------------------------------

def _ack(data: bytes | None, keys: Keys) -> tuple[Envelope, Any]:
    assert data is not None
    env = decode(data, lambda n: keys.hq.public_key())
    return env, parse_ack_message(env.items)


async def test_a_reflashed_van_is_stored_apart_alerted_and_acked_in_its_own_numbers(hq_store: HQStore, ingest: Ingest, keys: Keys,
                                                                                     clock: ManualClock) -> None:
    old = encode(Envelope("van-01", "rec", 1, (record("a1"), record("a2")), 1), keys.node)  # v1: no instance (a legacy van)
    assert old[2] == 1
    env, msg = _ack(await ingest.handle(old), keys)
    assert msg.acks == {"rec": 2} and env.instance == ""
    # the card is replaced: a new database numbers from 1 again
    new = encode(Envelope("van-01", "rec", 1, (record("b1"), record("b2"), record("b3")), 2, instance="0123456789abcdef"), keys.node)
    assert new[2] == 2
    env, msg = _ack(await ingest.handle(new), keys)
    assert msg.acks == {"rec": 3} and env.instance == "0123456789abcdef" and not msg.quarantined
    assert (await hq_store.stats())["records"] == 5
    view = await fleet.fleet_view(hq_store, clock.now())
    assert "new_instance" in {a["code"] for a in view["alerts"]}
    assert view["nodes"][0]["records"] == 5
    # resends of either instance are duplicates, each in its own numbers
    await ingest.handle(old)
    await ingest.handle(new)
    assert ingest.duplicates == 5 and (await hq_store.stats())["records"] == 5
    # a later, third database is alerted too; the old instance's late items still land in their own range
    env, msg = _ack(await ingest.handle(encode(Envelope("van-01", "rec", 3, (record("a3"),), 3), keys.node)), keys)
    assert msg.acks == {"rec": 3} and env.instance == ""
    assert (await hq_store.stats())["records"] == 6


async def test_different_content_under_the_same_key_is_never_acked(hq_store: HQStore, ingest: Ingest, keys: Keys, clock: ManualClock) -> None:
    inst = "00aa00aa00aa00aa"
    _, msg = _ack(await ingest.handle(encode(Envelope("van-01", "evt", 1, (b"one", b"two"), 1, instance=inst), keys.node)), keys)
    assert msg.acks == {"evt": 2}
    # the same numbers with other bytes: quarantined and the ack stops below it
    _, msg = _ack(await ingest.handle(encode(Envelope("van-01", "evt", 2, (b"TWO", b"three"), 2, instance=inst), keys.node)), keys)
    assert msg.acks == {"evt": 1} and [q[1] for q in msg.quarantined] == [2] and "conflict" in msg.quarantined[0][2]
    assert not msg.resend_from  # not a gap: no resend loop
    _, msg = _ack(await ingest.handle(encode(Envelope("van-01", "evt", 4, (b"four",), 3, instance=inst), keys.node)), keys)
    assert msg.acks == {"evt": 1} and not msg.resend_from
    assert [p for _, p in await hq_store.items("van-01", "evt")] == [b"one", b"two", b"three", b"four"]  # what HQ held stays
    view = await fleet.fleet_view(hq_store, clock.now())
    assert "conflict" in {a["code"] for a in view["alerts"]}


def test_envelope_versions_are_compatible() -> None:
    key = Ed25519PrivateKey.generate()
    v1 = encode(Envelope("van-01", "rec", 7, (b"x",), 5), key)
    v2 = encode(Envelope("van-01", "rec", 7, (b"x",), 5, instance="ab" * 8), key)
    assert (v1[2], v2[2]) == (1, 2) and len(v2) == len(v1) + 9
    assert decode(v1, lambda n: key.public_key()).instance == ""
    assert decode(v2, lambda n: key.public_key()).instance == "ab" * 8
    for bad in ("ab" * 17, "xyz"):
        with pytest.raises(EnvelopeError):
            encode(Envelope("van-01", "rec", 7, (b"x",), 5, instance=bad), key)
    with pytest.raises(EnvelopeError):
        encode(Envelope("van-01", "rec", 2**40, (b"x",), 5), key)
