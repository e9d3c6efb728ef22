"""HQ's database: every item exactly once, keyed by (node, stream, seq).

``store_envelope`` commits the items and returns the highest sequence
number up to which HQ holds everything without a gap; only that number is
acknowledged, so a lost batch is resent instead of skipped.

An item HQ can never apply (malformed JSON, unknown schema, anything that
raises while it is applied) is still stored and counted as held, so it does
not block the stream behind it, but it goes to ``quarantine`` instead of the
projections; the ack tells the node.  Each envelope is applied under one
SAVEPOINT; if anything fails, each item is applied again under its own, and
only the failing ones are quarantined.

Node instances: a van names the database it sends from (``Envelope.instance``,
chosen when that database was made).  Each instance of a van numbers its
streams from 1 again, so HQ gives each instance its own range of the ``seq``
column: instance number k (in order of first sight; a van's pre-instance
data is k = 0) stores its seq n as ``k * SEQ_SPAN + n``.  Projections keyed by
(node, seq) therefore never mix two instances, and acks speak the van's own
numbers.  Each item's SHA-256 is kept: a resend whose content differs from
what HQ holds under the same key is a conflict, quarantined, alerted and
never acknowledged (the van keeps it).

Fast path: a van online sends one position or one application per message,
and on PostgreSQL every statement is a network round trip, so the ~10
statements per envelope above were what sized HQ.  ``store_envelopes``
therefore stores a group's steady-state envelopes together, a fixed handful
of multi-row statements per group: stream pos or rec, no hold, an instance
HQ already knows, every item parsed and checked first, continuing its
stream's contiguous run with nothing of it held yet.  Everything else goes
the per-envelope way above (the reference the fast path is tested
against): status, evt and audit; a gap, its fill or a resend; an item that
would be quarantined; a re-flash (the van whole); positions of a van whose
heartbeat or time fix is in the same group.  A (node, stream) goes all one
way, so its order holds; if a fast statement fails, the fast envelopes go
again the per-envelope way, item by item if needed.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync.clock import Clock
from sync import poscodec, safejson
from sync.auditchain import GENESIS
from sync.envelope import MAX_SEQ, Envelope
from sync.errors import EnvelopeError, SyncError
from sync.linkmgr import unpack_heartbeat
from sync.ingest import StoreResult

from . import audit, timefix
from .db import DB, backend, connect, fetch_all, in_one_hop, lock_streams, migrate, transaction

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
CREATE TABLE items (
    node_id TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL,
    payload {BLOB} NOT NULL, hlc BIGINT NOT NULL, via TEXT NOT NULL, received DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node_id, stream, seq)
) {WITHOUT_ROWID};
CREATE TABLE stream_state (
    node_id TEXT NOT NULL, stream TEXT NOT NULL, contiguous BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (node_id, stream)
) {WITHOUT_ROWID};
CREATE TABLE node_state (
    node_id TEXT PRIMARY KEY, last_seen DOUBLE PRECISION, lat DOUBLE PRECISION, lon DOUBLE PRECISION, pos_time DOUBLE PRECISION,
    link TEXT, status TEXT, status_at DOUBLE PRECISION
);
CREATE TABLE records (
    node_id TEXT NOT NULL, seq BIGINT NOT NULL, record_id TEXT NOT NULL UNIQUE, number TEXT NOT NULL,
    service_code TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, sealed TEXT NOT NULL,
    PRIMARY KEY (node_id, seq)
);
CREATE TABLE rejections (
    id {ID}, at DOUBLE PRECISION NOT NULL, claimed_node TEXT, channel TEXT, reason TEXT
);
""",
    # 2: quarantine of items HQ permanently refuses; per-class byte accounting; command log
    """
CREATE TABLE quarantine (
    node_id TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, reason TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node_id, stream, seq)
) {WITHOUT_ROWID};
CREATE TABLE class_bytes (
    node_id TEXT NOT NULL, stream TEXT NOT NULL, bytes BIGINT NOT NULL DEFAULT 0, items BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (node_id, stream)
) {WITHOUT_ROWID};
CREATE TABLE down_seq (node_id TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (node_id, stream)) {WITHOUT_ROWID};
ALTER TABLE node_state ADD COLUMN depth TEXT;
ALTER TABLE node_state ADD COLUMN trusted_time BIGINT
""",
    # 3: applicants (sealed) and citizens' ratings, as the van sends them
    """
CREATE TABLE applicants (
    node_id TEXT NOT NULL, seq BIGINT NOT NULL, record_id TEXT NOT NULL UNIQUE, created DOUBLE PRECISION NOT NULL, sealed TEXT NOT NULL,
    PRIMARY KEY (node_id, seq)
);
CREATE TABLE ratings (
    node_id TEXT NOT NULL, seq BIGINT NOT NULL, application_id TEXT NOT NULL, score BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL,
    comment_sealed TEXT, PRIMARY KEY (node_id, seq)
);
ALTER TABLE records ADD COLUMN package_code TEXT
""",
    # 4: node instances (re-flashed vans), item digests, conflicting resends
    """
CREATE TABLE node_instances (
    node_id TEXT NOT NULL, instance TEXT NOT NULL, ordinal BIGINT NOT NULL, first_seen DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node_id, instance), UNIQUE (node_id, ordinal)
);
INSERT INTO node_instances(node_id, instance, ordinal, first_seen) SELECT node_id, '', 0, 0 FROM node_state;
CREATE TABLE instance_streams (
    node_id TEXT NOT NULL, instance TEXT NOT NULL, stream TEXT NOT NULL, contiguous BIGINT NOT NULL,
    PRIMARY KEY (node_id, instance, stream)
);
INSERT INTO instance_streams(node_id, instance, stream, contiguous) SELECT node_id, '', stream, contiguous FROM stream_state;
ALTER TABLE items ADD COLUMN digest {BLOB};
CREATE TABLE item_conflicts (
    node_id TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, digest {BLOB} NOT NULL, at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node_id, stream, seq, digest)
)
""",
    # 5: the van's per-day number of the person an application is for (sync/figures.py: citizens served)
    """
ALTER TABLE records ADD COLUMN citizen TEXT
""",
]

