"""A GPS receiver on a pseudo-terminal: NMEA at 1 Hz from a route, for real gpsd to read.

Simulated time runs ``speedup`` times faster than real time.  ``tunnels``
are (start, end) windows of simulated seconds without a fix; ``cold_start``
is how long the receiver searches for satellites after power-on;
``time_offset`` shifts the date it reports (a week-number rollover).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import tty
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from .nmea import ReceiverState, epoch
from .route import Route, SimPosition


@dataclass
class NmeaPty:
    route: Route
    speedup: float = 1.0
    period: float = 1.0  # real seconds between epochs
    tunnels: list[tuple[float, float]] = field(default_factory=list)
    cold_start: float = 0.0
    seed: int = 1
    jitter_m: float = 2.5  # receiver noise, metres (1 sigma), also while parked
    device: str = ""
    fix_enabled: bool = True  # tests switch the sky off and on
    hold_s: float = 0.0  # real seconds the van waits in the yard before the route starts
    # added to the true time the receiver reports: -WEEK_ROLLOVER_S is old firmware after a GPS week-number rollover
    time_offset: float = 0.0
    _master: int = -1
    _slave: int = -1
    _task: asyncio.Task[None] | None = None
    _t0: float = 0.0

    def sim_time(self) -> float:
        return max(0.0, time.monotonic() - self._t0 - self.hold_s) * self.speedup

    def position(self) -> SimPosition:
        return self.route.at(self.sim_time())

    def has_fix(self, t: float) -> bool:
        return self.fix_enabled and t >= self.cold_start and not any(a <= t < b for a, b in self.tunnels)

    async def __aenter__(self) -> NmeaPty:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.device = os.ttyname(self._slave)
        self._t0 = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="nmea-pty")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    async def _run(self) -> None:
        rnd = random.Random(self.seed)
        state = ReceiverState()
        while True:
            t = self.sim_time()
            state.fix = self.has_fix(t)
            data = epoch(time.time() + self.time_offset, jittered(self.route.at(t), self.jitter_m, rnd), state, rnd)
            with contextlib.suppress(OSError):  # nobody reading yet: the pty buffer just fills
                os.write(self._master, data)
            await asyncio.sleep(self.period)


def jittered(pos: SimPosition, sigma_m: float, rnd: random.Random) -> SimPosition:
    """What a real receiver reports: the true position plus metres of noise."""
    if sigma_m <= 0:
        return pos
    dlat = rnd.gauss(0, sigma_m) / 111_320
    dlon = rnd.gauss(0, sigma_m) / (111_320 * max(0.1, math.cos(math.radians(pos.lat))))
    return SimPosition(pos.t, pos.lat + dlat, pos.lon + dlon, pos.speed, pos.track, pos.at_stop)


def gpsd_binary() -> str | None:
    return shutil.which("gpsd") or (os.path.exists("/usr/sbin/gpsd") and "/usr/sbin/gpsd") or None


@contextlib.asynccontextmanager
async def real_gpsd(device: str | None, port: int, host: str = "127.0.0.1", prefix: Sequence[str] = (),
                    env: Mapping[str, str] | None = None) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Run Debian's gpsd in the foreground on one device (or none: a receiver not plugged in).

    ``prefix`` runs it through another program (``faketime``: a Pi that booted with a stale clock), with ``env`` added.
    """
    binary = gpsd_binary()
    if binary is None:
        raise FileNotFoundError("gpsd is not installed")
    # -N foreground, -n poll without clients, -b read-only (never reconfigure the receiver)
    args = [*prefix, binary, "-N", "-n", "-b", "-S", str(port)]
    if device is None:
        # gpsd needs a device or a control socket to start at all
        args += ["-F", os.path.join(tempfile.mkdtemp(prefix="gpsd-"), "control.sock")]
    else:
        args.append(device)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=None if env is None else {**os.environ, **env})
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex((host, port)) == 0:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"gpsd exited with {proc.returncode}")
            await asyncio.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.get_running_loop().run_in_executor(None, proc.wait, 5)
            except subprocess.TimeoutExpired:
                proc.kill()
