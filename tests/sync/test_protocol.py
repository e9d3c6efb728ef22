"""Envelope, position codec, outbox limits/ledger, HQ ingest rules, downlink, SBD link manager."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiosqlite
import pytest

from hq import store as hq_store_module
from hq.db import DB, in_one_hop
from hq.db import transaction as hq_transaction
from hq.store import HQStore
from sync import envelope, outbox, poscodec
from sync.clock import ManualClock
from sync.db import run_transaction_unsynced, transaction
from sync.downlink import Downlink, build, command
from sync.envelope import Envelope, decode, encode, parse_ack_message
from sync.errors import EnvelopeError, OutboxFull
from sync.ingest import Ingest
from sync.linkmgr import SBD_MO_MAX, Heartbeat, LinkManager, unpack_heartbeat

from .conftest import Keys


def _track(n: int, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    lat, lon, out = 47.9, 33.4, []
    for i in range(n):
        lat += 0.00008 + rnd.uniform(-1e-6, 1e-6)
        lon += 0.00005
        out.append(poscodec.pack_position(poscodec.Position(1_780_000_000 + i, lat, lon, 11.1, 45.0 + i % 3, i % 2 == 0)))
    return out


def test_position_batch_round_trips_byte_identical_and_is_small(keys: Keys) -> None:
    items = _track(600)
    items[10] = b""  # a thinned point
    env = Envelope("van-01", "pos", 1, tuple(items), 5, trusted_time=True)
    data = encode(env, keys.node)
    back = decode(data, lambda n: keys.node.public_key())
    assert back.items == tuple(items)
    assert back.trusted_time
    assert data[3] & envelope.FLAG_POSCODEC
    assert len(data) < len(items) * 8  # far under the 21-byte canonical item


def test_tampered_envelope_is_rejected(keys: Keys) -> None:
    data = bytearray(encode(Envelope("van-01", "rec", 1, (b"x" * 50,), 1), keys.node))
    data[-70] ^= 1
    with pytest.raises(EnvelopeError):
        decode(bytes(data), lambda n: keys.node.public_key())
    forged = encode(Envelope("van-01", "rec", 1, (b"x",), 1), keys.hq)
    with pytest.raises(EnvelopeError):
        decode(forged, lambda n: keys.node.public_key())


async def test_capacity_refuses_records_before_the_limit_and_thins_gps(node_db: aiosqlite.Connection) -> None:
    limits = outbox.Limits(per_stream={"rec": 1000, "pos": 21 * 50}, min_free_disk=0)
    async with transaction(node_db):
        for _ in range(9):
            await outbox.enqueue(node_db, "rec", b"r" * 100, 1.0)
    assert await outbox.capacity_ok(node_db, "rec", 100, limits)
    with pytest.raises(OutboxFull) as exc:
        await outbox.check_capacity(node_db, "rec", 101, limits)
    assert "черги" in exc.value.message_uk
    for p in _track(200):
        async with transaction(node_db):
            await outbox.make_room_for_positions(node_db, limits)
            await outbox.enqueue(node_db, "pos", p, 1.0)
    st = (await outbox.streams(node_db))["pos"]
    assert st.next_seq == 201  # nothing deleted: dense numbering kept
    assert st.bytes <= 21 * 50 + 21
    rows = await outbox.batch(node_db, "pos", 0, 1000, 10**9)
    assert len(rows) == 200 and rows[-1].payload  # the newest point survives
    use = await outbox.usage(node_db, limits)
    assert use["rec"] == {"bytes": 900, "limit": 1000, "pending": 9}


async def test_ledger_and_quarantine_flow_through_ingest(node_db: aiosqlite.Connection, ingest: Ingest, keys: Keys,
                                                         hq_store: HQStore, clock: ManualClock) -> None:
    good = json.dumps({"type": "application", "id": "a1", "number": "N1", "service_code": "S", "created": 1.0}).encode()
    async with transaction(node_db):
        await outbox.enqueue(node_db, "rec", good, clock.now())
        await outbox.enqueue(node_db, "rec", b"{not json", clock.now())
        await outbox.enqueue(node_db, "rec", json.dumps({"type": "alien", "id": "x"}).encode(), clock.now())
        await outbox.enqueue(node_db, "rec", good.replace(b"a1", b"a2").replace(b"N1", b"N2"), clock.now())
    assert (await outbox.ledger(node_db, "rec", 1))["state"] == "created"  # type: ignore[index]
    rows = await outbox.batch(node_db, "rec", 0, 10, 10**6)
    await outbox.mark_sent(node_db, "rec", 1, 4, clock.now())
    ack = await ingest.handle(encode(Envelope("van-01", "rec", 1, tuple(r.payload for r in rows), 1), keys.node), "mqtt")
    assert ack is not None
    msg = parse_ack_message(decode(ack, lambda n: keys.hq.public_key()).items)
    assert msg.acks == {"rec": 4}  # poison does not block the stream
    assert [q[1] for q in msg.quarantined] == [2, 3]
    for stream, seq, reason in msg.quarantined:
        await outbox.record_quarantine(node_db, stream, seq, reason, clock.now())
    await outbox.apply_ack(node_db, "rec", 4, clock.now())
    assert (await outbox.ledger(node_db, "rec", 1))["state"] == "acknowledged"  # type: ignore[index]
    assert (await outbox.ledger(node_db, "rec", 2))["state"] == "quarantined"  # type: ignore[index]
    assert len(await hq_store.quarantined()) == 2
    assert (await hq_store.stats())["records"] == 2


async def test_gap_asks_for_resend_and_replay_is_counted(ingest: Ingest, keys: Keys, hq_store: HQStore) -> None:
    e1 = encode(Envelope("van-01", "evt", 1, (b"a", b"b"), 1), keys.node)
    e3 = encode(Envelope("van-01", "evt", 4, (b"d",), 2), keys.node)
    await ingest.handle(e1, "mqtt")
    ack = await ingest.handle(e3, "mqtt")
    msg = parse_ack_message(decode(ack or b"", lambda n: keys.hq.public_key()).items)
    assert msg.acks == {"evt": 2} and msg.resend_from == {"evt": 3}
    await ingest.handle(e1, "mqtt")
    assert ingest.duplicates == 2
    assert [s for s, _ in await hq_store.items("van-01", "evt")] == [1, 2, 4]
    # unknown node and wrong topic are rejected and counted
    assert await ingest.handle(encode(Envelope("van-99", "evt", 1, (b"a",), 1), keys.node), "mqtt") is None
    assert await ingest.handle(e1, "mqtt", topic_node="van-02") is None
    assert ingest.rejected == 2 and (await hq_store.stats())["rejected"] == 2


async def test_commands_apply_exactly_once_and_expire(node_db: aiosqlite.Connection, keys: Keys, clock: ManualClock) -> None:
    dl = Downlink(node_db, clock)
    await dl.create_schema()
    calls: list[str] = []

    async def lock(doc: dict[str, object]) -> None:
        calls.append(str(doc["id"]))

    dl.register("lock", lock)
    data = build(keys.hq, "van-01", "cmd", 1, [command("c1", "lock", clock.now() + 60), command("c2", "lock", clock.now() - 1),
                                               command("c3", "shred", clock.now() + 60)], 1)
    env = decode(data, lambda n: keys.hq.public_key())
    first = await dl.apply(env)
    again = await dl.apply(env)
    assert [a.result for a in first] == ["applied", "expired", "unknown"]
    assert [a.result for a in again] == ["duplicate"] * 3
    assert calls == ["c1"]
    acks = [json.loads(r.payload) for r in await outbox.batch(node_db, "evt", 0, 10, 10**6)]
    assert [(a["id"], a["result"]) for a in acks] == [("c1", "applied"), ("c2", "expired"), ("c3", "unknown")]


@dataclass
class FakeSatellite:
    """The satellite itself cannot exist here; the devices helper's emulator replaces this in integration."""

    bars: int = 0
    sent: list[bytes] = field(default_factory=list)
    mt: list[bytes] = field(default_factory=list)

    async def send(self, payload: bytes) -> FakeSatellite.Result:
        assert len(payload) <= SBD_MO_MAX
        self.sent.append(payload)
        return FakeSatellite.Result(True)

    async def receive(self) -> list[bytes]:
        out, self.mt = self.mt, []
        return out

    async def signal(self) -> int:
        return self.bars

    @dataclass
    class Result:
        ok: bool


