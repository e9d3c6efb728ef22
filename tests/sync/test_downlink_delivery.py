"""A downlink message cannot be dropped: write lock up front with retries, broker ack only after storage (issue 15, item 10)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sync import db as sync_db
from sync.clock import SystemClock
from sync.db import open_db, transaction
from sync.mqtt import MAX_ATTEMPTS, MqttLink, MqttSettings, run_forever
from tests.conftest import Broker

from .harness import until

pytestmark = pytest.mark.functional


async def test_a_busy_write_lock_is_waited_for_not_failed(tmp_path: Path) -> None:
    db = await open_db(tmp_path / "n.db")
    await db.execute("CREATE TABLE t (x INTEGER)")
    await db.execute("PRAGMA busy_timeout=20")  # what a loaded machine makes of the 10 s: it runs out
    other = sqlite3.connect(tmp_path / "n.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
    before = sync_db.busy_retries

    async def write() -> None:
        async with transaction(db):
            await db.execute("INSERT INTO t VALUES (1)")

    task = asyncio.create_task(write())
    try:
        while sync_db.busy_retries == before:  # the first BEGIN IMMEDIATE was refused and is being retried
            assert not task.done(), task
            await asyncio.sleep(0.01)
        other.execute("COMMIT")
        await task
        async with db.execute("SELECT COUNT(*) FROM t") as cur:
            assert (await cur.fetchone())[0] == 1  # type: ignore[index]
    finally:
        other.close()
        await db.close()


def _publish(broker: Broker, topic: str, payload: bytes) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-publisher", protocol=paho.MQTTv5)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


async def _subscribed(broker: Broker, topic: str, seen: list[bytes]) -> None:
    """The link subscribes without waiting for SUBACK: publish a warm-up until it comes through."""
    while b"warm-up" not in seen:
        await asyncio.to_thread(_publish, broker, topic, b"warm-up")
        for _ in range(20):
            if b"warm-up" in seen:
                return
            await asyncio.sleep(0.05)


async def test_a_message_whose_handler_fails_is_delivered_again(mosquitto: Broker) -> None:
    seen: list[bytes] = []
    stored: list[bytes] = []
    # m1 fails once, m2 more often than a bug would be tolerated (a locked database is transient: never given up), m3 never
    fail = {b"m1": 1, b"m2": MAX_ATTEMPTS + 1}

    async def handler(topic: str, payload: bytes) -> None:
        seen.append(payload)
        if fail.get(payload, 0) > 0:
            fail[payload] -= 1
            raise sqlite3.OperationalError("database is locked")
        stored.append(payload)

    settings = MqttSettings(url=mosquitto.url, client_id="van-xx", subscriptions=[("mo/v1/van-xx/down/#", 1)])
    connected = asyncio.Event()

    async def session(link: MqttLink) -> None:
        connected.set()

    task = asyncio.create_task(run_forever(settings, handler, session, SystemClock(), min_backoff=0.1, max_backoff=0.5))
    try:
        await asyncio.wait_for(connected.wait(), 30)
        await _subscribed(mosquitto, "mo/v1/van-xx/down/cmd", seen)
        for p in (b"m1", b"m2", b"m3"):
            await asyncio.to_thread(_publish, mosquitto, "mo/v1/van-xx/down/cmd", p)
        # at least once: a success whose ack was cut by another message's failure comes again (handlers are idempotent)
        await until(lambda: {b"m1", b"m2", b"m3"} <= set(stored), "every message stored")
        assert seen.count(b"m1") >= 2 and seen.count(b"m2") >= MAX_ATTEMPTS + 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_message_that_always_fails_is_given_up_after_a_bound(mosquitto: Broker) -> None:
    seen: list[bytes] = []
    stored: list[bytes] = []

    async def handler(topic: str, payload: bytes) -> None:
        seen.append(payload)
        if payload == b"poison":
            raise RuntimeError("a bug in a handler")
        stored.append(payload)

    settings = MqttSettings(url=mosquitto.url, client_id="van-yy", subscriptions=[("mo/v1/van-yy/down/#", 1)])
    connected = asyncio.Event()

    async def session(link: MqttLink) -> None:
        connected.set()

    task = asyncio.create_task(run_forever(settings, handler, session, SystemClock(), min_backoff=0.1, max_backoff=0.5))
    try:
        await asyncio.wait_for(connected.wait(), 30)
        await _subscribed(mosquitto, "mo/v1/van-yy/down/cmd", seen)
        await asyncio.to_thread(_publish, mosquitto, "mo/v1/van-yy/down/cmd", b"poison")
        await asyncio.to_thread(_publish, mosquitto, "mo/v1/van-yy/down/cmd", b"after")
        await until(lambda: b"after" in stored and seen.count(b"poison") >= MAX_ATTEMPTS, "the link to move past the poison")
        assert seen.count(b"poison") == MAX_ATTEMPTS
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_write_behind_an_open_cursor_on_a_stale_snapshot_waits_for_it(tmp_path: Path) -> None:
    """The intake's one-hop transaction while another task's cursor on the same connection is open and
    another connection has written since: SQLite refuses BEGIN IMMEDIATE at once (no busy_timeout wait);
    it is retried from the event loop, where the cursor can finish (on the connection's thread it could not)."""
    db = await open_db(tmp_path / "n.db")
    await db.execute("CREATE TABLE t (x INTEGER)")
    await db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    other = sqlite3.connect(tmp_path / "n.db", isolation_level=None)
    try:
        cur = await db.execute("SELECT x FROM t")
        assert await cur.fetchone() is not None  # a page still reading: the connection holds its snapshot
        other.execute("INSERT INTO t VALUES (-1)")  # the uplink's connection writes meanwhile
        before = sync_db.busy_retries

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t VALUES (1000)")

        task = asyncio.create_task(sync_db.run_transaction(db, write))
        while sync_db.busy_retries == before:
            assert not task.done(), task.exception() if task.done() else None
            await asyncio.sleep(0.01)
        await cur.close()  # the reader finishes
        await task
        async with db.execute("SELECT COUNT(*) FROM t WHERE x = 1000") as c2:
            assert (await c2.fetchone())[0] == 1  # type: ignore[index]
    finally:
        other.close()
        await db.close()
