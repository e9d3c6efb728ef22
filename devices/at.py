"""AT-command engine over a serial port (pyserial), one command at a time.

A reader thread owns the blocking ``read()``; bytes are handed to the event
loop, where commands parse them.  Unsolicited result codes (``SBDRING``,
``+CIEV:``, ``+AREG:``) are recognised wherever they appear between lines,
even in the middle of another command's response, and dispatched to
subscribers instead of confusing the command.  Echo (``ATE1``) is tolerated:
a line equal to the command just sent is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import serial

from .errors import ModemError, ModemGone, ModemTimeout

log = logging.getLogger(__name__)

URC_PREFIXES = ("SBDRING", "+CIEV:", "+AREG:")
FINAL_OK = "OK"
FINAL_ERRORS = ("ERROR", "+CME ERROR", "+CMS ERROR")


class AtChannel:
    """One open serial port.  ``async with AtChannel(device) as at: await at.command("AT")``."""

    def __init__(self, device: str, baudrate: int = 19200, port_factory: Callable[..., Any] | None = None) -> None:
        self.device = device
        self.baudrate = baudrate
        self._factory = port_factory or serial.serial_for_url
        self._port: Any = None
        self._buf = bytearray()
        self._data = asyncio.Event()
        self._error: Exception | None = None
        self._lock = asyncio.Lock()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.urc_handlers: list[Callable[[str], None]] = []

    # -- lifecycle ---------------------------------------------------------------
    async def __aenter__(self) -> AtChannel:
        self._loop = asyncio.get_running_loop()
        try:
            self._port = await self._loop.run_in_executor(None, self._open)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ModemGone(f"cannot open {self.device}: {exc}") from exc
        self._thread = threading.Thread(target=self._reader, name=f"at-reader {self.device}", daemon=True)
        self._thread.start()
        return self

    def _open(self) -> Any:
        return self._factory(self.device, baudrate=self.baudrate, timeout=0.2, write_timeout=5, rtscts=False, dsrdtr=False)

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        port, self._port = self._port, None
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 2.0)
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def _reader(self) -> None:
        assert self._loop is not None
        port = self._port
        while not self._stop.is_set():
            try:
                # read what is there (at least one byte, or time out): never wait for a full buffer
                data = port.read(max(1, port.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                if not self._stop.is_set():
                    self._loop.call_soon_threadsafe(self._fail, ModemGone(f"{self.device} went away: {exc}"))
                return
            if data:
                self._loop.call_soon_threadsafe(self._feed, bytes(data))

    def _fail(self, exc: Exception) -> None:
        self._error = exc
        self._data.set()

    def _feed(self, data: bytes) -> None:
        self._buf.extend(data)
        self._data.set()
        if not self._busy:
            self._drain_idle()

    def _drain_idle(self) -> None:
        """Between commands: dispatch URCs, drop anything else (noise, late answers)."""
        while True:
            line = self._take_line()
            if line is None:
                return
            if line.startswith(URC_PREFIXES):
                self._dispatch(line)

    def _dispatch(self, line: str) -> None:
        for handler in self.urc_handlers:
            try:
                handler(line)
            except Exception:  # a subscriber's bug must not kill the channel
                log.exception("URC handler failed on %r", line)

    @property
    def alive(self) -> bool:
        return self._port is not None and self._error is None

    # -- parsing -----------------------------------------------------------------
    def _take_line(self) -> str | None:
        ends = [k for k in (self._buf.find(b"\r"), self._buf.find(b"\n")) if k >= 0]
        if not ends:
            return None
        j = min(ends)
        raw = bytes(self._buf[:j])
        del self._buf[: j + 2 if self._buf[j : j + 2] == b"\r\n" else j + 1]
        return raw.decode("ascii", errors="replace").strip()

    async def _wait_data(self, deadline: float) -> None:
        if self._error is not None:
            raise self._error
        self._data.clear()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise ModemTimeout("modem did not answer in time")
        try:
            await asyncio.wait_for(self._data.wait(), remaining)
        except TimeoutError as exc:
            raise ModemTimeout("modem did not answer in time") from exc
        if self._error is not None:
            raise self._error

    async def read_line(self, deadline: float, echo: str | None = None) -> str:
        """Next non-empty, non-URC, non-echo line."""
        while True:
            line = self._take_line()
            if line is None:
                await self._wait_data(deadline)
                continue
            if not line:
                continue
            if line.startswith(URC_PREFIXES):
                self._dispatch(line)
                continue
            if echo is not None and line.upper() == echo.upper():
                continue
            return line

    async def read_exact(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            await self._wait_data(deadline)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def skip_blank(self, deadline: float) -> None:
        """Before a binary answer the modem may send CR/LF; drop them."""
        while True:
            while bytes(self._buf[:1]) in (b"\r", b"\n"):
                del self._buf[:1]
            if self._buf:
                return
            await self._wait_data(deadline)

    async def write(self, data: bytes) -> None:
        if self._port is None or self._error is not None:
            raise self._error or ModemGone(f"{self.device} is closed")
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._port.write, data)
        except (serial.SerialException, OSError) as exc:
            gone = ModemGone(f"write to {self.device} failed: {exc}")
            self._fail(gone)  # the port is gone now, whether or not the reader thread has noticed yet
            raise gone from exc

    # -- commands ------------------------------------------------------------------
    def exclusive(self) -> _Exclusive:
        """Hold the channel for a multi-step exchange (SBDWB, SBDRB)."""
        return _Exclusive(self)

    async def command(self, cmd: str, timeout: float = 5.0) -> list[str]:
        """Send one command; return its information lines; raise on ERROR or timeout."""
        async with self.exclusive():
            return await self.command_locked(cmd, timeout)

    async def command_locked(self, cmd: str, timeout: float = 5.0) -> list[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._drain_stale()
        await self.write(cmd.encode("ascii") + b"\r")
        return await self.collect(deadline, cmd)

    async def collect(self, deadline: float, echo: str | None) -> list[str]:
        lines: list[str] = []
        while True:
            line = await self.read_line(deadline, echo)
            if line == FINAL_OK:
                return lines
            if line.startswith(FINAL_ERRORS):
                raise ModemError(f"{echo or 'command'}: {line}")
            lines.append(line)

    def _drain_stale(self) -> None:
        """Drop what arrived before this command (noise, a late answer), keeping URCs."""
        self._drain_idle()
        self._buf.clear()


class _Exclusive:
    def __init__(self, ch: AtChannel) -> None:
        self.ch = ch

    async def __aenter__(self) -> AtChannel:
        await self.ch._lock.acquire()
        self.ch._busy = True
        return self.ch

    async def __aexit__(self, *exc: object) -> None:
        self.ch._busy = False
        self.ch._drain_idle()
        self.ch._lock.release()
