"""NMEA 0183 sentences of a simulated receiver (GGA, RMC, GSA, GSV) with valid checksums."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone

from .route import SimPosition


def checksum(body: str) -> str:
    c = 0
    for ch in body.encode("ascii"):
        c ^= ch
    return f"{c:02X}"


def sentence(body: str) -> bytes:
    return f"${body}*{checksum(body)}\r\n".encode("ascii")


def _lat(lat: float) -> tuple[str, str]:
    a = abs(lat)
    d = int(a)
    return f"{d:02d}{(a - d) * 60:07.4f}", "N" if lat >= 0 else "S"


def _lon(lon: float) -> tuple[str, str]:
    a = abs(lon)
    d = int(a)
    return f"{d:03d}{(a - d) * 60:07.4f}", "E" if lon >= 0 else "W"


@dataclass
class ReceiverState:
    fix: bool = True  # False in a tunnel or during a cold start
    satellites: int = 9
    hdop: float = 0.9


def epoch(ts: float, pos: SimPosition | None, state: ReceiverState, rnd: random.Random) -> bytes:
    """One second of output: GGA, GSA, GSV, RMC (what a u-blox style receiver sends at 1 Hz)."""
    t = datetime.fromtimestamp(ts, timezone.utc)
    hms = t.strftime("%H%M%S") + f".{t.microsecond // 10000:02d}"
    dmy = t.strftime("%d%m%y")
    out = []
    if state.fix and pos is not None:
        la, ns = _lat(pos.lat)
        lo, ew = _lon(pos.lon)
        knots = pos.speed * 1.943844
        out.append(sentence(f"GPGGA,{hms},{la},{ns},{lo},{ew},1,{state.satellites:02d},{state.hdop:.1f},110.0,M,30.0,M,,"))
        prns = ",".join(f"{p:02d}" for p in range(1, state.satellites + 1)[:12]) + "," * (12 - min(12, state.satellites))
        out.append(sentence(f"GPGSA,A,3,{prns},{state.hdop + 0.5:.1f},{state.hdop:.1f},1.2"))
        rmc = f"GPRMC,{hms},A,{la},{ns},{lo},{ew},{knots:.1f},{pos.track:.1f},{dmy},,,A"
    else:
        out.append(sentence(f"GPGGA,{hms},,,,,0,00,99.9,,,,,,"))
        out.append(sentence("GPGSA,A,1,,,,,,,,,,,,,99.9,99.9,99.9"))
        rmc = f"GPRMC,{hms},V,,,,,,,{dmy},,,N"
    sats = state.satellites if state.fix else 0
    n_msgs = max(1, (sats + 3) // 4)
    for m in range(n_msgs):
        body = f"GPGSV,{n_msgs},{m + 1},{sats:02d}"
        for prn in range(m * 4 + 1, min(sats, m * 4 + 4) + 1):
            body += f",{prn:02d},{rnd.randint(10, 85):02d},{rnd.randint(0, 359):03d},{rnd.randint(25, 45):02d}"
        out.append(sentence(body))
    out.append(sentence(rmc))
    return b"".join(out)