# Each node instance stores its streams in its own range of HQ's seq column (see the module doc).
SEQ_SPAN = MAX_SEQ + 1

# Record schemas HQ knows how to project; anything else is quarantined.
RECORD_TYPES = frozenset({"application", "applicant", "rating", "handover"})  # handover: folded by hq/appstatus.py

POS_STRUCT = struct.Struct(">dii")


def _text(value: object) -> str | None:
    """An optional TEXT column's value typed as the column is (what SQLite's TEXT affinity would store)."""
    return None if value is None else str(value)


class _BatchFailed(Exception):
    """Applying an envelope's new items together failed (the cause is chained): the envelope goes again item by item."""


@dataclass
class _Fast:
    """An envelope for the fast path: its projection rows, parsed and checked before anything is written."""

    index: int  # in the group
    env: Envelope
    via: str
    rows: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)  # (table, (item's index, values...))
    position: tuple[Any, ...] | None = None  # its newest position as node_state takes it
    ordinal: int = -1  # its instance's; -1 until the group's check passes
    newest: bool = False
    first_conflict: int | None = None


# Statement sizes are powers of two (each text repeats: PostgreSQL prepares it once), at most this many rows or keys.
_MAX_ROWS = 256
_KEYS_PER_QUERY = 64


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


@functools.lru_cache(maxsize=256)
def _values_sql(head: str, width: int, n: int, tail: str) -> str:
    row = "(" + ", ".join(["?"] * width) + ")"
    return f"{head} VALUES {', '.join([row] * n)}{tail}"


async def _insert_rows(db: DB, head: str, rows: list[tuple[Any, ...]], tail: str = "") -> None:
    """``head VALUES (...), (...) tail`` for every row, in a few statements of power-of-two sizes (at most 256 rows:
    far below SQLite's 32766 parameters).  Rows of an upsert must not touch one key twice (PostgreSQL refuses)."""
    i = 0
    while i < len(rows):
        n = min(_MAX_ROWS, 1 << ((len(rows) - i).bit_length() - 1))
        await db.execute(_values_sql(head, len(rows[i]), n, tail), [v for r in rows[i:i + n] for v in r])
        i += n


@functools.lru_cache(maxsize=256)
def _padded_sql(table: str, columns: str, n: int, tail: str) -> str:
    names, types = zip(*(c.strip().split(" ", 1) for c in columns.split(",")), strict=True)
    row = "(" + ", ".join(f"CAST(? AS {t})" for t in types) + ")"
    picks = ", ".join(f"v.column{k}" for k in range(1, len(names) + 1))
    # WHERE: drops the padding, and is what SQLite needs to read ON CONFLICT after INSERT ... SELECT as the upsert
    return (f"INSERT INTO {table}({', '.join(names)}) SELECT {picks} FROM (VALUES {', '.join([row] * n)}) AS v"
            f" WHERE v.column1 IS NOT NULL{tail}")


async def _insert_padded(db: DB, table: str, columns: str, rows: list[tuple[Any, ...]], tail: str = "") -> None:
    """``INSERT INTO table SELECT`` every row from a VALUES list padded with NULL rows to a power of two: ONE statement
    (per 256 rows) whose text repeats.  ``columns``: "name TYPE, ..." (TEXT, BIGINT, DOUBLE PRECISION: each parameter is
    cast, PostgreSQL types a VALUES list from it); the first column is never NULL in a real row."""
    width = columns.count(",") + 1
    for start in range(0, len(rows), _MAX_ROWS):
        part = rows[start:start + _MAX_ROWS]
        n = _pow2(len(part))
        await db.execute(_padded_sql(table, columns, n, tail), [v for r in part for v in r] + [None] * (width * (n - len(part))))


@functools.lru_cache(maxsize=16)
def _check_sql(n: int) -> str:
    """Per (node, instance, stream) key of the fast path: its contiguous, first conflict, the van's newest instance, the first held
    item in the run's range (its first to one past its last).  The keys are a VALUES list the subqueries correlate with
    (columnN: both engines' names for a VALUES list's columns), so PostgreSQL plans four subqueries, not four per key."""
    big = "CAST(? AS BIGINT)"
    row = f"({big}, ?, ?, ?, {big}, {big}, {big}, {big})"
    return ("SELECT v.column1, (SELECT s.contiguous FROM instance_streams s WHERE s.node_id = v.column2 AND s.instance = v.column3"
            " AND s.stream = v.column4),"
            " (SELECT MIN(c.seq) FROM item_conflicts c WHERE c.node_id = v.column2 AND c.stream = v.column4 AND c.seq > v.column5"
            " AND c.seq < v.column6),"
            " (SELECT MAX(m.ordinal) FROM node_instances m WHERE m.node_id = v.column2),"
            " (SELECT MIN(i.seq) FROM items i WHERE i.node_id = v.column2 AND i.stream = v.column4 AND i.seq BETWEEN v.column7 AND v.column8)"
            f" FROM (VALUES {', '.join([row] * n)}) AS v")


async def _select_in(db: DB, head: str, values: list[str]) -> list[tuple[Any, ...]]:
    """``head (?, ...)`` over the values, padded to a power of two (the text repeats)."""
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(values), _KEYS_PER_QUERY):
        part = values[start:start + _KEYS_PER_QUERY]
        part += part[-1:] * (_pow2(len(part)) - len(part))
        rows += await fetch_all(db, f"{head} ({', '.join(['?'] * len(part))})", part)
    return rows