async def test_link_manager_falls_back_to_sbd_and_hq_ingests_it(keys: Keys, clock: ManualClock, ingest: Ingest,
                                                                 hq_store: HQStore) -> None:
    modem = FakeSatellite()
    up = [True]
    seqs = iter(range(1, 100))
    got: list[bytes] = []

    async def hb() -> Heartbeat:
        return Heartbeat(clock.now(), 47.91, 33.39, 10.0, 90.0, True, True, {"rec": 12, "pos": 3000, "blob": 2})

    async def seq() -> int:
        return next(seqs)

    async def down(b: bytes) -> None:
        got.append(b)

    lm = LinkManager("van-01", keys.node, clock, modem, lambda: up[0], hb, seq, down, sbd_after=300, sbd_interval=600)
    assert await lm.step() == "mqtt"
    up[0] = False
    assert await lm.step() == "waiting"
    clock.advance(299)
    assert await lm.step() == "waiting"
    clock.advance(2)
    assert await lm.step() == "no_signal"
    modem.bars = 3
    modem.mt.append(b"urgent")
    assert await lm.step() == "sent"
    assert got == [b"urgent"]
    clock.advance(100)
    assert await lm.step() == "idle"
    clock.advance(600)
    assert await lm.step() == "sent"
    up[0] = True
    assert await lm.step() == "mqtt"
    assert len(modem.sent) == 2 and all(len(m) <= SBD_MO_MAX for m in modem.sent)
    for m in modem.sent + modem.sent[:1]:  # the modem may resend one: idempotent at HQ
        await ingest.handle(m, channel="sbd")
    assert [s for s, _ in await hq_store.items("van-01", "status")] == [1, 2]
    hb0 = unpack_heartbeat((await hq_store.items("van-01", "status"))[0][1])
    assert hb0.depth == {"rec": 12, "pos": 3000, "blob": 2}
    fleet = (await hq_store.fleet())[0]
    assert fleet["link"] == "sbd" and fleet["outbox_depth"]["rec"] == 12 and abs(fleet["lat"] - 47.91) < 1e-6


