"""HQ ingest under a simulated fleet: SQLite vs PostgreSQL, one vs two workers, one broker.

N vans each send signed envelopes (v1, Ed25519, each van its own key) on
their own topics: sealed applications (AES-GCM fields, data key wrapped to
HQ's X25519 key, as edge/store.py makes them) in small batches, and GPS
positions in batches.  HQ workers run as separate processes (one core each
at most, like production workers) on one MQTT 5 shared subscription
``$share/hq/...``; the clock stops when HQ's signed acks cover every item of
every van (acks are sent only after COMMIT, so "acked" means durable at HQ).

Baseline, same broker, same run: raw paho QoS 1 publishes of the same
number of messages of the same mean size, waiting for every PUBACK.  Results
are printed as rates and as ratios to that baseline; afterwards each HQ
database is checked: every record exactly once.

Everything is loopback and bounded (--vans, --records, --positions, --timeout).

Run: .venv/bin/python bench/hq_load.py [--vans 100] [--backends sqlite,postgresql] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hq.store import HQStore  # noqa: E402
from provisioning.rotation import KeyRing  # noqa: E402
from sync import crypto, poscodec  # noqa: E402
from sync.clock import SystemClock  # noqa: E402
from sync.envelope import Envelope, MacKey, decode, encode, parse_ack_message, topic_up, van_mac_key  # noqa: E402
from sync.ingest import Ingest, MqttIngestWorker  # noqa: E402
from sync.mqtt import MqttSettings  # noqa: E402

RAW = serialization.Encoding.Raw


# -- the HQ worker process -------------------------------------------------------

async def worker_main(target: str, broker: str, name: str, keyfile: Path) -> None:
    spec = json.loads(keyfile.read_text())
    hq_seal = X25519PrivateKey.from_private_bytes(bytes.fromhex(spec["hq_seal"]))
    vans = rings({n: Ed25519PublicKey.from_public_bytes(bytes.fromhex(h)) for n, h in spec["vans"].items()}, hq_seal)
    hq_key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(spec["hq_sign"]))
    clock = SystemClock()
    store = await HQStore.open(target, clock)
    ingest = Ingest(store, vans.get, hq_key, clock)
    worker = MqttIngestWorker(ingest, MqttSettings(url=broker, client_id=name), clock, shared=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    task = asyncio.create_task(worker.run())
    while not worker.connected:
        await asyncio.sleep(0.02)
    print("READY", flush=True)
    await stop.wait()
    logging.disable(logging.ERROR)  # an ack in flight at shutdown is resent by its van: not news here
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await store.close()
    print(f"STORED {ingest.stored} {ingest.duplicates} {ingest.rejected}", flush=True)


# -- the simulated fleet ---------------------------------------------------------

@dataclass
class Fleet:
    messages: list[tuple[str, bytes]]  # (topic, signed envelope) in send order
    expected: dict[tuple[str, str], int]  # (van, stream) -> last seq HQ must ack
    records: int
    positions: int


def sealed_application(van: str, i: int, hq_seal: X25519PrivateKey, node_key: bytes) -> bytes:
    rid = uuid.uuid4().hex
    fields = {"surname": "Коваленко", "name": "Олена", "rnokpp": f"{3000000000 + i}", "phone": "+380501234567",
              "address": f"м. Кропивницький, вул. Велика Перспективна, {i}"}
    s = crypto.seal("applications", rid, 1, fields, hq_seal.public_key(), node_key)
    return json.dumps({"type": "application", "id": rid, "number": f"{van.upper()}-{i:05d}", "service_code": "S1",
                       "created": 1_780_000_000.0 + i, "version": 1,
                       "fields": {k: base64.b64encode(v).decode() for k, v in s.fields.items()},
                       "wrap_hq": base64.b64encode(s.wrap_hq).decode(), "package": None}, separators=(",", ":")).encode()


def rings(vans: dict[str, Ed25519PublicKey], hq_seal: X25519PrivateKey) -> dict[str, KeyRing]:
    """HQ's view of the vans' keys, as hq/app.py has it (provisioning.rotation.NodeKeyCache): signatures and MACs."""
    return {n: KeyRing(pub, None, lambda: None, n, [hq_seal]) for n, pub in vans.items()}


def build_fleet(keys: dict[str, Ed25519PrivateKey], records: int, positions: int, rec_batch: int, pos_batch: int,
                hq_seal: X25519PrivateKey, auth: str = "mac") -> Fleet:
    per_van: list[list[tuple[str, bytes]]] = []
    expected = {}
    hlc = 1
    for v, (van, key) in enumerate(keys.items()):
        node_key = os.urandom(32)
        signer: Ed25519PrivateKey | MacKey = van_mac_key(van, key, hq_seal.public_key()) if auth == "mac" else key
        out = []
        recs = [sealed_application(van, i, hq_seal, node_key) for i in range(1, records + 1)]
        pos = [poscodec.pack_position(poscodec.Position(1_780_000_000 + i, 48.5 + v * 0.01 + i * 1e-5, 32.2 + i * 1e-5, 11.0, 45.0, True))
               for i in range(1, positions + 1)]
        # interleaved as a van sends them: a few positions, then what was saved meanwhile
        streams = [("rec", recs, rec_batch), ("pos", pos, pos_batch)]
        cursors = {"rec": 0, "pos": 0}
        while any(cursors[s] < len(items) for s, items, _ in streams):
            for stream, items, batch in streams:
                c = cursors[stream]
                if c >= len(items):
                    continue
                chunk = tuple(items[c:c + batch])
                hlc += 1
                out.append((topic_up(van, stream), encode(Envelope(van, stream, c + 1, chunk, hlc, trusted_time=True), signer)))
                cursors[stream] = c + len(chunk)
        if records:
            expected[(van, "rec")] = records
        if positions:
            expected[(van, "pos")] = positions
        per_van.append(out)
    # vans talk at once: round-robin across the fleet
    messages = [x[i] for i in range(max(len(x) for x in per_van)) for x in per_van if i < len(x)]
    return Fleet(messages, expected, records * len(keys), positions * len(keys))


class _Unchecked:
    """A verifier that accepts: for reading acks during the timed run only (their signatures are checked afterwards)."""

    def verify(self, signature: bytes, data: bytes) -> None:
        return None


_UNCHECKED = _Unchecked()


def paho_client(name: str, port: int) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv5)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    return c


def publish_all(port: int, messages: list[tuple[str, bytes]], timeout: float) -> float:
    """QoS 1 publishes, every PUBACK awaited; seconds taken."""
    done = threading.Event()
    acked = 0

    def on_publish(client: paho.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        nonlocal acked
        acked += 1
        if acked == len(messages):
            done.set()

    c = paho_client(f"pub-{uuid.uuid4().hex[:8]}", port)
    c.on_publish = on_publish
    c.loop_start()
    t0 = time.perf_counter()
    for topic, payload in messages:
        c.publish(topic, payload, qos=1)
    done.wait(timeout)
    elapsed = time.perf_counter() - t0
    c.loop_stop()
    c.disconnect()
    return elapsed


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(root_pid: int | None) -> float:
    """CPU seconds of a process and its children (PostgreSQL's backends are children of the postmaster)."""
    if root_pid is None:
        return 0.0
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            fields = text.rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            if pid == root_pid or int(fields[1]) == root_pid:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            continue
    return total


@dataclass
class Result:
    backend: str
    workers: int
    seconds: float
    messages: int
    records: int
    positions: int
    stored: list[int]
    worker_cpu: list[float]
    held_records: int
    complete: bool
    broker_cpu: float = 0.0
    db_cpu: float = 0.0


def run_scenario(backend: str, target: str, n_workers: int, port: int, keyfile: Path, fleet: Fleet, hq_pub: Ed25519PublicKey,
                 timeout: float, tag: str, broker_pid: int, db_pid: int | None) -> Result:
    broker = f"mqtt://127.0.0.1:{port}"
    procs = []
    for w in range(n_workers):
        p = subprocess.Popen([sys.executable, *( ["/tmp/prof/yw.py"] if os.environ.get("YAPPI") else [__file__]), "worker", target, broker, f"hq-{tag}-{w + 1}", str(keyfile)],
                             cwd=REPO, stdout=subprocess.PIPE, text=True)
        procs.append(p)
    for p in procs:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"worker did not start: {line!r}")
    time.sleep(0.5)  # the shared subscription is in place once connected; let the broker settle
    acked: dict[tuple[str, str], int] = {}
    all_acked = threading.Event()
    lock = threading.Lock()

    received_acks: list[bytes] = []

    def on_ack(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        # HQ's signature is checked after the clock stops (below): checking it here would put the
        # bench's own CPU on the two cores the measured HQ shares
        payload = bytes(msg.payload)
        env = decode(payload, lambda n: _UNCHECKED)
        with lock:
            received_acks.append(payload)
            for stream, upto in parse_ack_message(env.items).acks.items():
                k = (env.node_id, stream)
                acked[k] = max(acked.get(k, 0), upto)
            if all(acked.get(k, 0) >= v for k, v in fleet.expected.items()):
                all_acked.set()

    listener = paho_client(f"acks-{tag}", port)
    listener.on_message = on_ack
    listener.subscribe("mo/v1/+/down/ack", qos=1)
    listener.loop_start()
    time.sleep(0.3)
    cpu0 = [cpu_seconds(p.pid) for p in procs]
    other0 = (cpu_seconds(broker_pid), tree_cpu(db_pid))
    t0 = time.perf_counter()
    threading.Thread(target=publish_all, args=(port, fleet.messages, timeout), daemon=True).start()
    complete = all_acked.wait(timeout)
    elapsed = time.perf_counter() - t0
    cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
    broker_cpu, db_cpu = cpu_seconds(broker_pid) - other0[0], tree_cpu(db_pid) - other0[1]
    listener.loop_stop()
    listener.disconnect()
    for payload in received_acks:
        decode(payload, lambda n: hq_pub)  # every ack that counted was signed by HQ (EnvelopeError otherwise)
    stored = []
    for p in procs:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
        stored += [int(x.split()[1]) for x in out.splitlines() if x.startswith("STORED")]
    held = asyncio.run(_held_records(target))
    return Result(backend, n_workers, elapsed, len(fleet.messages), fleet.records, fleet.positions, stored, cpu, held, complete,
                  broker_cpu, db_cpu)


async def _held_records(target: str) -> int:
    store = await HQStore.open(target, SystemClock())
    try:
        stats = await store.stats()
        async with store.db.execute("SELECT COUNT(*), COUNT(DISTINCT record_id) FROM records") as cur:
            row = await cur.fetchone()
        assert row is not None and row[0] == row[1] == stats["records"]
        return int(stats["records"])
    finally:
        await store.close()


async def direct(target: str, fleet: Fleet, vans: dict[str, KeyRing], n: int) -> tuple[float, float, int]:
    """Storage alone, in this process, no broker: (seconds, CPU seconds, items) for the first n messages."""
    store = await HQStore.open(target, SystemClock())
    try:
        ingest = Ingest(store, vans.get, Ed25519PrivateKey.generate(), SystemClock())
        t0, c0 = time.perf_counter(), time.process_time()
        for _, payload in fleet.messages[:n]:
            await ingest.handle(payload)
        return time.perf_counter() - t0, time.process_time() - c0, ingest.stored
    finally:
        await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--vans", type=int, default=100)
    ap.add_argument("--records", type=int, default=20, help="sealed applications per van")
    ap.add_argument("--positions", type=int, default=600, help="GPS fixes per van")
    ap.add_argument("--record-batch", type=int, default=2, help="applications per envelope (a van sends them as they are saved)")
    ap.add_argument("--position-batch", type=int, default=60, help="positions per envelope")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--uplink-auth", choices=("mac", "signature"), default="mac",
                    help="how the vans authenticate their envelopes (a van's --uplink-auth; mac is its default)")
    ap.add_argument("--timeout", type=float, default=300.0, help="per scenario")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    # `timeout` or Ctrl-C: still stop the broker and PostgreSQL this run started (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if min(args.vans, args.records + args.positions) <= 0 or args.vans > 2000:
        ap.error("--vans 1..2000 and something to send")

    from tests.conftest import start_mosquitto
    from tests.pgcluster import start_postgres, unavailable

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pg = None
        backends = args.backends.split(",")
        if "postgresql" in backends:
            reason = unavailable()
            if reason:
                print(f"PostgreSQL skipped: {reason}")
                backends.remove("postgresql")
            else:
                pg = start_postgres()
        try:
            keys = {f"van-{i:04d}": Ed25519PrivateKey.generate() for i in range(1, args.vans + 1)}
            hq_sign, hq_seal = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
            keyfile = tmp / "keys.json"
            keyfile.write_text(json.dumps({
                "hq_seal": hq_seal.private_bytes(RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()).hex(),
                "vans": {n: k.public_key().public_bytes(RAW, serialization.PublicFormat.Raw).hex() for n, k in keys.items()},
                "hq_sign": hq_sign.private_bytes(RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()).hex()}))
            os.chmod(keyfile, 0o600)
            t = time.perf_counter()
            fleet = build_fleet(keys, args.records, args.positions, args.record_batch, args.position_batch, hq_seal, args.uplink_auth)
            size = sum(len(p) for _, p in fleet.messages) // len(fleet.messages)
            print(f"fleet: {args.vans} vans, {len(fleet.messages)} messages (mean {size} B), {fleet.records} sealed applications,"
                  f" {fleet.positions} positions ({'MACed' if args.uplink_auth == 'mac' else 'signed'} and sealed in {time.perf_counter() - t:.1f} s, not timed)")
            pubs = rings({n: k.public_key() for n, k in keys.items()}, hq_seal)
            n_direct = min(len(fleet.messages), 400)
            for backend in backends:
                target = pg.create_database("direct") if backend == "postgresql" and pg else str(tmp / "direct.db")
                secs, cpu_s, items = asyncio.run(direct(target, fleet, pubs, n_direct))
                print(f"storage alone ({backend}, one connection, no broker): {n_direct / secs:,.0f} msg/s, {items / secs:,.0f} items/s,"
                      f" CPU {cpu_s / secs:.0%} of the wall time")
            print("baseline per scenario: raw paho QoS 1 publishes of as many messages of that size to the same fresh broker")
            print()
            print(f"{'backend':<11} {'workers':>7} {'seconds':>8} {'msg/s':>8} {'records/s':>10} {'positions/s':>12}"
                  f" {'base msg/s':>10} {'x base':>7} {'worker CPU':>11} {'stored by worker':>17} {'held':>6}")
            results = []
            cpu_ms: list[tuple[Result, float, float, float]] = []
            for backend in backends:
                for n in [int(x) for x in args.workers.split(",")]:
                    tag = f"{backend[:2]}{n}"
                    if backend == "postgresql":
                        assert pg is not None
                        target = pg.create_database("load")
                    else:
                        target = str(tmp / f"hq-{tag}.db")
                    # A fresh broker per scenario: a worker that leaves with a persistent session keeps
                    # its share of a shared subscription queued (see docs/scaling.md), which would starve the next run.
                    broker = start_mosquitto(tmp / f"mosquitto-{tag}", persistence=False)
                    try:
                        base_msgs = [(f"bench/raw/{i % args.vans}", os.urandom(size)) for i in range(len(fleet.messages))]
                        base_rate = len(base_msgs) / publish_all(broker.port, base_msgs, args.timeout)
                        r = run_scenario(backend, target, n, broker.port, keyfile, fleet, hq_sign.public_key(), args.timeout, tag,
                                         broker.process.pid, pg.postmaster_pid() if backend == "postgresql" and pg else None)
                    finally:
                        broker.stop()
                    results.append(r)
                    rate = r.messages / r.seconds
                    cpu = "/".join(f"{c / r.seconds:.0%}" for c in r.worker_cpu)
                    flag = "" if r.complete and r.held_records == r.records else "  INCOMPLETE"
                    print(f"{backend:<11} {n:>7} {r.seconds:>8.1f} {rate:>8,.0f} {r.records / r.seconds:>10,.0f}"
                          f" {r.positions / r.seconds:>12,.0f} {base_rate:>10,.0f} {rate / base_rate:>7.3f} {cpu:>11}"
                          f" {'/'.join(map(str, r.stored)):>17} {r.held_records:>6}{flag}", flush=True)
                    cpu_ms.append((r, 1000 * sum(r.worker_cpu) / r.messages, 1000 * r.db_cpu / r.messages, 1000 * r.broker_cpu / r.messages))
            print()
            print("CPU cost per message (independent of how busy the machine was): HQ workers / database server / broker")
            for r, w_ms, d_ms, b_ms in cpu_ms:
                db_txt = f"{d_ms:.2f} ms" if r.backend == "postgresql" else "(in the worker)"
                print(f"  {r.backend:<11} x{r.workers}: {w_ms:.2f} ms / {db_txt} / {b_ms:.2f} ms")
            if results:
                first = results[0]
                print()
                for r in results[1:]:
                    print(f"{r.backend} x{r.workers} vs {first.backend} x{first.workers}: {first.seconds / r.seconds:.2f}x throughput")
        finally:
            if pg is not None:
                pg.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        logging.basicConfig(level=os.environ.get("HQ_LOAD_LOG", "WARNING"))
        asyncio.run(worker_main(sys.argv[2], sys.argv[3], sys.argv[4], Path(sys.argv[5])))
    else:
        main()
