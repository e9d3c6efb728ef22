"""Fault injection against a real Mosquitto.  Each ends with HQ holding exactly the set the
administrator was told was saved: nothing lost, nothing twice, order per stream kept.

Iterations: env MO_FAULT_ITERATIONS (default 3).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import aiosqlite
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync import outbox, poscodec
from sync.db import open_db, transaction
from tests.conftest import REPO, Broker, start_mosquitto

from .harness import node_outbox, hq_items, hq_workers, node_uplink, pending, record, submit, wait_for

pytestmark = pytest.mark.fault
ITERATIONS = int(os.environ.get("MO_FAULT_ITERATIONS", "3"))


async def _drained(node_db: Path) -> bool:
    return await pending(node_db) == 0


async def _check_exact(hq_db: Path, saved: list[int]) -> None:
    items = await hq_items(hq_db)
    assert [s for s, _ in items] == list(range(1, len(items) + 1)), "order/density per stream"
    assert [p for _, p in items] == [record(i) for i in saved], "HQ holds exactly what was saved, once"


@pytest.mark.parametrize("persistence", [True, False])
async def test_broker_killed_and_restarted_while_draining(tmp_path: Path, persistence: bool) -> None:
    broker = start_mosquitto(tmp_path / "mq", persistence=persistence)
    nk, hk = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    node_db, hq_db = tmp_path / "node.db", tmp_path / "hq.db"
    db = await open_db(node_db)
    await outbox.create_schema(db)
    rnd = random.Random(7)
    saved: list[int] = []
    try:
        async with hq_workers(broker.url, hq_db, nk, hk, n=2):
            async with node_uplink(broker.url, node_db, nk, hk, ack_timeout=2.0, max_batch_items=25) as up:
                n = 1
                for _ in range(ITERATIONS):
                    k = rnd.randint(50, 150)
                    await submit(db, n, k)
                    saved += list(range(n, n + k))
                    n += k
                    up.kick()
                    await asyncio.sleep(rnd.uniform(0.0, 0.3))
                    broker.stop(signal.SIGKILL)
                    await asyncio.sleep(rnd.uniform(0.1, 1.0))
                    broker.start()
                await wait_for(lambda: _drained(node_db), 120, "drain after broker restarts")
    finally:
        broker.stop()
        await db.close()
    await _check_exact(hq_db, saved)


class Proxy:
    """A TCP proxy that can stall (stop forwarding, keep sockets) and cut (close everything)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.stalled = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                while self.stalled.is_set():
                    await asyncio.sleep(0.05)
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            w.close()
            return
        self.writers += [w, uw]
        await asyncio.gather(self._pipe(r, uw), self._pipe(ur, w))

    def cut(self) -> None:
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server:
            self.server.close()


async def test_connection_stalled_and_cut_by_a_proxy(mosquitto: Broker, tmp_path: Path) -> None:
    nk, hk = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    node_db, hq_db = tmp_path / "node.db", tmp_path / "hq.db"
    proxy = Proxy(mosquitto.port)
    await proxy.start()
    db = await open_db(node_db)
    await outbox.create_schema(db)
    rnd = random.Random(11)
    saved: list[int] = []
    try:
        async with hq_workers(mosquitto.url, hq_db, nk, hk):
            async with node_uplink(f"mqtt://127.0.0.1:{proxy.port}", node_db, nk, hk, ack_timeout=2.0, max_batch_items=20) as up:
                n = 1
                for it in range(ITERATIONS):
                    await submit(db, n, 60)
                    saved += list(range(n, n + 60))
                    n += 60
                    up.kick()
                    await asyncio.sleep(rnd.uniform(0, 0.2))
                    proxy.stalled.set()
                    await asyncio.sleep(rnd.uniform(0.5, 2.5))
                    if it % 2 == 0:
                        proxy.cut()
                    proxy.stalled.clear()
                await wait_for(lambda: _drained(node_db), 120, "drain through the proxy")
    finally:
        await proxy.close()
        await db.close()
    await _check_exact(hq_db, saved)


