"""Concurrent writers on one connection queue up instead of failing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sync.db import open_db, transaction


async def test_concurrent_transactions_on_one_connection(tmp_path: Path) -> None:
    db = await open_db(tmp_path / "t.db")
    await db.execute("CREATE TABLE t (n INTEGER)")

    async def writer(n: int) -> None:
        async with transaction(db):
            await db.execute("INSERT INTO t VALUES (?)", (n,))
            await asyncio.sleep(0)  # let the other tasks try to start theirs meanwhile
            await db.execute("INSERT INTO t VALUES (?)", (n,))

    await asyncio.gather(*(writer(i) for i in range(20)))
    async with db.execute("SELECT COUNT(*), COUNT(DISTINCT n) FROM t") as cur:
        assert tuple(await cur.fetchone()) == (40, 20)  # type: ignore[arg-type]
    await db.close()


async def test_failed_transaction_rolls_back_and_releases(tmp_path: Path) -> None:
    db = await open_db(tmp_path / "t.db")
    await db.execute("CREATE TABLE t (n INTEGER)")
    try:
        async with transaction(db):
            await db.execute("INSERT INTO t VALUES (1)")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    async with transaction(db):
        await db.execute("INSERT INTO t VALUES (2)")
    async with db.execute("SELECT n FROM t") as cur:
        assert [r[0] for r in await cur.fetchall()] == [2]
    await db.close()


async def test_a_task_cancelled_during_begin_leaves_no_transaction_open(tmp_path: Path) -> None:
    """Found by bench/acceptance.py: the broker died while HQ's handler waited for BEGIN; the cancelled task's BEGIN
    still ran on aiosqlite's thread, the connection stayed inside that transaction, and every later message failed
    with "cannot start a transaction within a transaction" (HQ stalled for good)."""
    import sqlite3

    import pytest

    db = await open_db(tmp_path / "t.db")
    try:
        await db.execute("CREATE TABLE t (x INTEGER)")
        other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # holds the write lock: our BEGIN waits in the busy handler

        async def write() -> None:
            async with transaction(db):
                await db.execute("INSERT INTO t VALUES (1)")

        task = asyncio.create_task(write())
        await asyncio.sleep(0.2)  # lets the BEGIN reach aiosqlite's thread (the order below holds either way)
        task.cancel()
        other.execute("ROLLBACK")  # the waiting BEGIN now succeeds on the thread, after its task was cancelled
        other.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with transaction(db):
            await db.execute("INSERT INTO t VALUES (2)")
        async with db.execute("SELECT x FROM t") as cur:
            assert [r[0] async for r in cur] == [2]
    finally:
        await db.close()
