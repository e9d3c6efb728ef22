"""Bytes per GPS point on the wire for a simulated day of 1 Hz driving.

Drives firmware_sim Route trips back to back for 8 hours (with stops), adds
a realistic receiver wobble (a slowly wandering error, not white noise: real
receivers filter), and compares, per point, including time, speed and course:

* JSON, OwnTracks-like (what a tracker app would send);
* plain binary delta (per point: varint dt, dlat, dlon, speed, course; no compression);
* ours: envelope v1 with the delta-of-delta column codec + zlib, signature and
  headers included, in batches of 500 points (what the uplink sends).

Also bytes per record (sealed application) vs the same record as JSON + base64 per message.
Run: .venv/bin/python bench/sync_gps_bytes.py
"""

from __future__ import annotations

import base64
import json
import os
import random

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_sim.route import Route
from sync import poscodec
from sync.envelope import Envelope, encode

DAY_S = 8 * 3600
BATCH = 500
# per-step innovation of the receiver error, degrees; with the 0.98 decay about 0.8 m standard deviation
WOBBLE = 1.5e-6


def simulated_day(seed: int = 1) -> list[poscodec.Position]:
    rnd = random.Random(seed)
    trips = [Route.from_trip(c) for c in ("TRIP-NORTH", "TRIP-SOUTH", "TRIP-STRIKE", "TRIP-EAST")]
    t0 = 1_780_000_000.0
    out: list[poscodec.Position] = []
    err_lat = err_lon = 0.0
    t = 0
    while len(out) < DAY_S:
        for r in trips:
            for s in range(int(r.duration_s)):
                if len(out) >= DAY_S:
                    break
                p = r.at(s)
                # a slowly wandering receiver error of about a metre
                err_lat = 0.98 * err_lat + rnd.gauss(0, WOBBLE)
                err_lon = 0.98 * err_lon + rnd.gauss(0, WOBBLE)
                out.append(poscodec.Position(t0 + t, p.lat + err_lat, p.lon + err_lon, p.speed, p.track, True))
                t += 1
    return out


def owntracks_json(p: poscodec.Position) -> bytes:
    return json.dumps({"_type": "location", "tid": "v1", "tst": int(p.time), "lat": round(p.lat, 6), "lon": round(p.lon, 6),
                       "vel": round((p.speed or 0) * 3.6), "cog": round(p.course or 0), "acc": 5, "alt": 110, "batt": 100,
                       "conn": "m", "t": "p", "vac": 3}).encode()


def _varint(n: int) -> int:
    n = (n << 1) ^ (n >> 63)
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def plain_delta(points: list[poscodec.Position]) -> int:
    total = 0
    prev = (0, 0, 0)
    for p in points:
        cur = (int(p.time), round(p.lat * 1e7), round(p.lon * 1e7))
        total += sum(_varint(c - q) for c, q in zip(cur, prev, strict=True)) + 2 + 2  # speed cm/s u16, course u16
        prev = cur
    return total


def main() -> None:
    global WOBBLE
    for wobble, label in ((0.0, "clean route"), (1.5e-6, "receiver wobble ~0.8 m")):
        WOBBLE = wobble
        print(f"--- {label}")
        gps(simulated_day())
    records()


def gps(pts: list[poscodec.Position]) -> None:
    key = Ed25519PrivateKey.generate()
    items = [poscodec.pack_position(p) for p in pts]
    ours = 0
    for i in range(0, len(items), BATCH):
        ours += len(encode(Envelope("van-01", "pos", i + 1, tuple(items[i : i + BATCH]), 1, trusted_time=True), key))
    js = sum(len(owntracks_json(p)) for p in pts)
    delta = plain_delta(pts)
    n = len(pts)
    print(f"GPS, simulated day: {n} points at 1 Hz (8 h of trips with stops)")
    print(f"  JSON (OwnTracks-like):   {js / n:7.2f} B/point")
    print(f"  plain binary delta:      {delta / n:7.2f} B/point")
    print(f"  envelope v1 (ours):      {ours / n:7.2f} B/point  (batches of {BATCH}, headers and signature included)")
    print(f"  ratio JSON/ours: {js / ours:.1f}x   plain-delta/ours: {delta / ours:.1f}x")


def records() -> None:
    key = Ed25519PrivateKey.generate()
    # records: a sealed application as the store writes it, batch of 50 vs one JSON message each
    rec = json.dumps({"type": "application", "id": "0" * 32, "number": "VAN-01-20260101-0001", "service_code": "PASSPORT_ID",
                      "created": 1.78e9, "version": 1, "fields": {k: "{f}" for k in ("given_name", "rnokpp", "surname")},
                      "wrap_hq": "{w}"}, separators=(",", ":")).encode()
    def one(i: int) -> bytes:
        # sealed fields are ciphertext: random bytes, base64 as the store writes them
        return (rec.replace(b"0001", f"{i:04d}".encode()).replace(b'"{f}"', b'"' + base64.b64encode(os.urandom(44)) + b'"', 1)
                .replace(b'"{f}"', b'"' + base64.b64encode(os.urandom(40)) + b'"', 1)
                .replace(b'"{f}"', b'"' + base64.b64encode(os.urandom(46)) + b'"', 1)
                .replace(b'"{w}"', b'"' + base64.b64encode(os.urandom(92)) + b'"'))
    recs = [one(i) for i in range(50)]
    rec = recs[0]
    batch = encode(Envelope("van-01", "rec", 1, tuple(recs), 1), key)
    print(f"records: JSON per message {len(rec)} B/record, envelope v1 batch of 50: {len(batch) / 50:.1f} B/record "
          f"(ratio {len(rec) * 50 / len(batch):.2f}x; sealed fields are ciphertext and do not compress)")


if __name__ == "__main__":
    main()