async def test_link_manager_over_a_real_uplink_reports_the_outbox_depth(tmp_path, keys: Keys, clock: ManualClock,  # type: ignore[no-untyped-def]
                                                                          ingest: Ingest, hq_store: HQStore) -> None:
    import asyncio
    import socket

    from sync import linkmgr
    from sync.db import open_db
    from sync.mqtt import MqttSettings
    from sync.uplink import Uplink

    with socket.socket() as s:  # a port nobody listens on: the broker is unreachable
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = await open_db(tmp_path / "van.db")
    try:
        await outbox.create_schema(db)
        async with transaction(db):
            for _ in range(3):
                await outbox.enqueue(db, "rec", b"{}", clock.now())
        up = Uplink(tmp_path / "van.db", "van-01", keys.node, keys.hq.public_key(),
                    MqttSettings(url=f"mqtt://127.0.0.1:{port}", client_id="van-01", connect_timeout=1), clock,
                    latest_position=lambda: {"lat": 47.9, "lon": 33.4, "t": clock.now(), "speed": 0.0, "course": 0.0},
                    trusted_time=lambda: True)
        task = asyncio.create_task(up.run())
        try:
            modem = FakeSatellite(bars=4)
            lm = linkmgr.for_uplink(up, modem, sbd_after=60, sbd_interval=600)
            for _ in range(200):
                if up.downlink is not None:
                    break
                await asyncio.sleep(0.01)
            assert await lm.step() == "waiting"
            clock.advance(61)
            assert await lm.step() == "sent"
            await ingest.handle(modem.sent[0], channel="sbd")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await db.close()
    hb = unpack_heartbeat((await hq_store.items("van-01", "status"))[0][1])
    assert hb.depth == {"rec": 3} and hb.trusted_time and hb.has_fix


