"""SQLite connections with the durability settings both ends rely on.

WAL with synchronous=FULL: a COMMIT that returned survives a power cut.
Connections run in autocommit mode and every write goes through
``transaction()`` (BEGIN IMMEDIATE), so two connections to one file never
deadlock on a lock upgrade, and no write is ever left half-open.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

log = logging.getLogger(__name__)


async def open_db(path: Path) -> aiosqlite.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.execute("PRAGMA busy_timeout=10000")
        await db.execute("PRAGMA foreign_keys=ON")
        # Deleted rows may have held ciphertext only, but don't leave even that behind.
        await db.execute("PRAGMA secure_delete=ON")
    except BaseException:
        # a cancel here must not leave the connection's thread running (it blocks process exit)
        await asyncio.shield(db.close())
        raise
    try:
        os.chmod(path, 0o600)
    except OSError:
        pass
    return db


async def open_reader(path: Path) -> aiosqlite.Connection:
    """A second, read-only connection to a WAL database (open_db made it WAL).

    Pages read through it, so their queries run on their own thread and never
    queue behind the writer's fsync'd COMMITs; WAL lets it read while the writer
    writes, and every read sees what was committed before it started.
    """
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute("PRAGMA busy_timeout=10000")
        await db.execute("PRAGMA query_only=ON")
    except BaseException:
        await asyncio.shield(db.close())
        raise
    return db


# One writer at a time per connection: tasks sharing a connection (two acks
# handled concurrently, a status message during an ingest) queue here instead
# of failing with "cannot start a transaction within a transaction".
_writers: weakref.WeakKeyDictionary[aiosqlite.Connection, asyncio.Lock] = weakref.WeakKeyDictionary()


# BEGIN IMMEDIATE takes the write lock up front (no deferred transaction upgrading
# later, which SQLite cannot wait for).  It can still fail at once, busy_timeout
# or not: while a cursor of another task on the same connection is still open,
# the connection reads an old snapshot, and SQLite refuses the write lock
# without waiting (waiting cannot help) until that cursor is done.  So a busy
# BEGIN is tried again after a pause on the event loop (never on the
# connection's thread, which the open cursor needs to finish).  Nothing has
# been written when BEGIN fails: a retry is safe.
BUSY_RETRIES = 12
busy_retries = 0  # times BEGIN IMMEDIATE was tried again (tests watch it)


def is_busy(exc: BaseException) -> bool:
    """SQLite's "database is locked/busy": transient, worth trying again."""
    return isinstance(exc, sqlite3.OperationalError) and any(w in str(exc) for w in ("locked", "busy"))


def _pause(attempt: int) -> float:
    return float(min(0.05 * 2**attempt, 2.0))  # about 15 s over all tries, besides busy_timeout's waits


class _BeginBusy(Exception):
    """BEGIN IMMEDIATE was refused on the connection's thread: retried from the event loop."""


async def _begin(db: aiosqlite.Connection) -> None:
    global busy_retries
    for attempt in range(BUSY_RETRIES):
        # BEGIN runs on aiosqlite's thread whatever happens to the awaiting task: shielded, so that a cancel
        # (a broker link closing cancels its message handlers) can wait for it and undo it.
        begin = asyncio.ensure_future(db.execute("BEGIN IMMEDIATE"))
        try:
            await asyncio.shield(begin)
            return
        except asyncio.CancelledError:
            await _undo_begin(db, begin)
            raise
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or attempt == BUSY_RETRIES - 1:
                raise
            busy_retries += 1
            await asyncio.sleep(_pause(attempt))


async def _undo_begin(db: aiosqlite.Connection, begin: asyncio.Future[aiosqlite.Cursor]) -> None:
    """A cancelled task's BEGIN: once it has run, roll it back, or the connection stays inside it for good."""
    try:
        await begin
    except Exception:  # noqa: BLE001 - it failed (busy): nothing to undo
        return
    try:
        await db.execute("ROLLBACK")
    except Exception as exc:  # noqa: BLE001 - the connection is closing; nothing left to protect
        log.warning("could not roll back a cancelled BEGIN: %r", exc)


@asynccontextmanager
async def transaction(db: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    lock = _writers.setdefault(db, asyncio.Lock())
    async with lock:
        await _begin(db)
        try:
            yield db
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")


T = TypeVar("T")


async def run_sync(db: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(sqlite3_connection, *args)`` on the connection's own thread in ONE hop.

    Each ``await db.execute`` is a round trip to aiosqlite's thread; a unit of
    several statements inside an open transaction (a record, its audit entry,
    its outbox row) runs here at once instead.  This is the one place that
    touches aiosqlite's private ``_execute``/``_conn`` (pinned in pyproject).
    """
    conn: sqlite3.Connection = db._conn
    result: T = await db._execute(fn, conn, *args)  # type: ignore[no-untyped-call]
    return result


def _in_transaction(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if is_busy(exc):
            raise _BeginBusy() from exc
        raise
    try:
        result = fn(conn, *args)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


async def run_transaction(db: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """``fn(conn, *args)`` inside BEGIN IMMEDIATE … COMMIT, all in one hop to the connection's thread."""
    return await _retrying(db, _in_transaction, fn, *args)


async def _retrying(db: aiosqlite.Connection, body: Callable[..., T], fn: Callable[..., T], *args: Any) -> T:
    """One writer at a time; a busy BEGIN is tried again from the event loop (see BUSY_RETRIES)."""
    global busy_retries
    async with _writers.setdefault(db, asyncio.Lock()):
        for attempt in range(BUSY_RETRIES):
            try:
                return await run_sync(db, body, fn, *args)
            except _BeginBusy as busy:
                if attempt == BUSY_RETRIES - 1:
                    raise busy.__cause__ or busy from None
                busy_retries += 1
                await asyncio.sleep(_pause(attempt))
        raise AssertionError("unreachable")


def _fetch_all(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


async def fetch_all(db: aiosqlite.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """All rows of one query in one hop (``async with db.execute`` + iteration + close is three or more)."""
    return await run_sync(db, _fetch_all, sql, params)


def _fetch_one(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Any:
    return conn.execute(sql, params).fetchone()


async def fetch_one(db: aiosqlite.Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """The first row of one query (or None) in one hop."""
    return await run_sync(db, _fetch_one, sql, params)


def _in_transaction_unsynced(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    # synchronous cannot change inside a transaction: around it, on this connection only
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        return _in_transaction(conn, fn, *args)
    finally:
        conn.execute("PRAGMA synchronous=FULL")


async def run_transaction_unsynced(db: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """``run_transaction`` whose COMMIT does not wait for the disk (WAL, synchronous=NORMAL for this one).

    Atomic and ordered like any other: a power cut can only lose it together
    with everything committed after it, never half of it, and the next
    synchronous COMMIT makes it durable too.  Only for bookkeeping whose loss
    costs nothing (the uplink's "sent" marks: a lost one means a resend HQ
    deduplicates); never for anything a person saved or a command ran.
    """
    return await _retrying(db, _in_transaction_unsynced, fn, *args)
