"""A node process for the SIGKILL fault test: submits records and drains them, printing each COMMIT.

Usage: python -m tests.sync.node_proc URL DB NODE_KEY HQ_PUB START COUNT
Each line ``saved N`` is printed (and flushed) only after the record's
transaction committed: that is what the administrator was told.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync import outbox
from sync.clock import SystemClock
from sync.db import open_db, transaction
from sync.mqtt import MqttSettings
from sync.uplink import Uplink

from .harness import NODE, record


async def main(url: str, db_path: Path, key_file: Path, hq_file: Path, start: int, count: int) -> None:
    nk = Ed25519PrivateKey.from_private_bytes(key_file.read_bytes())
    hq = Ed25519PublicKey.from_public_bytes(hq_file.read_bytes())
    db = await open_db(db_path)
    await outbox.create_schema(db)
    up = Uplink(db_path, NODE, nk, hq, MqttSettings(url=url, client_id=NODE), SystemClock(), ack_timeout=2.0, max_batch_items=20)
    task = asyncio.create_task(up.run())
    for i in range(start, start + count):
        async with transaction(db):
            await outbox.enqueue(db, "rec", record(i), float(i))
        print(f"saved {i}", flush=True)
        up.kick()
        await asyncio.sleep(0.005)
    print("done", flush=True)
    await task


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], Path(a[1]), Path(a[2]), Path(a[3]), int(a[4]), int(a[5])))
