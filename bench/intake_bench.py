"""Durable intake: sealed records committed per second vs plain SQLite inserts.

Both sides use the same SQLite file settings (WAL, synchronous=FULL) and
one transaction per record, so the ratio shows what sealing, the blind
index, the audit entry and the outbox entry cost on top of the raw commit.
Aim (issue 3): at least half the raw rate.

    .venv/bin/python bench/intake_bench.py [N]
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from edge.store import Store
from provisioning.keys import AdminAccount, add_node, init_hq
from sync.clock import SystemClock
from sync.db import open_db, run_transaction


async def raw_rate(path: Path, n: int, size: int) -> float:
    db = await open_db(path)
    await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    payload = os.urandom(size)
    def insert(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t(payload) VALUES (?)", (payload,))

    # The baseline gets the same one-hop transaction the store uses: the ratio is SQL + crypto, not plumbing.
    t0 = time.perf_counter()
    for _ in range(n):
        await run_transaction(db, insert)
    dt = time.perf_counter() - t0
    await db.close()
    return n / dt


async def sealed_rate(tmp: Path, n: int) -> tuple[float, int]:
    hq = init_hq(tmp / "hq")
    bundle = add_node(hq, "van-bench", tmp / "bundle", [AdminAccount("admin", "bench-password", "van_admin")])
    store = await Store.open(tmp / "node.db", bundle.node_id, bundle.hq_seal_public, SystemClock())
    await store.import_keyslots([{"kind": s.kind, "username": s.username, "role": s.role, "salt": s.salt, "n": s.n, "wrapped": s.wrapped} for s in bundle.keyslots])
    await store.unlock("admin", "bench-password")
    t0 = time.perf_counter()
    for _ in range(n):
        await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
    dt = time.perf_counter() - t0
    async with store.db.execute("SELECT AVG(LENGTH(fields) + LENGTH(wrap_hq) + LENGTH(wrap_node)) FROM applications") as cur:
        row = await cur.fetchone()
    await store.close()
    return n / dt, int(row[0]) if row else 0


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sealed, size = await sealed_rate(tmp, n)
        raw = await raw_rate(tmp / "raw.db", n, size)
    print(f"records: {n}, sealed record size ≈ {size} B")
    print(f"raw SQLite inserts (WAL, synchronous=FULL): {raw:8.1f} commits/s")
    print(f"sealed intake (record + index + audit + outbox): {sealed:8.1f} records/s")
    print(f"ratio sealed/raw: {sealed / raw:.2f} (aim ≥ 0.50)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 500))