async def test_hq_down_for_a_while_then_a_24h_offline_day_drains(mosquitto: Broker, tmp_path: Path) -> None:
    nk, hk = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    node_db, hq_db = tmp_path / "node.db", tmp_path / "hq.db"
    async with node_outbox(node_db) as db:
        await _offline_day(db)
    saved = list(range(1, 301))
    async with node_uplink(mosquitto.url, node_db, nk, hk, ack_timeout=2.0) as up:
        await wait_for(lambda: _ok(up.status.mqtt_up), what="node connected")
        await asyncio.sleep(1.0)  # HQ is down: the node publishes, nobody acks
        assert await pending(node_db) == 300 + 8 * 3600
        async with hq_workers(mosquitto.url, hq_db, nk, hk):
            await wait_for(lambda: _drained(node_db), 120, "the offline day drains")
    await _check_exact(hq_db, saved)
    pos = await hq_items(hq_db, "pos")
    assert [s for s, _ in pos] == list(range(1, 8 * 3600 + 1))


async def _offline_day(db: aiosqlite.Connection) -> None:
    # A day offline: 300 records and 8 h of 1 Hz GPS written while nothing answers.
    await submit(db, 1, 300)
    async with transaction(db):
        for i in range(8 * 3600):
            p = poscodec.Position(1_780_000_000 + i, 47.9 + i * 1e-5, 33.4 + i * 7e-6, 11.0, 40.0, True)
            await outbox.enqueue(db, "pos", poscodec.pack_position(p), float(i))


async def _ok(v: bool) -> bool:
    return v


def _write_keys(tmp: Path, nk: Ed25519PrivateKey, hk: Ed25519PrivateKey) -> tuple[Path, Path]:
    kf, hf = tmp / "node.key", tmp / "hq.pub"
    kf.write_bytes(nk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()))
    hf.write_bytes(hk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    return kf, hf


async def test_node_killed_with_sigkill_while_submitting_and_draining(mosquitto: Broker, tmp_path: Path) -> None:
    nk, hk = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    node_db, hq_db = tmp_path / "node.db", tmp_path / "hq.db"
    kf, hf = _write_keys(tmp_path, nk, hk)
    rnd = random.Random(3)
    saved: list[int] = []
    async with hq_workers(mosquitto.url, hq_db, nk, hk):
        nxt = 1
        for it in range(ITERATIONS + 1):
            last = it == ITERATIONS
            count = 0 if last else 400
            out = tmp_path / f"node-{it}.out"
            with out.open("wb") as fh:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "tests.sync.node_proc", mosquitto.url, str(node_db), str(kf), str(hf), str(nxt), str(count)],
                    cwd=REPO, stdout=fh, stderr=subprocess.DEVNULL,
                )
                try:
                    if last:
                        await wait_for(lambda: _drained(node_db), 120, "final drain")
                    else:
                        await asyncio.sleep(rnd.uniform(0.8, 3.0))
                finally:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
            lines = out.read_text().split()
            got = [int(x) for a, x in pairwise(lines) if a == "saved"]
            saved += got
            # the record being written when killed may or may not have committed; its number is then reused:
            # what counts is that HQ matches what was printed, and numbering stays dense.
            nxt = (got[-1] + 1) if got else nxt
            db = await open_db(node_db)
            await outbox.create_schema(db)
            st = (await outbox.streams(db)).get("rec")
            await db.close()
            if st is not None and st.next_seq - 1 > len(saved):
                # committed but killed before it printed: the administrator never saw "saved"; the node
                # still holds it and will deliver it, so it belongs to the expected set.
                extra = list(range(len(saved) + 1, st.next_seq))
                saved += [nxt + k for k in range(len(extra))]
                nxt += len(extra)
    await _check_exact(hq_db, saved)
