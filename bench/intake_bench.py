"""Durable intake: sealed records committed per second vs plain SQLite inserts.

Both sides use the same SQLite file settings (WAL, synchronous=FULL), the same
directory and one transaction per record, so the ratio shows what sealing, the
blind index, the audit entry and the outbox entry cost on top of the raw commit.
fsync time on a shared machine drifts by a factor of two within a second, so
the two sides alternate commit by commit (each round times RECORDS_PER_ROUND
of each, interleaved, so both see the same disk) and the figure is the median
of the per-round ratios (with the spread).  Aim (issue 20): at least half the
raw rate in the median.

    .venv/bin/python bench/intake_bench.py [RECORDS_PER_ROUND] [ROUNDS] [DIR]

DIR defaults to a temporary directory; give the node's data disk to measure
the disk it will really use (an SD card is far slower than this machine's).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edge.store import Store
from provisioning.keys import AdminAccount, add_node, init_hq
from sync.clock import SystemClock
from sync.db import open_db, run_transaction


async def main(per_round: int, rounds: int, base: Path | None) -> None:
    with tempfile.TemporaryDirectory(dir=base) as d:
        tmp = Path(d)
        hq = init_hq(tmp / "hq")
        bundle = add_node(hq, "van-bench", tmp / "bundle", [AdminAccount("admin", "bench-password", "van_admin")])
        store = await Store.open(tmp / "node.db", bundle.node_id, bundle.hq_seal_public, SystemClock())
        await store.import_keyslots([s.config() for s in bundle.keyslots])
        await store.unlock("admin", "bench-password")
        await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")  # warm-up, and the size
        async with store.db.execute("SELECT AVG(LENGTH(fields) + LENGTH(wrap_hq) + LENGTH(wrap_node)) FROM applications") as cur:
            row = await cur.fetchone()
        size = int(row[0]) if row else 400

        raw = await open_db(tmp / "raw.db")
        await raw.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        payload = os.urandom(size)

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t(payload) VALUES (?)", (payload,))

        raw_rates, sealed_rates = [], []
        for _ in range(rounds):
            raw_time = sealed_time = 0.0
            for _ in range(per_round):
                # The baseline gets the same one-hop transaction the store uses: the ratio is SQL + crypto, not plumbing.
                t0 = time.perf_counter()
                await run_transaction(raw, insert)
                t1 = time.perf_counter()
                await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
                t2 = time.perf_counter()
                raw_time += t1 - t0
                sealed_time += t2 - t1
            raw_rates.append(per_round / raw_time)
            sealed_rates.append(per_round / sealed_time)
        await raw.close()
        await store.close()

    ratios = sorted(s / r for s, r in zip(sealed_rates, raw_rates, strict=True))
    print(f"records: {per_round} × {rounds} rounds per side, sealed record size ≈ {size} B")
    print(f"raw SQLite inserts (WAL, synchronous=FULL): median {statistics.median(raw_rates):8.1f} commits/s")
    print(f"sealed intake (record + index + audit + outbox): median {statistics.median(sealed_rates):8.1f} records/s")
    print(f"ratio sealed/raw: median {statistics.median(ratios):.2f} (rounds {ratios[0]:.2f}–{ratios[-1]:.2f}; aim ≥ 0.50)")


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(int(args[0]) if args else 100, int(args[1]) if len(args) > 1 else 9, Path(args[2]) if len(args) > 2 else None))
