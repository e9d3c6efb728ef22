"""HQ's fast path (hq/store.py): a group's steady-state envelopes in a few multi-row statements.

The per-envelope path is the reference: a group stored with the fast path
must leave the same rows and give the same StoreResults as the same
envelopes stored one by one with the fast path off, on SQLite and on
PostgreSQL (tests/pgcluster.py).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from hq.db import DB, connect, lock_streams, transaction
from hq.store import SEQ_SPAN, HQStore
from sync import poscodec
from sync.clock import ManualClock
from sync.envelope import Envelope
from sync.ingest import StoreResult

TABLES = {
    "items": "node_id, stream, seq, payload, hlc, via, received, digest",
    "stream_state": "node_id, stream, contiguous",
    "instance_streams": "node_id, instance, stream, contiguous",
    "node_instances": "node_id, instance, ordinal, first_seen",
    "node_state": "node_id, last_seen, lat, lon, pos_time, link, trusted_time, pos_trusted, pos_mono, pos_boot",
    "records": "node_id, seq, record_id, number, service_code, created, sealed, package_code, citizen, time_trusted, boot, mono",
    "applicants": "node_id, seq, record_id, created, sealed",
    "ratings": "node_id, seq, application_id, score, at, comment_sealed",
    "quarantine": "node_id, stream, seq, reason, at",
    "class_bytes": "node_id, stream, bytes, items",
    "item_conflicts": "node_id, stream, seq, digest, at",
    "time_fixes": "node_id, boot, mono_offset, time",
}

BOOT = "0123456789abcdef0123456789abcdef"


@pytest.fixture(params=["sqlite", "postgresql"])
def targets(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path | str, Path | str]:
    """Two empty HQ databases on one backend: the fast path's and the reference's."""
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
        return server.create_database("fast"), server.create_database("slow")
    return tmp_path / "fast.db", tmp_path / "slow.db"


def app(n: int, **extra: Any) -> bytes:
    return json.dumps({"type": "application", "id": f"r-{n}", "number": f"N-{n:05d}", "service_code": "S1",
                       "created": 1_780_000_000.0 + n, **extra}).encode()


def pos(t: float, lat: float = 48.5, trusted: bool = True) -> bytes:
    return poscodec.pack_position(poscodec.Position(t, lat, 32.2, 11.0, 45.0, trusted))


def env(node: str, stream: str, first: int, *items: bytes, hlc: int = 1, instance: str = "a1") -> Envelope:
    return Envelope(node, stream, first, tuple(items), hlc, trusted_time=True, instance=instance)


async def dump(store: HQStore) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table, cols in TABLES.items():
        async with store.db.execute(f"SELECT {cols} FROM {table}") as cur:
            rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in await cur.fetchall()]
        out[table] = sorted(rows, key=repr)
    return out


async def both(targets: tuple[Path | str, Path | str]) -> tuple[HQStore, HQStore]:
    clock = ManualClock(1_790_000_000.0)
    fast, slow = await HQStore.open(targets[0], clock), await HQStore.open(targets[1], clock)
    slow.fast_path = False
    return fast, slow


async def store_both(fast: HQStore, slow: HQStore, group: list[Envelope],
                     holds: dict[int, str] | None = None) -> list[StoreResult | Exception]:
    """The group through the fast store in one call, and one by one through the reference; results must agree."""
    holds = holds or {}
    got = await fast.store_envelopes([(e, "mqtt", holds.get(i)) for i, e in enumerate(group)])
    want = [(await slow.store_envelopes([(e, "mqtt", holds.get(i))]))[0] for i, e in enumerate(group)]
    assert [repr(r) for r in got] == [repr(r) for r in want]
    return got


async def test_a_mixed_group_leaves_what_one_by_one_storing_leaves(targets: tuple[Path | str, Path | str]) -> None:
    fast, slow = await both(targets)
    try:
        # what HQ held before: each van's instance known, van-06 with a conflicting resend that caps its acks
        before = [env("van-01", "rec", 1, app(1), app(2)), env("van-01", "pos", 1, pos(1_780_000_001)),
                  env("van-02", "rec", 1, app(21)), env("van-02", "pos", 1, pos(1_780_000_001, trusted=False)),
                  env("van-04", "rec", 1, app(41)), env("van-05", "rec", 1, app(51)),
                  env("van-06", "rec", 1, app(61), app(62)), env("van-06", "rec", 2, app(99)),
                  env("van-07", "pos", 1, pos(1_780_000_050)), env("van-08", "rec", 1, app(81))]
        await store_both(fast, slow, before)
        group = [
            # van-01: all fast; an applicant, a rating, a handover, thinned positions and a position older than the newest
            env("van-01", "rec", 3, app(3, package="P1", citizen=7)),
            env("van-01", "pos", 2, pos(1_780_000_002), b"", pos(1_780_000_004)),
            env("van-01", "rec", 4, json.dumps({"type": "applicant", "id": "a-1", "created": 1.5}).encode(),
                json.dumps({"type": "rating", "application_id": "r-3", "score": 5, "at": 2.5, "comment_sealed": "x"}).encode(),
                json.dumps({"type": "handover", "id": "h-1", "application_id": "r-1", "fields": {}, "wrap_hq": "w"}).encode()),
            env("van-01", "pos", 5, pos(1_780_000_003)),
            # van-02: a malformed record sends its whole rec stream slow; its time fix sends its positions slow
            env("van-02", "rec", 2, app(22)),
            env("van-02", "rec", 3, b"not json", app(23)),
            env("van-02", "rec", 5, app(25)),
            env("van-02", "evt", 1, json.dumps({"type": "time_fix", "boot": BOOT, "mono": 10.0, "time": 1_780_000_100.0}).encode()),
            env("van-02", "pos", 2, pos(1_780_000_005)),
            # van-03: a van never seen (its instance is registered on the slow path), then a re-flash of van-05
            env("van-03", "rec", 1, app(31)),
            env("van-03", "pos", 1, pos(1_780_000_009)),
            env("van-05", "rec", 1, app(55), instance="b2"),
            env("van-05", "rec", 2, app(52)),  # the old instance still sending: no longer the newest
            # van-04: held (an HLC HQ refuses); van-06: fast, capped below its conflict; van-07 and van-08: a gap
            env("van-04", "rec", 2, app(42)),
            env("van-06", "rec", 3, app(63)),
            env("van-07", "pos", 3, pos(1_780_000_060)),
            env("van-08", "rec", 2, app(82)),
            env("van-08", "rec", 4, app(84)),
            env("van-01", "pos", 6, pos(1_780_000_004, lat=49.0)),  # as new as the newest: the later one is shown
        ]
        results = await store_both(fast, slow, group, holds={13: "hlc too far ahead"})
        assert fast.fast_envelopes == 6  # van-01's five and van-06's one; the rest the reference way
        assert await dump(fast) == await dump(slow)
        assert results[0] == StoreResult(3, new=1)
        assert isinstance(results[14], StoreResult) and results[14].held_back and results[14].contiguous == 1
        quarantined = {(r[0], r[1], r[2]) for r in (await dump(fast))["quarantine"]}
        assert ("van-02", "rec", 3) in quarantined and ("van-04", "rec", 2) in quarantined
        # after the re-flash each of van-05's instances goes fast: only the newest one's moves stream_state
        assert await store_both(fast, slow, [env("van-05", "rec", 3, app(53))]) == [StoreResult(3, new=1)]
        assert [r for r in (await dump(fast))["stream_state"] if r[0] == "van-05"] == [("van-05", "rec", SEQ_SPAN + 1)]
        results = await store_both(fast, slow, [env("van-05", "rec", 2, app(56), instance="b2"),
                                                env("van-05", "pos", 1, pos(1_780_000_070), instance="b2")])
        assert results == [StoreResult(2, new=1), StoreResult(1, new=1)]
        assert fast.fast_envelopes == 6 + 3
        state = await dump(fast)
        assert state == await dump(slow)
        assert [r for r in state["stream_state"] if r[0] == "van-05"] == [("van-05", "pos", SEQ_SPAN + 1), ("van-05", "rec", SEQ_SPAN + 2)]
    finally:
        await fast.close()
        await slow.close()


async def test_steady_state_groups_match_the_reference_and_move_the_fleet_to_the_newest(targets: tuple[Path | str, Path | str]) -> None:
    fast, slow = await both(targets)
    try:
        await store_both(fast, slow, [env(f"van-{v:02d}", s, 1, app(v) if s == "rec" else pos(1_780_000_000 + v))
                                      for v in range(1, 6) for s in ("rec", "pos")])
        for step in range(2, 6):
            group = [env(f"van-{v:02d}", s, step, app(100 * v + step) if s == "rec" else pos(1_780_000_000 + 10 * step + v, lat=48 + step))
                     for v in range(1, 6) for s in ("rec", "pos")]
            results = await store_both(fast, slow, group)
            assert results == [StoreResult(step, new=1)] * len(group)
        assert fast.fast_envelopes == 40
        state = await dump(fast)
        assert state == await dump(slow)
        assert {r[0]: r[2] for r in state["node_state"]} == {f"van-{v:02d}": 53.0 for v in range(1, 6)}
        assert {r[0]: r[3] for r in state["instance_streams"] if r[2] == "rec"} == {f"van-{v:02d}": 5 for v in range(1, 6)}
    finally:
        await fast.close()
        await slow.close()


async def test_a_malformed_item_is_quarantined_and_its_neighbours_stored(targets: tuple[Path | str, Path | str]) -> None:
    fast, slow = await both(targets)
    try:
        await store_both(fast, slow, [env("van-01", "rec", 1, app(1)), env("van-02", "rec", 1, app(20))])
        # valid JSON that passes every check but the database's: NaN (NOT NULL on SQLite) and NUL (PostgreSQL's TEXT);
        # the fast statements fail, the group goes again one by one and only that item is quarantined
        hostile = b'{"type": "application", "id": "r-x", "number": "N\\u0000", "service_code": "S1", "created": NaN}'
        group = [env("van-01", "rec", 2, app(2), hostile, app(4)), env("van-02", "rec", 2, app(21))]
        results = await store_both(fast, slow, group)
        assert isinstance(results[0], StoreResult) and (results[0].contiguous, results[0].new) == (4, 3)
        assert [q[0] for q in results[0].quarantined] == [3] and results[0].quarantined[0][1].startswith("cannot apply")
        assert results[1] == StoreResult(2, new=1)
        assert fast.fast_envelopes == 0  # tried, failed, rolled back: stored one by one
        state = await dump(fast)
        assert state == await dump(slow)
        assert {r[2] for r in state["records"]} == {"r-1", "r-2", "r-4", "r-20", "r-21"}
        assert [(r[0], r[2]) for r in state["quarantine"]] == [("van-01", 3)]
        assert [r[2] for r in state["items"] if r[0] == "van-01"] == [1, 2, 3, 4]
        # a record that fails to parse never reaches the fast statements: quarantined by the slow path, stream goes on
        results = await store_both(fast, slow, [env("van-01", "rec", 5, b"{", app(6)), env("van-02", "rec", 3, app(22))])
        assert [r.contiguous for r in results if isinstance(r, StoreResult)] == [6, 3]
        assert fast.fast_envelopes == 1
        assert await dump(fast) == await dump(slow)
    finally:
        await fast.close()
        await slow.close()


async def test_a_gap_then_its_fill(targets: tuple[Path | str, Path | str]) -> None:
    fast, slow = await both(targets)
    try:
        await store_both(fast, slow, [env("van-01", "rec", 1, app(1)), env("van-01", "pos", 1, pos(1_780_000_001))])
        # 3 arrives before 2: held, not contiguous (the slow path: a gap)
        results = await store_both(fast, slow, [env("van-01", "rec", 3, app(3)), env("van-01", "pos", 2, pos(1_780_000_002))])
        assert results == [StoreResult(1, new=1), StoreResult(2, new=1)]
        # 2 fills the gap: the held 3 is next to it, so the ack jumps to 3 (the slow path's look at what is held)
        results = await store_both(fast, slow, [env("van-01", "rec", 2, app(2)), env("van-01", "pos", 3, pos(1_780_000_003))])
        assert results == [StoreResult(3, new=1), StoreResult(3, new=1)]
        # and after the fill, the stream is steady again: fast
        results = await store_both(fast, slow, [env("van-01", "rec", 4, app(4)), env("van-01", "rec", 5, app(5))])
        assert results == [StoreResult(4, new=1), StoreResult(5, new=1)]
        assert fast.fast_envelopes == 4  # the positions and the last two; the gap and its fill the reference way
        assert await dump(fast) == await dump(slow)
    finally:
        await fast.close()
        await slow.close()


async def test_a_resend_of_a_held_envelope_in_a_group_with_new_ones(targets: tuple[Path | str, Path | str]) -> None:
    fast, slow = await both(targets)
    try:
        await store_both(fast, slow, [env("van-01", "rec", 1, app(1), app(2)), env("van-02", "rec", 1, app(20))])
        group = [env("van-01", "rec", 1, app(1), app(2)),  # the van did not get the ack: sent again
                 env("van-01", "rec", 3, app(3)), env("van-02", "rec", 2, app(21)), env("van-01", "rec", 4, app(4))]
        results = await store_both(fast, slow, group)
        assert results == [StoreResult(2, duplicates=2), StoreResult(3, new=1), StoreResult(2, new=1), StoreResult(4, new=1)]
        assert fast.fast_envelopes == 1  # van-02's; van-01's stream holds a resend: the reference way, all of it
        state = await dump(fast)
        assert state == await dump(slow)
        assert sorted(r[2] for r in state["records"]) == ["r-1", "r-2", "r-20", "r-21", "r-3", "r-4"]
        assert [(r[0], r[1], r[3]) for r in state["class_bytes"]] == [("van-01", "rec", 4), ("van-02", "rec", 2)]
    finally:
        await fast.close()
        await slow.close()


async def test_a_group_holds_every_stream_lock_it_took_in_one_statement(pg_url: str) -> None:
    """lock_streams: all the group's other (node, stream) locks in one statement; each one blocks another worker until COMMIT."""
    a, b, watcher = await connect(pg_url), await connect(pg_url), await connect(pg_url)

    async def count(sql: str) -> int:
        async with watcher.execute(sql) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    try:
        async with transaction(a, "van-01/pos"):
            await lock_streams(a, ["van-02/pos", "van-03/rec", "van-04/rec"])  # three keys: padded to four with the last again
            assert await count("SELECT COUNT(DISTINCT objid) FROM pg_locks WHERE locktype = 'advisory' AND granted") == 4
            await asyncio.wait_for(_enter_and_leave(b, "van-05/pos"), 60)  # another van's stream goes ahead
            blocked = asyncio.create_task(_enter_and_leave(b, "van-03/rec"))
            for _ in range(300):
                if await count("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") == 1:
                    break
                await asyncio.sleep(0.05)
            assert not blocked.done()
        await blocked  # A committed: B gets the lock
    finally:
        for c in (a, b, watcher):
            await c.close()


async def _enter_and_leave(db: DB, key: str) -> None:
    async with transaction(db, key):
        pass
