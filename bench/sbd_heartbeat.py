"""Satellite heartbeat cost: bytes and 50-byte credits per heartbeat and per offline day.

Baseline (same run): the signed envelope v1 heartbeat the node sent before
(Ed25519 signature, 64 bytes of it).  Ours: the compact heartbeat of
sync/sbdbeat.py (truncated MAC under the enrolment-derived key).  Both carry
the same position, time quality and backlog per class; each is built by the
real LinkManager code path.  Also: microseconds to build and to verify one.

    .venv/bin/python bench/sbd_heartbeat.py [HOURS_OFFLINE_PER_DAY] [INTERVAL_S]

Defaults: a working day offline (10 h) at the node's default interval (900 s).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kit.clock import ManualClock
from sync import sbdbeat
from sync.envelope import decode
from sync.linkmgr import LinkManager
from sync.sbdbeat import Heartbeat

CREDIT = 50


def main(hours: float, interval: float) -> None:
    node, hq_seal = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    clock = ManualClock()
    hb = Heartbeat(clock.now(), 47.9105, 33.3918, 12.5, 271.0, True, True, {"rec": 37, "pos": 5400, "evt": 4, "blob": 6})

    async def never() -> Heartbeat:
        return hb

    async def zero() -> int:
        return 1

    def manager(mac_key: bytes | None) -> LinkManager:
        return LinkManager("van-01", node, clock, None, lambda: False, never, zero, mac_key=mac_key)

    signed = manager(None)
    compact = manager(sbdbeat.node_mac_key("van-01", node, hq_seal.public_key()))
    hq_key = sbdbeat.hq_mac_key("van-01", node.public_key(), hq_seal)
    n = 2000
    t0 = time.perf_counter()
    for i in range(n):
        old = signed.encode_heartbeat(hb, i + 1)
    t_old = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i in range(n):
        new = compact.encode_heartbeat(hb, i + 1)
    t_new = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        decode(old, lambda _n: node.public_key())
    v_old = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        sbdbeat.open_heartbeat(new, lambda _t: [("van-01", hq_key)])
    v_new = (time.perf_counter() - t0) / n
    per_day = math.ceil(hours * 3600 / interval)
    c_old, c_new = math.ceil(len(old) / CREDIT), math.ceil(len(new) / CREDIT)
    print(f"heartbeat: signed envelope v1 {len(old)} B = {c_old} credits; compact {len(new)} B = {c_new} credit(s)")
    print(f"offline day ({hours:g} h, one heartbeat per {interval:g} s = {per_day}): signed {per_day * c_old} credits,"
          f" compact {per_day * c_new} credits")
    print(f"build: signed {t_old * 1e6:.0f} us, compact {t_new * 1e6:.0f} us; verify: signed {v_old * 1e6:.0f} us,"
          f" compact (key derived once per van) {v_new * 1e6:.0f} us")
    print(f"ratio credits compact/signed: {c_new / c_old:.2f}; bytes: {len(new) / len(old):.2f}")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(float(a[0]) if a else 10.0, float(a[1]) if len(a) > 1 else 900.0)
