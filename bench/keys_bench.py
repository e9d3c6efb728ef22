"""What issue 16's key handling costs, as ratios measured in the same run.

* scrypt N=2^17 (new keyslots) against N=2^15 (old ones): the price of a
  login and of an offline guess, both multiplied by the same factor;
* replacing the node key on a store holding RECORDS applicants and
  applications against one login: the data keys stay wrapped under period
  keys, so only those (and the administrators' slots) are rewrapped;
* a shredding round (period keys deleted, WAL checkpointed with TRUNCATE)
  against the intake of the same RECORDS records.

    .venv/bin/python bench/keys_bench.py [RECORDS] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edge.passwords import one_time
from edge.store import Store
from provisioning.keys import AdminAccount, add_node, init_hq
from sync import crypto, outbox
from sync.clock import ManualClock

PASSWORD = "bench-пароль-довгий"


def _scrypt(n: int) -> float:
    t = time.perf_counter()
    crypto.kek_from_password(PASSWORD, os.urandom(16), n)
    return time.perf_counter() - t


async def main(records: int, rounds: int) -> None:
    ratios = [_scrypt(2**17) / _scrypt(2**15) for _ in range(rounds)]
    print(f"scrypt 2^17 / 2^15: median {statistics.median(ratios):.1f}x (spread {min(ratios):.1f}-{max(ratios):.1f})")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        hq = init_hq(tmp / "hq")
        bundle = add_node(hq, "van-bench", tmp / "bundle", [AdminAccount("admin", PASSWORD, "supervisor"),
                                                             AdminAccount("olena", PASSWORD, "van_admin")])
        clock = ManualClock()
        store = await Store.open(tmp / "node.db", bundle.node_id, bundle.hq_seal_public, clock)
        await store.import_keyslots([s.config() for s in bundle.keyslots])
        t = time.perf_counter()
        await store.unlock("admin", PASSWORD)
        login = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(records):
            await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
            if i % 50 == 0:
                clock.advance(86400 / 10)  # records spread over a few days: several period keys
        intake = time.perf_counter() - t
        rotations = []
        for _ in range(rounds):
            t = time.perf_counter()
            await store.rotate_node_key("admin", PASSWORD, one_time)
            rotations.append((time.perf_counter() - t) / login)
        print(f"node key rotation with {records} records / one login: median {statistics.median(rotations):.1f}x"
              f" (spread {min(rotations):.1f}-{max(rotations):.1f}; 2 slots rewrapped, each one scrypt)")
        await outbox.apply_ack(store.db, "rec", 10**9, clock.now())
        clock.advance(30 * 86400)
        t = time.perf_counter()
        n = await store.shred_expired(7 * 86400)
        shred = time.perf_counter() - t
        print(f"shredding round of {n} records (period keys deleted, WAL truncated) / intake of {records}: {shred / intake:.2f}x")
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300, int(sys.argv[2]) if len(sys.argv) > 2 else 3))
