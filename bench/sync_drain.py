"""End-to-end drain of a full offline day vs raw paho QoS 1 publishes, same broker, same run.

The node (a separate process, so its RSS is its own) starts with an outbox
holding a working day written offline: 300 applications, 50 ratings, 8 h of
1 Hz GPS.  It drains to one HQ worker through a fresh Mosquitto; the clock
stops when HQ has acknowledged everything (the node's outbox is empty).
Baseline: paho publishing the same number of messages, one per item, QoS 1,
waiting for every PUBACK, to the same broker.

Run: .venv/bin/python bench/sync_drain.py [--tiny]
(--tiny: a few dozen items, what the test command runs so the bench cannot rot)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sync import outbox, poscodec  # noqa: E402
from sync.clock import SystemClock  # noqa: E402
from sync.db import open_db, transaction  # noqa: E402
from sync.mqtt import MqttSettings  # noqa: E402
from sync.uplink import Uplink  # noqa: E402
from tests.conftest import start_mosquitto  # noqa: E402
from tests.sync.harness import hq_workers, record  # noqa: E402

RECORDS, RATINGS, POSITIONS = 300, 50, 8 * 3600


async def offline_day(path: Path, records: int = RECORDS, ratings: int = RATINGS, positions: int = POSITIONS) -> int:
    db = await open_db(path)
    await outbox.create_schema(db)
    for i in range(records):
        async with transaction(db):  # one commit per saved application, as in the field
            # a sealed application is ~500-700 bytes of mostly ciphertext
            doc = json.loads(record(i))
            doc["fields"] = os.urandom(300).hex()
            await outbox.enqueue(db, "rec", json.dumps(doc).encode(), float(i))
    for i in range(ratings):
        async with transaction(db):
            await outbox.enqueue(db, "evt", json.dumps({"type": "rating", "score": 5, "i": i}).encode(), float(i))
    async with transaction(db):
        for i in range(positions):
            p = poscodec.Position(1_780_000_000 + i, 47.9 + i * 1e-5, 33.4 + i * 7e-6, 11.0, 40.0, True)
            await outbox.enqueue(db, "pos", poscodec.pack_position(p), float(i))
    await db.close()
    return records + ratings + positions


async def node_main(url: str, db: str, key: str, hq: str) -> None:
    nk = Ed25519PrivateKey.from_private_bytes(Path(key).read_bytes())
    hk = Ed25519PublicKey.from_public_bytes(Path(hq).read_bytes())
    up = Uplink(Path(db), "van-01", nk, hk, MqttSettings(url=url, client_id="van-01"), SystemClock(), ack_timeout=10.0)
    # The clock starts here: interpreter start-up is not the protocol's cost.
    print("ready", flush=True)
    await up.run()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def end_to_end(url: str, tmp: Path, **day: int) -> tuple[float, int, int]:
    nk, hk = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    (tmp / "k").write_bytes(nk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()))
    (tmp / "h").write_bytes(hk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    node_db = tmp / "node.db"
    total = await offline_day(node_db, **day)
    peak = 0
    async with hq_workers(url, tmp / "hq.db", nk, hk) as workers:
        while not workers[0][0].connected:
            await asyncio.sleep(0.05)
        proc = subprocess.Popen([sys.executable, __file__, "--node", url, str(node_db), str(tmp / "k"), str(tmp / "h")], cwd=REPO,
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None
        await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
        t0 = time.perf_counter()
        check = await open_db(node_db)
        try:
            while True:
                peak = max(peak, rss_kb(proc.pid))
                states = await outbox.streams(check)
                if sum(s.pending for s in states.values()) == 0:
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(10)
            await check.close()
    return elapsed, total, peak


def raw_paho(url_port: int, n: int, size: int) -> float:
    done = threading.Event()
    acked = 0

    def on_publish(client: paho.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        nonlocal acked
        acked += 1
        if acked == n:
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="raw-bench", protocol=paho.MQTTv5)
    c.on_publish = on_publish
    c.max_inflight_messages_set(64)
    c.connect("127.0.0.1", url_port)
    c.loop_start()
    payload = os.urandom(size)
    t0 = time.perf_counter()
    for _ in range(n):
        c.publish("bench/raw", payload, qos=1)
    done.wait(300)
    elapsed = time.perf_counter() - t0
    c.loop_stop()
    c.disconnect()
    return elapsed


def main(tiny: bool = False) -> None:
    logging.basicConfig(level=logging.ERROR)
    day = {"records": 20, "ratings": 5, "positions": 300} if tiny else {}
    records_only = 40 if tiny else 3000
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker = start_mosquitto(tmp / "mq")
        try:
            elapsed, total, peak = asyncio.run(end_to_end(broker.url, tmp, **day))
            raw = raw_paho(broker.port, total, 64)
            (tmp / "r").mkdir()
            r_elapsed, r_total, r_peak = asyncio.run(end_to_end(broker.url, tmp / "r", records=records_only, ratings=0, positions=0))
            r_raw = raw_paho(broker.port, r_total, 700)
        finally:
            broker.stop()
    e2e_rate, raw_rate = total / elapsed, total / raw
    n_rec = day.get("records", RECORDS)
    print(f"offline day: {n_rec} applications + {day.get('ratings', RATINGS)} ratings + {day.get('positions', POSITIONS)} GPS points"
          f" = {total} items")
    print(f"  end to end, HQ-acked:      {elapsed:6.2f} s  {e2e_rate:9.0f} items/s  ({n_rec / elapsed:.0f} applications/s amortised)")
    print(f"  raw paho QoS 1 publishes:  {raw:6.2f} s  {raw_rate:9.0f} msgs/s (64-byte messages, one per item)")
    print(f"  ratio end-to-end / raw:    {e2e_rate / raw_rate:.2f}  (aim >= 0.5)")
    print(f"  node peak RSS while draining: {peak / 1024:.1f} MB")
    print(f"records only: {r_total} sealed applications (~700 B each) written offline")
    print(f"  end to end, HQ-acked:      {r_elapsed:6.2f} s  {r_total / r_elapsed:9.0f} records/s")
    print(f"  raw paho QoS 1 publishes:  {r_raw:6.2f} s  {r_total / r_raw:9.0f} msgs/s (700-byte messages)")
    print(f"  ratio end-to-end / raw:    {r_raw / r_elapsed:.2f}  (aim >= 0.5)   node peak RSS {r_peak / 1024:.1f} MB")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--node":
        asyncio.run(node_main(*sys.argv[2:6]))
    else:
        main(tiny="--tiny" in sys.argv[1:])

