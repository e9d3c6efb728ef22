"""In-process node uplink and HQ ingest workers against a real Mosquitto, for functional and fault tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import aiosqlite
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from hq.db import connect as hq_connect
from hq.store import HQStore
from provisioning.rotation import KeyRing
from sync import outbox
from sync.clock import SystemClock
from sync.envelope import Verifier
from sync.db import open_db, transaction
from sync.ingest import Ingest, MqttIngestWorker
from sync.mqtt import MqttSettings
from sync.uplink import Uplink

NODE = "van-01"


def record(i: int) -> bytes:
    return json.dumps({"type": "application", "id": f"id{i}", "number": f"N{i}", "service_code": "S1", "created": float(i)}).encode()


async def submit(db: aiosqlite.Connection, start: int, n: int, stream: str = "rec") -> list[int]:
    """What an administrator saw as saved: each committed in its own transaction."""
    seqs = []
    for i in range(start, start + n):
        async with transaction(db):
            seqs.append(await outbox.enqueue(db, stream, record(i), float(i)))
    return seqs


@contextlib.asynccontextmanager
async def hq_workers(url: str, db_path: Path | str, node_key: Ed25519PrivateKey, hq_key: Ed25519PrivateKey, n: int = 1,
                     shared: bool = True, seals: Sequence[X25519PrivateKey] = ()) -> AsyncIterator[list[tuple[MqttIngestWorker, HQStore]]]:
    """``n`` HQ workers, each with its own connection to the one HQ database, sharing the subscription.

    ``seals``: HQ's sealing keys, to take the van's MAC-authenticated envelopes (signatures only without).
    """
    clock = SystemClock()
    pub: Verifier = KeyRing(node_key.public_key(), None, lambda: None, NODE, seals) if seals else node_key.public_key()
    out = []
    tasks = []
    for w in range(n):
        store = await HQStore.open(db_path, clock)
        ingest = Ingest(store, lambda node: pub if node == NODE else None, hq_key, clock)
        worker = MqttIngestWorker(ingest, MqttSettings(url=url, client_id=f"hq-{w + 1}"), clock, shared=shared)
        out.append((worker, store))
        tasks.append(asyncio.create_task(worker.run()))
    try:
        yield out
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, store in out:
            await store.close()


@contextlib.asynccontextmanager
async def node_uplink(url: str, db_path: Path, node_key: Ed25519PrivateKey, hq_key: Ed25519PrivateKey,
                      ack_timeout: float = 3.0, hq_seal_public: X25519PublicKey | None = None, **kw: int) -> AsyncIterator[Uplink]:
    up = Uplink(db_path, NODE, node_key, hq_key.public_key(), MqttSettings(url=url, client_id=NODE), SystemClock(),
                ack_timeout=ack_timeout, hq_seal_public=hq_seal_public, **kw)  # type: ignore[arg-type]
    task = asyncio.create_task(up.run())
    try:
        yield up
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def pending(db_path: Path) -> int:
    db = await open_db(db_path)
    try:
        return sum(s.pending for s in (await outbox.streams(db)).values())
    finally:
        await db.close()


async def wait_for(pred, timeout: float = 60.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        if await pred():
            return
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def until(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """``wait_for`` for a plain (not async) condition: polls it until true; the timeout only bounds a hang."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def hq_items(db_path: Path | str, stream: str = "rec") -> list[tuple[int, bytes]]:
    db = await hq_connect(db_path)  # a SQLite file or a postgresql:// URL
    try:
        async with db.execute("SELECT seq, payload FROM items WHERE node_id = ? AND stream = ? ORDER BY seq", (NODE, stream)) as cur:
            return [(int(r[0]), bytes(r[1])) async for r in cur]
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def node_outbox(path: Path) -> AsyncIterator[aiosqlite.Connection]:
    """The node's database as the store sees it; closed even when the test fails."""
    db = await open_db(path)
    try:
        await outbox.create_schema(db)
        yield db
    finally:
        await db.close()