class HQStore:
    # False: every envelope through the per-envelope path (the reference the fast path is tested against)
    fast_path = True

    def __init__(self, db: DB, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        # Vans HQ still listens to (enrolled, not revoked); the app ties it to the key directory.
        self.node_active: Callable[[str], bool] = lambda _node: True
        self._ignored_status: set[str] = set()
        self.fast_envelopes = 0  # how many envelopes the fast path stored (tests and benches look)
        self._ordinals: dict[tuple[str, str], int] = {}  # (node, instance) -> ordinal, as committed (never changes once given)

    @property
    def backend(self) -> str:
        return backend(self.db)

    @classmethod
    async def open(cls, target: Path | str, clock: Clock) -> HQStore:
        """``target``: the SQLite file, or a ``postgresql://`` URL (see hq/db.py)."""
        db = await connect(target)
        try:
            await migrate(db, "hq", MIGRATIONS)
            await migrate(db, "hq_audit", audit.MIGRATIONS)
            await timefix.create_schema(db)
        except BaseException:
            await db.close()
            raise
        return cls(db, clock)

    async def close(self) -> None:
        await self.db.close()

    async def store_envelope(self, env: Envelope, via: str, hold: str | None = None) -> StoreResult:
        """Store the items idempotently; ``hold``: quarantine each new item with this reason instead of applying it.

        Returns what HQ now holds in the van's own numbering (``contiguous``), capped below any
        item whose resend conflicts with what HQ holds: that one is never acknowledged.
        """
        # One writer per (node, stream): on PostgreSQL, workers ingest other vans in parallel.
        (res,) = await self.store_envelopes([(env, via, hold)])
        if isinstance(res, Exception):
            raise res
        return res

    async def store_envelopes(self, group: list[tuple[Envelope, str, str | None]]) -> list[StoreResult | Exception]:
        """``store_envelope`` for envelopes that arrived together: ONE transaction, one COMMIT (group commit).

        The fast path (module doc) stores the steady-state envelopes together; each
        other envelope runs under its own SAVEPOINT, in arrival order (so two of one
        (node, stream) see each other, as in separate transactions): one that
        fails is rolled back alone and its exception returned in its place (not
        acknowledged: the van resends), the others commit.  On PostgreSQL the
        transaction holds the write lock of every (node, stream) in the group,
        taken in sorted order so that two workers never wait on each other.
        """
        keys = sorted({f"{env.node_id}/{env.stream}" for env, _, _ in group})
        results: list[StoreResult | Exception] = []
        async with transaction(self.db, keys[0]):
            await lock_streams(self.db, keys[1:])
            now = self.clock.now()
            # on SQLite the group's statements run in one trip to the connection's thread (BEGIN, this, COMMIT)
            await in_one_hop(self.db, lambda db: self._store_group(db, group, now, results))
        return results

    async def _store_group(self, db: DB, group: list[tuple[Envelope, str, str | None]], now: float,
                           results: list[StoreResult | Exception]) -> None:
        out: list[StoreResult | Exception | None] = [None] * len(group)
        fast = await self._plan(db, group, now) if self.fast_path else []
        taken = {f.index for f in fast}
        # the slow path first, in arrival order; the fast one after it writes each van's node_state
        # from its last envelope of the group, so the end state is the one arrival order gives
        for i, (env, via, hold) in enumerate(group):
            if i not in taken:
                out[i] = await self._store_slow(db, env, via, hold, now)
        if fast:
            await db.execute("SAVEPOINT fast")
            try:
                for f, res in zip(fast, await self._store_fast(db, group, fast, now), strict=True):
                    out[f.index] = res
                self.fast_envelopes += len(fast)
            except Exception as exc:  # noqa: BLE001 - the same envelopes again through the reference path, item by item if needed
                await db.execute("ROLLBACK TO SAVEPOINT fast")
                log.warning("fast path of %d envelopes failed (%s): storing them one by one", len(fast), type(exc).__name__)
                for f in fast:
                    out[f.index] = await self._store_slow(db, f.env, f.via, None, now)
            await db.execute("RELEASE SAVEPOINT fast")
        results.extend(r for r in out if r is not None)

    async def _store_slow(self, db: DB, env: Envelope, via: str, hold: str | None, now: float) -> StoreResult | Exception:
        """One envelope under its own SAVEPOINT (the reference behaviour); its exception if it cannot be stored."""
        await db.execute("SAVEPOINT envelope")
        res: StoreResult | Exception
        try:
            try:
                res = await self._store_in_transaction(db, env, via, hold, now, one_by_one=False)
            except _BatchFailed as failed:
                # the envelope again from its savepoint, each new item under its own: only the failing ones are quarantined
                await db.execute("ROLLBACK TO SAVEPOINT envelope")
                log.warning("batch %s/%s from %d failed (%s): applying item by item", env.node_id, env.stream, env.first_seq,
                            type(failed.__cause__).__name__)
                res = await self._store_in_transaction(db, env, via, hold, now, one_by_one=True)
        except Exception as exc:  # noqa: BLE001 - returned for this envelope (logged by ingest); the group commits
            await db.execute("ROLLBACK TO SAVEPOINT envelope")
            res = exc
        await db.execute("RELEASE SAVEPOINT envelope")
        return res

    # -- the fast path: a group's steady-state envelopes in a few multi-row statements ------------

    async def _plan(self, db: DB, group: list[tuple[Envelope, str, str | None]], now: float) -> list[_Fast]:
        """The envelopes the fast path can store exactly as the slow path would, in arrival order.

        A (node, stream) goes all fast or all slow, so its order holds.  Fast: stream pos or rec, no
        hold, a known instance (one per (node, stream) in the group), every item parsed and valid
        without a lookup, the envelopes continuing the stream's contiguous run without a gap, and
        nothing of theirs (nor the item after the last) already held.
        """
        by_key: dict[tuple[str, str], list[int]] = {}
        for i, (env, _, _) in enumerate(group):
            by_key.setdefault((env.node_id, env.stream), []).append(i)
        unknown = {(env.node_id, env.instance) for env, _, _ in group if (env.node_id, env.instance) not in self._ordinals}
        if unknown:
            # read committed rows only (nothing of this group is written yet): an ordinal never changes once given
            for node_id, instance, ordinal in await _select_in(
                    db, "SELECT node_id, instance, ordinal FROM node_instances WHERE node_id IN", sorted({n for n, _ in unknown})):
                self._ordinals[(str(node_id), str(instance))] = int(ordinal)
            unknown = {k for k in unknown if k not in self._ordinals}
        # a van registering an instance in this group (a re-flash) goes the slow way whole: which instance is newest changes
        slow_nodes = {n for n, _ in unknown}
        # status heartbeats and time fixes move the fleet position too: that van's positions keep arrival order, slowly
        moves_position = {env.node_id for env, _, _ in group if env.stream in ("status", "evt")}
        candidates: list[_Fast] = []
        keys: list[tuple[list[_Fast], int]] = []
        for (node_id, stream), idx in by_key.items():
            if stream not in ("pos", "rec") or node_id in slow_nodes or (stream == "pos" and node_id in moves_position):
                continue
            parsed = [self._parse(i, *group[i], now) for i in idx]
            ok = [f for f in parsed if f is not None]
            if len(ok) < len(parsed) or len({f.env.instance for f in ok}) > 1 or any(
                    b.env.first_seq != a.env.last_seq + 1 for a, b in itertools.pairwise(ok)):
                continue
            keys.append((ok, self._ordinals[(node_id, ok[0].env.instance)]))
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            part = keys[start:start + _KEYS_PER_QUERY]
            params: list[Any] = []
            for n, (run, ordinal) in enumerate(part):
                env, last, base = run[0].env, run[-1].env, ordinal * SEQ_SPAN
                params += [n, env.node_id, env.instance, env.stream, base, base + SEQ_SPAN, base + env.first_seq, base + last.last_seq + 1]
            width = len(params) // len(part)
            rows = await fetch_all(db, _check_sql(_pow2(len(part))), params + params[-width:] * (_pow2(len(part)) - len(part)))
            for n, contiguous, first_conflict, newest, held in rows:
                run, ordinal = part[int(n)]
                if held is not None or run[0].env.first_seq != (0 if contiguous is None else int(contiguous)) + 1:
                    continue  # a resend, a gap or a gap's fill: the slow path's item-by-item look at what is held
                for f in run:
                    f.ordinal, f.newest, f.first_conflict = ordinal, int(newest) == ordinal, first_conflict
            candidates += [f for run, _ in part for f in run if f.ordinal >= 0]
        candidates.sort(key=lambda f: f.index)
        return candidates

    @staticmethod
    def _parse(index: int, env: Envelope, via: str, hold: str | None, now: float) -> _Fast | None:
        """The envelope's projection rows as ``_apply`` would write them, or None: the slow path decides."""
        if hold is not None or not env.items:
            return None
        f = _Fast(index, env, via)
        try:
            if env.stream == "pos":
                newest = max((i for i, item in enumerate(env.items) if item), default=None)
                for i, item in enumerate(env.items):
                    if item:
                        p = poscodec.unpack_position(item)
                        if i == newest:
                            if not p.trusted_time and p.mono is not None and p.boot is not None:
                                return None  # its time may be corrected by its boot's fix: looked up slowly
                            pos_time, trusted = (p.time, p.trusted_time) if timefix.plausible(p.time) else (now, False)
                            f.position = (p.lat, p.lon, pos_time, int(trusted), None if trusted else p.mono,
                                          None if trusted else p.boot)
                return f
            for n, item in enumerate(env.items):
                doc = safejson.loads(item)
                if not isinstance(doc, dict):
                    return None
                kind = doc.get("type", "application")
                if kind not in RECORD_TYPES:
                    return None
                if kind == "application":
                    clock = doc.get("clock")
                    if isinstance(clock, dict) and not clock.get("trusted", True):
                        return None  # its time waits for its boot's fix (hq/timefix.py)
                    f.rows.append(("records", (n, str(doc["id"]), str(doc["number"]), str(doc["service_code"]), float(doc["created"]),
                                               item.decode(), _text(doc.get("package")),
                                               None if doc.get("citizen") is None else str(doc["citizen"])[:40])))
                elif kind == "applicant":
                    f.rows.append(("applicants", (n, str(doc["id"]), float(doc["created"]), item.decode())))
                elif kind == "handover":
                    if not (isinstance(doc["id"], str) and isinstance(doc["application_id"], str) and isinstance(doc["fields"], dict)
                            and isinstance(doc["wrap_hq"], str)):
                        return None
                else:
                    score = int(doc["score"])
                    if not 1 <= score <= 5:
                        return None
                    f.rows.append(("ratings", (n, str(doc["application_id"]), score, float(doc["at"]), _text(doc.get("comment_sealed")))))
        except Exception:  # noqa: BLE001 - whatever _apply would quarantine is for the slow path to quarantine
            return None
        return f

    async def _store_fast(self, db: DB, group: list[tuple[Envelope, str, str | None]], fast: list[_Fast],
                          now: float) -> list[StoreResult]:
        """Store the planned envelopes with one multi-row statement per table; their results in the same order."""
        items: list[tuple[Any, ...]] = []
        projections: dict[str, list[tuple[Any, ...]]] = {"records": [], "applicants": [], "ratings": []}
        positions: dict[str, tuple[Any, ...]] = {}
        sizes: dict[tuple[str, str], list[int]] = {}
        runs: dict[tuple[str, str, str], _Fast] = {}
        for f in fast:
            env, base = f.env, f.ordinal * SEQ_SPAN
            for n, item in enumerate(env.items):
                items.append((env.node_id, env.stream, base + env.first_seq + n, item, env.hlc, f.via, now, hashlib.sha256(item).digest()))
            for table, (n, *values) in f.rows:
                projections[table].append((env.node_id, base + env.first_seq + n, *values))
            # only the newest position moves the fleet map: the latest of the highest time, as the slow path's chain of upserts ends
            old = positions.get(env.node_id)
            if f.position is not None and (old is None or f.position[2] >= old[3]):
                positions[env.node_id] = (env.node_id, *f.position)
            size = sizes.setdefault((env.node_id, env.stream), [0, 0])
            size[0] += sum(len(item) for item in env.items)
            size[1] += len(env.items)
            runs[(env.node_id, env.instance, env.stream)] = f  # the newest of the run
        # node_state says what the van's last envelope of the group said (whichever path stored it); its rows
        # in node order, as every worker writes them, so two workers' groups do not wait on each other in a circle
        seen = {env.node_id: (env.node_id, now, via, int(env.trusted_time)) for env, via, _ in group}
        await _insert_rows(db, "INSERT INTO items(node_id, stream, seq, payload, hlc, via, received, digest)", items)
        # one row per van: what its last envelope said, and its newest position if the group has one (a van without
        # keeps its position: NULL never moves it, as the slow path writes no position then)
        moves = "excluded.pos_time IS NOT NULL AND (node_state.pos_time IS NULL OR excluded.pos_time >= node_state.pos_time)"
        await _insert_padded(
            db, "node_state", "node_id TEXT, last_seen DOUBLE PRECISION, link TEXT, trusted_time BIGINT, lat DOUBLE PRECISION,"
            " lon DOUBLE PRECISION, pos_time DOUBLE PRECISION, pos_trusted BIGINT, pos_mono DOUBLE PRECISION, pos_boot BIGINT",
            [(*seen[n], *(positions[n][1:] if n in positions else (None,) * 6)) for n in sorted({f.env.node_id for f in fast})],
            " ON CONFLICT(node_id) DO UPDATE SET last_seen = excluded.last_seen, link = excluded.link, trusted_time = excluded.trusted_time, "
            + ", ".join(f"{c} = CASE WHEN {moves} THEN excluded.{c} ELSE node_state.{c} END"
                        for c in ("lat", "lon", "pos_time", "pos_trusted", "pos_mono", "pos_boot")))
        await _insert_padded(db, "records", "node_id TEXT, seq BIGINT, record_id TEXT, number TEXT, service_code TEXT, created DOUBLE PRECISION,"
                             " sealed TEXT, package_code TEXT, citizen TEXT", projections["records"], " ON CONFLICT DO NOTHING")
        await _insert_padded(db, "applicants", "node_id TEXT, seq BIGINT, record_id TEXT, created DOUBLE PRECISION, sealed TEXT",
                             projections["applicants"], " ON CONFLICT DO NOTHING")
        await _insert_padded(db, "ratings", "node_id TEXT, seq BIGINT, application_id TEXT, score BIGINT, at DOUBLE PRECISION, comment_sealed TEXT",
                             projections["ratings"], " ON CONFLICT DO NOTHING")
        await _insert_padded(db, "class_bytes", "node_id TEXT, stream TEXT, bytes BIGINT, items BIGINT", [(*k, *v) for k, v in sorted(sizes.items())],
                             " ON CONFLICT(node_id, stream) DO UPDATE SET bytes = class_bytes.bytes + excluded.bytes,"
                             " items = class_bytes.items + excluded.items")
        await _insert_padded(db, "instance_streams", "node_id TEXT, instance TEXT, stream TEXT, contiguous BIGINT",
                             [(*k, f.env.last_seq) for k, f in sorted(runs.items())],
                             " ON CONFLICT(node_id, instance, stream) DO UPDATE SET contiguous = excluded.contiguous")
        # readers of stream_state (event folds) follow the van's newest instance, in HQ's seq numbers
        await _insert_padded(db, "stream_state", "node_id TEXT, stream TEXT, contiguous BIGINT",
                             [(f.env.node_id, f.env.stream, f.ordinal * SEQ_SPAN + f.env.last_seq) for _, f in sorted(runs.items()) if f.newest],
                             " ON CONFLICT(node_id, stream) DO UPDATE SET contiguous = excluded.contiguous")
        out = []
        for f in fast:
            res = StoreResult(f.env.last_seq, new=len(f.env.items))
            base = f.ordinal * SEQ_SPAN
            if f.first_conflict is not None and int(f.first_conflict) - base - 1 < res.contiguous:
                res.contiguous, res.held_back = int(f.first_conflict) - base - 1, True
            out.append(res)
        return out

    async def _store_in_transaction(self, db: DB, env: Envelope, via: str, hold: str | None, now: float,
                                    one_by_one: bool) -> StoreResult:
        """Inside the caller's ``SAVEPOINT envelope``; ``_BatchFailed`` if applying the new items together failed."""
        res = StoreResult(0)
        await db.execute(
            "INSERT INTO node_state(node_id, last_seen, link, trusted_time) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(node_id) DO UPDATE SET last_seen = excluded.last_seen, link = excluded.link,"
            " trusted_time = excluded.trusted_time",
            (env.node_id, now, via, int(env.trusted_time)),
        )
        ordinal, newest = await self._instance(db, env.node_id, env.instance, now)
        base = ordinal * SEQ_SPAN
        first, last = base + env.first_seq, base + env.last_seq
        # (fetch_all: one trip to SQLite's thread per query; this runs for every message)
        held = {int(r[0]): bytes(r[1]) if r[1] is not None else hashlib.sha256(bytes(r[2])).digest() for r in await fetch_all(
            db,
            "SELECT seq, digest, CASE WHEN digest IS NULL THEN payload END FROM items WHERE node_id = ? AND stream = ? AND seq BETWEEN ? AND ?",
            (env.node_id, env.stream, first, last),
        )}
        fresh: list[tuple[int, bytes, bytes]] = []
        for i, item in enumerate(env.items):
            seq, digest = first + i, hashlib.sha256(item).digest()
            if seq not in held:
                fresh.append((seq, item, digest))
            elif held[seq] != digest:
                await self._conflict(db, env, seq, digest, now, res, base)
            else:
                res.duplicates += 1
        res.new = len(fresh)
        await self._store_fresh(db, env, via, fresh, hold, now, res, base, one_by_one)
        if res.new:
            await db.execute(
                "INSERT INTO class_bytes(node_id, stream, bytes, items) VALUES (?, ?, ?, ?) ON CONFLICT(node_id, stream)"
                " DO UPDATE SET bytes = class_bytes.bytes + excluded.bytes, items = class_bytes.items + excluded.items",
                (env.node_id, env.stream, sum(len(x[1]) for x in fresh), res.new),
            )
        # (each statement is a round trip on PostgreSQL: no separate "make sure the row exists"; the first
        # conflicting item, which caps the ack below, is read in the same trip: only _conflict above writes it)
        rows = await fetch_all(
            db, "SELECT (SELECT contiguous FROM instance_streams WHERE node_id = ? AND instance = ? AND stream = ?),"
            " (SELECT MIN(seq) FROM item_conflicts WHERE node_id = ? AND stream = ? AND seq > ? AND seq < ?)",
            (env.node_id, env.instance, env.stream, env.node_id, env.stream, base, base + SEQ_SPAN),
        )
        contiguous = int(rows[0][0]) if rows and rows[0][0] is not None else 0
        first_conflict = None if not rows or rows[0][1] is None else int(rows[0][1])
        for (seq,) in await fetch_all(
            db, "SELECT seq FROM items WHERE node_id = ? AND stream = ? AND seq > ? AND seq < ? ORDER BY seq",
            (env.node_id, env.stream, base + contiguous, base + SEQ_SPAN),
        ):
            if seq != base + contiguous + 1:
                break
            contiguous = seq - base
        await db.execute(
            "INSERT INTO instance_streams(node_id, instance, stream, contiguous) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(node_id, instance, stream) DO UPDATE SET contiguous = excluded.contiguous",
            (env.node_id, env.instance, env.stream, contiguous),
        )
        if newest:
            # readers of stream_state (event folds) follow the van's newest instance, in HQ's seq numbers
            await db.execute(
                "INSERT INTO stream_state(node_id, stream, contiguous) VALUES (?, ?, ?)"
                " ON CONFLICT(node_id, stream) DO UPDATE SET contiguous = excluded.contiguous",
                (env.node_id, env.stream, base + contiguous),
            )
        if env.stream == "audit":
            for problem in await audit.verify_new(db, env.node_id, now):
                log.warning("audit chain of %s: %s", env.node_id, problem)
        if first_conflict is not None and first_conflict - base - 1 < contiguous:
            contiguous, res.held_back = first_conflict - base - 1, True
        res.contiguous = contiguous
        return res

    async def _instance(self, db: DB, node_id: str, instance: str, now: float) -> tuple[int, bool]:
        """(ordinal of this node instance, whether it is the node's newest); a new one is registered."""
        rows = await fetch_all(
            db, "SELECT i.ordinal, (SELECT MAX(ordinal) FROM node_instances m WHERE m.node_id = i.node_id)"
            " FROM node_instances i WHERE i.node_id = ? AND i.instance = ?", (node_id, instance)
        )
        row = rows[0] if rows else None
        if row is not None:
            return int(row[0]), int(row[0]) == int(row[1])
        async with db.execute("SELECT COUNT(*) FROM node_instances WHERE node_id = ?", (node_id,)) as cur:
            crow = await cur.fetchone()
        ordinal = int(crow[0]) if crow else 0
        await db.execute(
            "INSERT INTO node_instances(node_id, instance, ordinal, first_seen) VALUES (?, ?, ?, ?)", (node_id, instance, ordinal, now)
        )
        if ordinal:
            log.warning("van %s sends from a new database (instance %s, the %d. it has had): re-flashed or card replaced",
                        node_id, instance or "legacy", ordinal + 1)
            # the new database starts its own audit chain
            await db.execute(
                "INSERT INTO audit_state(node_id, verified_seq, last_hash, broken) VALUES (?, ?, ?, 0)"
                " ON CONFLICT(node_id) DO UPDATE SET verified_seq = excluded.verified_seq, last_hash = excluded.last_hash, broken = 0",
                (node_id, ordinal * SEQ_SPAN, GENESIS),
            )
        return ordinal, True

    async def _conflict(self, db: DB, env: Envelope, seq: int, digest: bytes, now: float, res: StoreResult, base: int) -> None:
        """A resend whose content differs from what HQ holds under its key: quarantined, alerted, never acknowledged."""
        reason = "conflict: differs from the item HQ holds under this number"
        log.warning("item %s/%s/%d: %s", env.node_id, env.stream, seq - base, reason)
        res.quarantined.append((seq - base, reason))
        await db.execute(
            "INSERT INTO item_conflicts(node_id, stream, seq, digest, at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (env.node_id, env.stream, seq, digest, now),
        )
        await db.execute(
            "INSERT INTO quarantine(node_id, stream, seq, reason, at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (env.node_id, env.stream, seq, reason, now),
        )

    async def _store_fresh(self, db: DB, env: Envelope, via: str, fresh: list[tuple[int, bytes, bytes]], hold: str | None,
                           now: float, res: StoreResult, base: int, one_by_one: bool) -> None:
        """Store and apply new items: all together (``_BatchFailed`` if anything fails: the caller rolls the
        envelope back and comes again ``one_by_one``), or each under its own savepoint."""
        if not fresh:
            return
        hlc = env.hlc if hold is None else -1  # an HLC HQ would not take is not kept as one
        # Positions: only the newest of a batch moves the fleet map; each is still checked.
        newest_pos = max((seq for seq, item, _ in fresh if item), default=None) if env.stream == "pos" else None
        sql = "INSERT INTO items(node_id, stream, seq, payload, hlc, via, received, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

        async def apply(seq: int, item: bytes) -> str | None:
            if hold is not None:
                return hold
            return await self._apply(db, env.node_id, env.stream, seq, item, project=env.stream != "pos" or seq == newest_pos)

        quarantined: list[tuple[int, str]] = []
        if not one_by_one:
            # (no savepoint of its own: two statements, two round trips on PostgreSQL, for every message)
            try:
                await db.executemany(sql, [(env.node_id, env.stream, seq, item, hlc, via, now, d) for seq, item, d in fresh])
                for seq, item, _ in fresh:
                    reason = await apply(seq, item)
                    if reason is not None:
                        quarantined.append((seq, reason))
            except Exception as exc:  # any failure of the batch: the envelope is stored again item by item
                raise _BatchFailed() from exc
        else:
            for seq, item, d in fresh:
                await db.execute("SAVEPOINT item")
                try:
                    await db.execute(sql, (env.node_id, env.stream, seq, item, hlc, via, now, d))
                    reason = await apply(seq, item)
                except Exception as exc:  # noqa: BLE001 - one hostile item is quarantined (logged with its repr), never a stuck stream
                    await db.execute("ROLLBACK TO SAVEPOINT item")
                    reason = f"cannot apply: {type(exc).__name__}"
                    log.warning("item %s/%s/%d quarantined: %r", env.node_id, env.stream, seq - base, exc)
                    # held as received, so the stream behind it moves on
                    await db.execute(sql, (env.node_id, env.stream, seq, item, hlc, via, now, d))
                await db.execute("RELEASE SAVEPOINT item")
                if reason is not None:
                    quarantined.append((seq, reason))
        for seq, reason in quarantined:
            res.quarantined.append((seq - base, reason))
            await db.execute(
                "INSERT INTO quarantine(node_id, stream, seq, reason, at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (env.node_id, env.stream, seq, reason[:200], now),
            )

    async def _apply(self, db: DB, node_id: str, stream: str, seq: int, item: bytes, project: bool = True) -> str | None:
        """Project a newly stored item into the tables the dashboard reads; a reason if it cannot be."""
        if stream == "pos":
            if not item:
                return None  # thinned on the node
            try:
                p = poscodec.unpack_position(item)
            except EnvelopeError as exc:
                return str(exc)
            if not project:
                return None
            # an impossible time (a receiver's rollover date) is never shown: HQ's arrival time stands in, untrusted;
            # an untrusted one is corrected by its boot's time fix, now or when the fix comes (hq/timefix.py)
            pos_time, trusted = await timefix.position_time(db, node_id, p, self.clock.now())
            await db.execute(
                "INSERT INTO node_state(node_id, lat, lon, pos_time, pos_trusted, pos_mono, pos_boot) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(node_id) DO UPDATE SET lat = excluded.lat, lon = excluded.lon, pos_time = excluded.pos_time,"
                " pos_trusted = excluded.pos_trusted, pos_mono = excluded.pos_mono, pos_boot = excluded.pos_boot"
                " WHERE node_state.pos_time IS NULL OR excluded.pos_time >= node_state.pos_time",
                (node_id, p.lat, p.lon, pos_time, int(trusted), None if trusted else p.mono, None if trusted else p.boot),
            )
        elif stream == "status":
            try:
                hb = unpack_heartbeat(item)
            except SyncError as exc:
                return str(exc)
            # Only the newest heartbeat held says what waits now: a late one fills history, raises no backlog alert.
            await db.execute(
                "UPDATE node_state SET depth = ? WHERE node_id = ?"
                " AND ? >= (SELECT MAX(seq) FROM items WHERE node_id = ? AND stream = 'status')",
                (json.dumps(hb.depth), node_id, seq, node_id),
            )
            if hb.has_fix and timefix.plausible(hb.time):
                await db.execute(
                    "UPDATE node_state SET lat = ?, lon = ?, pos_time = ? WHERE node_id = ? AND (pos_time IS NULL OR pos_time <= ?)",
                    (hb.lat, hb.lon, hb.time, node_id, hb.time),
                )
        elif stream == "evt":
            if item[:1] == b"{" and b'"time_fix"' in item:  # the one event HQ's store folds itself (hq/timefix.py)
                try:
                    doc = safejson.loads(item)
                    if isinstance(doc, dict) and doc.get("type") == "time_fix":
                        await timefix.time_fix(db, node_id, doc, self.clock.now())
                except (ValueError, KeyError, TypeError) as exc:
                    return f"malformed time fix: {type(exc).__name__}"
        elif stream == "rec":
            try:
                doc = safejson.loads(item)
                if not isinstance(doc, dict):
                    return "record is not a JSON object"
                kind = doc.get("type", "application")
                if kind not in RECORD_TYPES:
                    return f"unknown record schema {str(kind)[:40]!r}"
                if kind == "application":
                    await db.execute(
                        "INSERT INTO records(node_id, seq, record_id, number, service_code, created, sealed, package_code, citizen)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (node_id, seq, str(doc["id"]), str(doc["number"]), str(doc["service_code"]), float(doc["created"]),
                         item.decode(), _text(doc.get("package")), None if doc.get("citizen") is None else str(doc["citizen"])[:40]),
                    )
                    await timefix.record_clock(db, node_id, str(doc["id"]), doc)
                elif kind == "applicant":
                    await db.execute(
                        "INSERT INTO applicants(node_id, seq, record_id, created, sealed) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (node_id, seq, str(doc["id"]), float(doc["created"]), item.decode()),
                    )
                elif kind == "handover":
                    # kept sealed in items; hq/appstatus.py sets the status "issued" from it (once, with its own cursor)
                    if not (isinstance(doc["id"], str) and isinstance(doc["application_id"], str) and isinstance(doc["fields"], dict)
                            and isinstance(doc["wrap_hq"], str)):
                        return "malformed handover"
                else:
                    score = int(doc["score"])
                    if not 1 <= score <= 5:
                        return f"rating score {score} out of 1..5"
                    await db.execute(
                        "INSERT INTO ratings(node_id, seq, application_id, score, at, comment_sealed) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (node_id, seq, str(doc["application_id"]), score, float(doc["at"]), _text(doc.get("comment_sealed"))),
                    )
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("record %s/%d quarantined: %s", node_id, seq, type(exc).__name__)
                return f"malformed record: {type(exc).__name__}"
        return None

    async def quarantined(self) -> list[dict[str, Any]]:
        async with self.db.execute("SELECT node_id, stream, seq, reason, at FROM quarantine ORDER BY at") as cur:
            return [{"node_id": r[0], "stream": r[1], "seq": r[2], "reason": r[3], "at": r[4]} async for r in cur]

    async def class_bytes(self) -> dict[str, dict[str, dict[str, int]]]:
        out: dict[str, dict[str, dict[str, int]]] = {}
        async with self.db.execute("SELECT node_id, stream, bytes, items FROM class_bytes") as cur:
            async for node, stream, b, n in cur:
                out.setdefault(node, {})[stream] = {"bytes": b, "items": n}
        return out

    async def next_down_seq(self, node_id: str, stream: str) -> int:
        """Dense per-node downlink numbering (for commands, assignments; the catalogue's version)."""
        async with transaction(self.db):
            await self.db.execute(
                "INSERT INTO down_seq(node_id, stream, seq) VALUES (?, ?, 1) ON CONFLICT(node_id, stream) DO UPDATE SET seq = down_seq.seq + 1",
                (node_id, stream),
            )
            async with self.db.execute("SELECT seq FROM down_seq WHERE node_id = ? AND stream = ?", (node_id, stream)) as cur:
                row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def items(self, node_id: str, stream: str) -> list[tuple[int, bytes]]:
        async with self.db.execute("SELECT seq, payload FROM items WHERE node_id = ? AND stream = ? ORDER BY seq", (node_id, stream)) as cur:
            return [(int(r[0]), bytes(r[1])) async for r in cur]

    async def instance_by_tag(self, node_id: str, tag: bytes, tag_of: Callable[[str], bytes]) -> str | None:
        async with self.db.execute("SELECT instance FROM node_instances WHERE node_id = ? ORDER BY ordinal DESC", (node_id,)) as cur:
            known = [str(r[0]) async for r in cur]
        return next((i for i in known if tag_of(i) == tag), None)

    async def record_rejection(self, claimed_node: str, channel: str, reason: str) -> None:
        async with transaction(self.db):
            await self.db.execute("INSERT INTO rejections(at, claimed_node, channel, reason) VALUES (?, ?, ?, ?)", (self.clock.now(), claimed_node, channel, reason))

    async def record_status(self, node_id: str, state: str, at: float, depth: dict[str, Any] | None = None) -> None:
        if not self.node_active(node_id):
            # A revoked van's retained status or a last connection's heartbeat: it must not look alive.
            if node_id not in self._ignored_status:
                self._ignored_status.add(node_id)
                log.warning("status of %s ignored: not an active van (revoked or not enrolled)", node_id[:40])
            return
        async with transaction(self.db):
            await self.db.execute(
                "INSERT INTO node_state(node_id, status, status_at, depth) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(node_id) DO UPDATE SET status = excluded.status, status_at = excluded.status_at,"
                " depth = COALESCE(excluded.depth, node_state.depth)",
                (node_id, state, at, None if depth is None else json.dumps(depth)),
            )

    async def fleet(self) -> list[dict[str, Any]]:
        async with self.db.execute(
            "SELECT n.node_id, n.last_seen, n.lat, n.lon, n.pos_time, n.status, n.link,"
            " (SELECT COUNT(*) FROM records r WHERE r.node_id = n.node_id), n.depth, n.trusted_time, n.pos_trusted"
            " FROM node_state n ORDER BY n.node_id"
        ) as cur:
            return [
                {"node_id": r[0], "last_seen": r[1], "lat": r[2], "lon": r[3], "position_time": r[4],
                 "status": (r[5] or "unknown") if self.node_active(r[0]) else "revoked",
                 "link": r[6], "records": r[7], "outbox_depth": json.loads(r[8]) if r[8] else {},
                 "trusted_time": None if r[9] is None else bool(r[9]),
                 "position_time_trusted": None if r[10] is None else bool(r[10])}
                async for r in cur
            ]

    async def stats(self) -> dict[str, int]:
        out = {}
        for key, sql in (
            ("records", "SELECT COUNT(*) FROM records"),
            ("positions", "SELECT COUNT(*) FROM items WHERE stream = 'pos'"),
            ("nodes", "SELECT COUNT(*) FROM node_state"),
            ("rejected", "SELECT COUNT(*) FROM rejections"),
            ("audit_alerts", "SELECT COUNT(*) FROM audit_alerts"),
            ("quarantined", "SELECT COUNT(*) FROM quarantine"),
            ("applicants", "SELECT COUNT(*) FROM applicants"),
            ("ratings", "SELECT COUNT(*) FROM ratings"),
        ):
            async with self.db.execute(sql) as cur:
                row = await cur.fetchone()
            out[key] = int(row[0]) if row else 0
        return out
