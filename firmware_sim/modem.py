"""An Iridium 9603 on a pseudo-terminal: the AT subset the node uses, byte for byte.

Echo on/off, MO/MT buffers with checksums, MOMSN/MTMSN counters (MOMSN
wraps at 65535), SBDRING, +CIEV indications, a signal model, session
failures at a configurable rate, a boot delay, line noise, and a switch
that makes it go silent mid-command.  Its satellite side is a
``SatelliteGateway`` (firmware_sim/gateway.py) that delivers MO messages to
HQ over DirectIP and queues MT messages for this IMEI.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import tty
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

MO_MAX = 340


class Gateway(Protocol):
    def deliver_mo(self, imei: str, momsn: int, mtmsn: int, payload: bytes) -> None: ...

    def take_mt(self, imei: str) -> tuple[bytes | None, int]: ...  # (message, still queued)


def checksum(b: bytes) -> bytes:
    return (sum(b) & 0xFFFF).to_bytes(2, "big")


@dataclass
class ModemSimConfig:
    imei: str = "300434063839690"
    boot_delay: float = 0.0
    failure_rate: float = 0.0  # share of SBDIX sessions that fail (RF drop, no service)
    noise_rate: float = 0.0  # share of answers preceded by garbage bytes
    csq_delay: float = 0.0
    session_delay: float = 0.05
    signal: Callable[[], int] = field(default=lambda: 4)
    seed: int = 1
    # Some 960x firmwares and third-party emulators answer ERROR to AT+CSQ and AT+CIER.
    csq_supported: bool = True
    # How information responses are spaced: "standard" as the 9603 ("+SBDIX: 0, 1, ..." and "+CSQ:4"),
    # "compact" without any space, "spaced" with a space after every colon and comma.
    answer_style: str = "standard"


class SkySignal:
    """Signal bars along a trip: open sky mostly, blocks and trees fade it, the depot roof kills it.

    ``blocked`` are (start, end) windows of simulated seconds with no sky at
    all (0 bars); elsewhere the bars wander between 2 and 5 with slow fading.
    """

    def __init__(self, clock: Callable[[], float], blocked: list[tuple[float, float]] | None = None, seed: int = 7) -> None:
        self.clock = clock
        self.blocked = blocked or []
        self.rnd = random.Random(seed)
        self._level = 4.0

    def __call__(self) -> int:
        t = self.clock()
        if any(a <= t < b for a, b in self.blocked):
            return 0
        self._level = min(5.0, max(1.5, self._level + self.rnd.uniform(-0.7, 0.7)))
        return round(self._level)


class ModemSim:
    """``async with ModemSim(cfg, gateway) as m: print(m.device)``"""

    def __init__(self, config: ModemSimConfig | None = None, gateway: Gateway | None = None) -> None:
        self.cfg = config or ModemSimConfig()
        self.gateway = gateway
        self.rnd = random.Random(self.cfg.seed)
        self.echo = True
        self.ring_alerts = False
        self.cier = False
        self.mo = b""
        self.mt = b""
        self.momsn = 0
        self.mtmsn = 0
        self.silent = False  # stop answering (a module that hung)
        self.forced_mo_status: int | None = None
        self.corrupt_mt_checksum = False
        self.sessions: list[int] = []  # MO status of every session, for tests
        self._master = -1
        self._slave = -1
        self.device = ""
        self._inbuf = bytearray()
        self._binary_wait: tuple[int, float] | None = None  # (bytes expected incl. checksum, deadline)
        self._booted_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ModemSim:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._master)
        self.device = os.ttyname(self._slave)
        self._booted_at = time.monotonic() + self.cfg.boot_delay
        asyncio.get_running_loop().add_reader(self._master, self._on_readable)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.unplug()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def unplug(self) -> None:
        """The USB cable is pulled: the device node disappears."""
        if self._master >= 0:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            self._master = -1
        if self._slave >= 0:
            os.close(self._slave)
            self._slave = -1

    # -- output --------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self._master < 0 or self.silent:
            return
        if data and self.cfg.noise_rate and self.rnd.random() < self.cfg.noise_rate:
            # garbage without line ends, as a noisy UART produces
            data = bytes(self.rnd.choice(b"\x00\xff\x7f~#@%") for _ in range(self.rnd.randint(1, 6))) + data
        try:
            os.write(self._master, data)
        except OSError:
            pass

    def _line(self, text: str) -> None:
        self._write(f"\r\n{text}\r\n".encode())

    def _info(self, name: str, values: list[int]) -> str:
        """One information response (``+NAME:v,v``) in the configured answer style."""
        standard_sep = ", " if name == "SBDIX" else ","
        colon, sep = {"compact": (":", ","), "spaced": (": ", ", ")}.get(self.cfg.answer_style, (": " if name == "SBDIX" else ":", standard_sep))
        return f"+{name}{colon}{sep.join(str(v) for v in values)}"

    def ring(self) -> None:
        """An MT message is waiting at the gateway."""
        if self.ring_alerts:
            self._write(b"\r\nSBDRING\r\n")

    # -- input ---------------------------------------------------------------------
    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 1024)
        except OSError:
            return
        if not data:
            return
        self._inbuf.extend(data)
        self._process()

    def _process(self) -> None:
        while True:
            if self._binary_wait is not None:
                need, _ = self._binary_wait
                if len(self._inbuf) < need:
                    return
                blob = bytes(self._inbuf[:need])
                del self._inbuf[:need]
                self._binary_wait = None
                payload, cs = blob[:-2], blob[-2:]
                if checksum(payload) != cs:
                    self._line("2")
                else:
                    self.mo = payload
                    self._line("0")
                self._line("OK")
                continue
            i = self._inbuf.find(b"\r")
            if i < 0:
                return
            raw = bytes(self._inbuf[:i])
            del self._inbuf[: i + 1]
            if self._inbuf[:1] == b"\n":
                del self._inbuf[:1]
            if time.monotonic() < self._booted_at or self.silent:
                continue  # still booting, or hung: no answer at all
            cmd = raw.decode("ascii", errors="replace").strip()
            if not cmd:
                continue
            if self.echo:
                self._write(raw + b"\r")
            self._command(cmd)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _command(self, cmd: str) -> None:
        u = cmd.upper()
        if u in ("AT", "AT&K0", "AT&K3", "AT&D0", "AT&W0"):
            self._line("OK")
        elif u in ("ATE0", "ATE1"):
            self.echo = u == "ATE1"
            self._line("OK")
        elif u == "AT+CGSN":
            self._line(self.cfg.imei)
            self._line("OK")
        elif u in ("AT+CSQ", "AT+CSQF") and not self.cfg.csq_supported:
            self._line("ERROR")
        elif u == "AT+CSQ":
            self._spawn(self._csq())
        elif u.startswith("AT+CIER=") and not self.cfg.csq_supported:
            self._line("ERROR")
        elif u.startswith("AT+CIER="):
            parts = u[8:].split(",")
            self.cier = parts[0] == "1"
            self._line("OK")
            if self.cier:
                self._line(self._info("CIEV", [0, self.cfg.signal()]))
                self._line(self._info("CIEV", [1, 1]))
        elif u.startswith("AT+SBDMTA="):
            self.ring_alerts = u.endswith("1")
            self._line("OK")
        elif u.startswith("AT+SBDWB="):
            try:
                n = int(u[9:])
            except ValueError:
                self._line("ERROR")
                return
            if not 1 <= n <= MO_MAX:
                self._line("3")
                self._line("OK")
                return
            self._write(b"READY\r\n")
            self._binary_wait = (n + 2, time.monotonic() + 60)
        elif u == "AT+SBDIX" or u == "AT+SBDIXA":
            self._spawn(self._sbdix())
        elif u == "AT+SBDRB":
            body = self.mt + (bytes(2) if self.corrupt_mt_checksum else checksum(self.mt))
            self._write(len(self.mt).to_bytes(2, "big") + body + b"\r\nOK\r\n")
        elif u.startswith("AT+SBDD"):
            which = u[7:] or "0"
            if which in ("0", "2"):
                self.mo = b""
            if which in ("1", "2"):
                self.mt = b""
            self._line("0")
            self._line("OK")
        else:
            self._line("ERROR")

    async def _csq(self) -> None:
        await asyncio.sleep(self.cfg.csq_delay)
        self._line(self._info("CSQ", [self.cfg.signal()]))
        self._line("OK")

    async def _sbdix(self) -> None:
        await asyncio.sleep(self.cfg.session_delay)
        if self.silent:
            return
        bars = self.cfg.signal()
        if self.forced_mo_status is not None:
            status = self.forced_mo_status
        elif bars == 0:
            status = 32  # no network service
        elif self.cfg.failure_rate and self.rnd.random() < self.cfg.failure_rate:
            status = self.rnd.choice((13, 17, 18, 19))
        else:
            status = 0
        mt_status, mt_len, queued = 0, 0, 0
        if status <= 4:
            if self.mo:
                self.momsn = (self.momsn + 1) % 65536
                if self.gateway is not None:
                    self.gateway.deliver_mo(self.cfg.imei, self.momsn, self.mtmsn, self.mo)
            if self.gateway is not None:
                msg, queued = self.gateway.take_mt(self.cfg.imei)
                if msg is not None:
                    self.mtmsn = (self.mtmsn + 1) % 65536
                    self.mt = msg
                    mt_status, mt_len = 1, len(msg)
        self.sessions.append(status)
        self._line(self._info("SBDIX", [status, self.momsn, mt_status, self.mtmsn, mt_len, queued]))
        self._line("OK")