async def test_messages_arriving_together_commit_once_and_are_acked_per_van_after_it(
        ingest: Ingest, keys: Keys, hq_store: HQStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit (HQ ingest at steady state): one COMMIT for the group, acks after it, exactly once, in order."""
    commits: list[str] = []
    real_transaction = hq_store_module.transaction

    @contextlib.asynccontextmanager
    async def counting(db: DB, key: str | None = None) -> AsyncIterator[DB]:
        async with real_transaction(db, key) as tx:
            yield tx
        commits.append(key or "")  # after COMMIT

    monkeypatch.setattr(hq_store_module, "transaction", counting)
    group = [
        (encode(Envelope("van-01", "evt", 1, (b"a",), 1), keys.node), "mqtt", "van-01", "evt"),
        (encode(Envelope("van-01", "evt", 2, (b"b",), 2), keys.node), "mqtt", "van-01", "evt"),  # sees seq 1 of the same group
        (encode(Envelope("van-99", "evt", 1, (b"x",), 3), keys.node), "mqtt", "van-99", "evt"),  # unknown signer: rejected
        (encode(Envelope("van-01", "rec", 1, (b"not json",), 4), keys.node), "mqtt", "van-01", "rec"),  # stored, quarantined
    ]
    answers = await ingest.handle_many(group)
    # one transaction for the three stored envelopes (the rejection is recorded in its own)
    assert len(commits) == 2, commits
    assert answers[0] is None and answers[2] is None
    # one cumulative ack for van-01, in the place of its last message: both streams, the quarantined item named
    ack = answers[3]
    assert isinstance(ack, bytes)
    msg = parse_ack_message(decode(ack, lambda n: keys.hq.public_key()).items)
    assert msg.acks == {"evt": 2, "rec": 1} and [(s, q) for s, q, _ in msg.quarantined] == [("rec", 1)]
    assert [s for s, _ in await hq_store.items("van-01", "evt")] == [1, 2]
    # the same group again (a redelivery): nothing new, the same ack numbers
    again = await ingest.handle_many(group)
    assert ingest.duplicates == 3
    assert [s for s, _ in await hq_store.items("van-01", "evt")] == [1, 2]
    assert parse_ack_message(decode(again[3] or b"", lambda n: keys.hq.public_key()).items).acks == {"evt": 2, "rec": 1}


async def test_a_group_is_stored_in_one_trip_to_sqlites_thread_whatever_its_size(
        ingest: Ingest, keys: Keys, hq_store: HQStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """HQ ingest at steady state: a group's statements run in ONE hop to SQLite's thread (BEGIN, the group, COMMIT),
    not one per statement; what is stored and acknowledged is the same as statement by statement."""
    if hq_store.backend != "sqlite":
        pytest.skip("PostgreSQL has no connection thread: its statements are round trips")
    db = hq_store.db
    assert isinstance(db, aiosqlite.Connection)
    hops: list[int] = []
    real_execute = db._execute

    async def counting(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        hops[-1] += 1
        return await real_execute(fn, *args, **kwargs)

    monkeypatch.setattr(db, "_execute", counting)
    seq = {"rec": 0, "pos": 0}

    def message(van: str, stream: str) -> tuple[bytes, str, str, str]:
        seq[stream] += 1
        item = poscodec.pack_position(poscodec.Position(1_780_000_000 + seq[stream], 48.5, 32.2, 11.0, 45.0, True)) \
            if stream == "pos" else b"not json"  # a record HQ cannot apply: stored, quarantined, acknowledged
        return encode(Envelope(van, stream, seq[stream], (item,), seq["rec"] + seq["pos"]), keys.node), "mqtt", van, stream

    for size in (2, 40):
        hops.append(0)
        answers = await ingest.handle_many([message("van-01", "pos" if i % 3 else "rec") for i in range(size)])
        assert not any(isinstance(a, Exception) for a in answers)
    assert hops[0] == hops[1] <= 3, hops
    acks = parse_ack_message(decode(answers[-1] or b"", lambda n: keys.hq.public_key()).items)
    assert acks.acks == {"pos": seq["pos"], "rec": seq["rec"]}
    assert [s for s, _ in await hq_store.items("van-01", "pos")] == list(range(1, seq["pos"] + 1))
    assert len(await hq_store.quarantined()) == seq["rec"]


async def test_a_one_hop_body_may_only_await_the_database(hq_store: HQStore) -> None:
    """On SQLite the body runs on the connection's thread: anything else it awaits is refused, and nothing is kept."""
    if hq_store.backend != "sqlite":
        pytest.skip("on PostgreSQL the body runs as written")

    async def body(db: DB) -> None:
        await db.execute("INSERT INTO rejections(at, claimed_node, channel, reason) VALUES (?, ?, ?, ?)", (1.0, "x", "mqtt", "test"))
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="awaited something other than the database"):
        async with hq_transaction(hq_store.db):
            await in_one_hop(hq_store.db, body)
    assert (await hq_store.stats())["rejected"] == 0


async def test_unsynced_bookkeeping_leaves_every_other_commit_synchronous(node_db: aiosqlite.Connection) -> None:
    """The uplink's "sent" marks skip the fsync; the connection is back to synchronous=FULL right after (and on error)."""
    seen: list[int] = []

    def mark(conn: sqlite3.Connection) -> None:
        seen.append(int(conn.execute("PRAGMA synchronous").fetchone()[0]))
        conn.execute("UPDATE outbox_stream SET acked = acked")

    def fail(conn: sqlite3.Connection) -> None:
        raise RuntimeError("boom")

    await run_transaction_unsynced(node_db, mark)
    with pytest.raises(RuntimeError):
        await run_transaction_unsynced(node_db, fail)
    async with node_db.execute("PRAGMA synchronous") as cur:
        after = await cur.fetchone()
    assert seen == [1] and after is not None and after[0] == 2  # NORMAL inside, FULL again outside
