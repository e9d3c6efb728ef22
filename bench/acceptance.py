"""Acceptance under faults: real `mobile-office node`, `mobile-office hq` and Mosquitto processes.

The node takes applications over HTTP (the van UI's JSON API, logged in as an
administrator) and is killed with SIGKILL at a random moment, again and again;
now and then the broker is killed with SIGKILL too and started again, once
with broker persistence and once without.  At the end the node runs once
more until HQ has acknowledged everything, and HQ's database is compared with
what the administrator was told was saved (an HTTP 201 with the number):

* lost: acknowledged to the administrator, not at HQ (must be 0);
* duplicated: one application held twice at HQ (must be 0);
* unacknowledged: committed on the van but killed before the answer
  reached the administrator; delivered all the same (allowed, counted).

Exit status 0 only with nothing lost and nothing duplicated.

    .venv/bin/python bench/acceptance.py            # short run (the test command's size)
    MO_ACCEPTANCE_KILLS=500 MO_ACCEPTANCE_BROKER_KILLS=50 .venv/bin/python bench/acceptance.py

Environment: MO_ACCEPTANCE_KILLS node kills per broker mode (default 4),
MO_ACCEPTANCE_BROKER_KILLS broker kills per mode (default 2),
MO_ACCEPTANCE_MODES ``persistent,volatile`` (default both), MO_ACCEPTANCE_SEED,
MO_ACCEPTANCE_PACE seconds between one application's answer and the next (default 0: as fast as the van takes them),
MO_ACCEPTANCE_DIR keeps the working directory (logs, databases) there.
See docs/acceptance.md.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from provisioning.keys import AdminAccount, add_node, init_hq  # noqa: E402
from tests.conftest import Proc, free_port, http_ok, mobile_office_cmd, spawn, start_mosquitto, wait_until  # noqa: E402
from tests.helpers import ApiClient  # noqa: E402

PASSWORD = "Приймання-пароль-1"
# Valid РНОКПП check digits; names vary so that no two applications are alike.
RNOKPP = ("1759013776", "3184710691")
SERVICES = ("RES-01", "SOC-01", "PEN-01")


@dataclass
class Tally:
    mode: str
    node_kills: int = 0
    broker_kills: int = 0
    acknowledged: dict[str, str] = field(default_factory=dict)  # record id -> number the administrator saw
    at_hq: list[tuple[str, str]] = field(default_factory=list)  # (record id, number) rows held at HQ

    @property
    def lost(self) -> list[str]:
        held = {rid for rid, _ in self.at_hq}
        return sorted(rid for rid in self.acknowledged if rid not in held)

    @property
    def duplicated(self) -> int:
        ids = Counter(rid for rid, _ in self.at_hq)
        numbers = Counter(num for _, num in self.at_hq)
        return sum(n - 1 for n in ids.values() if n > 1) + sum(n - 1 for n in numbers.values() if n > 1)

    @property
    def unacknowledged(self) -> int:
        return len({rid for rid, _ in self.at_hq} - set(self.acknowledged))

    def line(self) -> str:
        return (f"{self.mode:<10} node kills {self.node_kills:>4}  broker kills {self.broker_kills:>3}  "
                f"acknowledged {len(self.acknowledged):>6}  at HQ {len(self.at_hq):>6}  lost {len(self.lost)}  "
                f"duplicated {self.duplicated}  committed-unacknowledged {self.unacknowledged}")


def _letters(n: int) -> str:
    """A number as Ukrainian letters: names accept letters only, and each application is distinct."""
    abc = "абвгдежзиклмнопрстуфхцчшщюя"
    out = ""
    while True:
        n, r = divmod(n, len(abc))
        out = abc[r] + out
        if n == 0:
            return out


class Submitter:
    """Posts applications until the node stops answering; records each 201 the administrator saw."""

    def __init__(self, base: str, tally: Tally, serial: int, pace: float) -> None:
        self.base, self.tally, self.serial, self.pace = base, tally, serial, pace

    def run(self) -> int:
        api = ApiClient(self.base)
        try:
            api.login("admin", PASSWORD)
        except (OSError, AssertionError):
            return self.serial  # killed before or during the login
        while True:
            self.serial += 1
            body = {"surname": "Приймальник-" + _letters(self.serial), "given_name": "Тарас", "rnokpp": RNOKPP[self.serial % 2],
                    "service_code": SERVICES[self.serial % 3]}
            try:
                status, doc = api.request("POST", "/api/v1/applications", body)
            except OSError:
                return self.serial  # the node was killed: no answer, nothing promised
            if status != 201:
                raise RuntimeError(f"the node refused an application: {status} {doc}")
            self.tally.acknowledged[str(doc["id"])] = str(doc["number"])
            if self.pace:
                time.sleep(self.pace)


def start_node(bundle: Path, data: Path, broker_url: str, port: int, log: Path) -> Proc:
    return spawn(mobile_office_cmd("node", "--bundle", str(bundle), "--data-dir", str(data), "--broker", broker_url,
                                   "--gpsd", f"127.0.0.1:{free_port()}", "--http-host", "127.0.0.1", "--http-port", str(port),
                                   "--ack-timeout", "2", "--https", "off"), log)


def run_mode(work: Path, persistent: bool, node_kills: int, broker_kills: int, rnd: random.Random, pace: float) -> Tally:
    tally = Tally("persistent" if persistent else "volatile")
    hq_dir = work / "hq"
    hq = init_hq(hq_dir)
    add_node(hq, "van-01", work / "bundle", [AdminAccount("admin", PASSWORD, "van_admin")])
    broker = start_mosquitto(work / "mosquitto", persistence=persistent)
    hq_port, node_port = free_port(), free_port()
    hq_proc = spawn(mobile_office_cmd("hq", "--hq-data-dir", str(hq_dir), "--hq-broker", broker.url, "--hq-host", "127.0.0.1",
                                      "--hq-port", str(hq_port)), work / "hq.log")
    node: Proc | None = None
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{hq_port}/healthz"), 60, what="HQ to serve")
        # Broker kills spread over the node runs, at random ones.
        broker_at = set(rnd.sample(range(node_kills), min(broker_kills, node_kills)))
        serial = 0
        for i in range(node_kills):
            node = start_node(work / "bundle", work / "node", broker.url, node_port, work / "node.log")
            wait_until(lambda: http_ok(f"http://127.0.0.1:{node_port}/healthz"), 60, what="node to serve")
            sub = Submitter(f"http://127.0.0.1:{node_port}", tally, serial, pace)
            result: list[int | BaseException] = []

            def submit(sub: Submitter = sub, result: list[int | BaseException] = result) -> None:
                try:
                    result.append(sub.run())
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread, raised there
                    result.append(exc)
            t = threading.Thread(target=submit)
            t.start()
            if i in broker_at:
                time.sleep(rnd.uniform(0.0, 1.0))
                broker.stop(signal.SIGKILL)
                tally.broker_kills += 1
                time.sleep(rnd.uniform(0.1, 1.0))
                broker.start()
            time.sleep(rnd.uniform(0.05, 2.0))  # a random point while applications are coming in
            node.kill()
            tally.node_kills += 1
            t.join(60)
            if t.is_alive() or not result:
                raise RuntimeError("the submitter did not stop after the node was killed")
            if isinstance(result[0], BaseException):
                raise result[0]
            serial = result[0]
            print(f"  {tally.mode} kill {i + 1}/{node_kills}: {len(tally.acknowledged)} acknowledged so far", flush=True)
        # The last run: no kill, everything drains.
        node = start_node(work / "bundle", work / "node", broker.url, node_port, work / "node.log")
        wait_until(lambda: http_ok(f"http://127.0.0.1:{node_port}/healthz"), 60, what="node to serve")
        api = ApiClient(f"http://127.0.0.1:{node_port}")
        api.login("admin", PASSWORD)
        # a stream the van never wrote to (nothing saved before every kill) has no entry: nothing pending
        wait_until(lambda: api.get("/api/v1/status")["outbox"]["by_stream"].get("rec", {}).get("pending", 0) == 0, 300, 0.5,
                   what="HQ to acknowledge every record")
        with sqlite3.connect(hq_dir / "hq.db") as db:
            tally.at_hq = [(str(r[0]), str(r[1])) for r in db.execute("SELECT record_id, number FROM records WHERE node_id = 'van-01'")]
    finally:
        if node is not None:
            node.kill()
        hq_proc.terminate()
        broker.stop()
    return tally


def main() -> int:
    node_kills = int(os.environ.get("MO_ACCEPTANCE_KILLS", "4"))
    broker_kills = int(os.environ.get("MO_ACCEPTANCE_BROKER_KILLS", "2"))
    modes = [m.strip() for m in os.environ.get("MO_ACCEPTANCE_MODES", "persistent,volatile").split(",") if m.strip()]
    pace = float(os.environ.get("MO_ACCEPTANCE_PACE", "0"))
    seed = int(os.environ.get("MO_ACCEPTANCE_SEED", str(int(time.time()))))
    keep = os.environ.get("MO_ACCEPTANCE_DIR")
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="mo-acceptance-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"acceptance: {node_kills} node kills and {broker_kills} broker kills per mode ({', '.join(modes)}), seed {seed}, in {root}",
          flush=True)
    rnd = random.Random(seed)
    tallies = []
    started = time.monotonic()
    try:
        for mode in modes:
            if mode not in ("persistent", "volatile"):
                raise SystemExit(f"MO_ACCEPTANCE_MODES: unknown mode {mode!r}")
            tallies.append(run_mode(root / mode, mode == "persistent", node_kills, broker_kills, rnd, pace))
            print("  done: " + tallies[-1].line(), flush=True)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"acceptance results (seed {seed}, {time.monotonic() - started:.0f} s):")
    for t in tallies:
        print("  " + t.line())
        if t.lost:
            print(f"    LOST: {', '.join(t.acknowledged[r] for r in t.lost[:20])}")
    total_lost = sum(len(t.lost) for t in tallies)
    total_dup = sum(t.duplicated for t in tallies)
    print(f"  total: node kills {sum(t.node_kills for t in tallies)}, broker kills {sum(t.broker_kills for t in tallies)}, "
          f"acknowledged {sum(len(t.acknowledged) for t in tallies)}, at HQ {sum(len(t.at_hq) for t in tallies)}, "
          f"lost {total_lost}, duplicated {total_dup}")
    return 0 if total_lost == 0 and total_dup == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
