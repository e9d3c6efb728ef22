"""Iridium SBD modem (9602/9603, RockBLOCK) following the ISU AT Command Reference.

``SbdModem`` is one session with the module as an async context manager;
``ModemManager`` keeps one open, re-initialising or reopening the port when
the module stops answering or the port disappears (the reconnect loop lives
outside the client, as for MQTT).  Facts that bite, handled here:

* the MO buffer survives a successful session: it is cleared (AT+SBDD0)
  after success, or the next mailbox check would send it again;
* the MT buffer is overwritten by the next session: it is read (AT+SBDRB)
  right after the session that filled it;
* MOMSN survives power cycles and wraps at 65535: it is reported, never
  used as our sequence number;
* after power-on the module needs seconds before it answers: ``AT`` is
  retried until ``boot_timeout``;
* ``SBDRING`` can arrive in the middle of another response (see devices/at.py);
* ``AT+CSQ`` can take several seconds: it has its own long timeout;
* some 960x firmwares and third-party emulators answer ERROR to ``AT+CSQ``
  and ``AT+CIER``: signal strength is advisory (None, "unknown"), the
  module is opened all the same and sessions are attempted anyway;
* information responses come with or without spaces (``+SBDIX: 0, 1`` or
  ``+SBDIX:0,1``): both parse.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field

from .at import AtChannel
from .errors import ModemError, ModemGone, ModemTimeout, PayloadTooLarge

log = logging.getLogger(__name__)

MO_MAX = 340  # bytes, 9602/9603
MT_MAX = 270

# +SBDIX MO status: 0..4 success; the rest failure.  These cannot succeed by retrying.
MO_FATAL = frozenset({12, 14, 15, 16})
MO_STATUS_TEXT = {
    0: "MO message transferred", 1: "MO transferred, MT too big", 2: "MO transferred, location update not accepted",
    10: "GSS reported call did not complete in time", 11: "MO queue at GSS full", 12: "MO message has too many segments",
    13: "GSS reported session did not complete", 14: "invalid segment size", 15: "access denied",
    16: "ISU locked, SBD blocked", 17: "gateway not responding (local session timeout)", 18: "connection lost (RF drop)",
    19: "link failure", 32: "no network service", 33: "antenna fault", 34: "radio disabled", 35: "ISU busy",
    36: "try later: 3 minutes since last registration", 37: "SBD service temporarily disabled", 38: "try later: traffic management",
    64: "band violation", 65: "PLL lock failure",
}
SBDIX_RE = re.compile(r"^\+SBDIX\s*:\s*" + r"\s*,\s*".join([r"(\d+)"] * 6) + r"$")
CSQ_RE = re.compile(r"^\+CSQF?\s*:\s*(\d)$")


def sbd_checksum(payload: bytes) -> bytes:
    """Least significant 2 bytes of the sum of the payload bytes, high byte first."""
    return (sum(payload) & 0xFFFF).to_bytes(2, "big")


@dataclass(frozen=True)
class SbdixResult:
    mo_status: int
    momsn: int
    mt_status: int  # 0 no message, 1 received, 2 error checking the mailbox
    mtmsn: int
    mt_length: int
    mt_queued: int

    @classmethod
    def parse(cls, line: str) -> SbdixResult:
        m = SBDIX_RE.match(line.strip())
        if not m:
            raise ModemError(f"unreadable +SBDIX answer: {line[:60]!r}")
        return cls(*(int(g) for g in m.groups()))

    @property
    def mo_ok(self) -> bool:
        return self.mo_status <= 4


@dataclass(frozen=True)
class SbdResult:
    """What ``send`` reports: ok, or why not, and whether trying again can help."""

    ok: bool
    mo_status: int
    momsn: int
    retryable: bool
    detail: str
    mt_received: int = 0
    mt_queued: int = 0


@dataclass
class LinkStatus:
    """Plain data other rooms read (no imports from them into devices/)."""

    present: bool = False
    imei: str | None = None
    signal: int | None = None  # bars 0..5
    service: bool | None = None
    last_success: float | None = None
    last_attempt: float | None = None
    last_error: str | None = None
    ring_pending: bool = False
    sessions_ok: int = 0
    sessions_failed: int = 0


@dataclass
class ModemSettings:
    device: str
    baudrate: int = 19200
    boot_timeout: float = 60.0
    command_timeout: float = 5.0
    csq_timeout: float = 20.0
    session_timeout: float = 90.0
    write_timeout: float = 65.0  # the module itself gives up after 60 s without the payload


class SbdModem:
    def __init__(self, settings: ModemSettings, status: LinkStatus | None = None) -> None:
        self.settings = settings
        self.status = status or LinkStatus()
        self._at = AtChannel(settings.device, settings.baudrate)
        self._mt: list[bytes] = []
        self._at.urc_handlers.append(self._on_urc)

    def _on_urc(self, line: str) -> None:
        if line.startswith("SBDRING"):
            self.status.ring_pending = True
        elif line.startswith("+CIEV:"):
            try:
                ind, value = (int(x) for x in line[6:].split(","))
            except ValueError:
                return
            if ind == 0:
                self.status.signal = value
            elif ind == 1:
                self.status.service = value == 1

    async def __aenter__(self) -> SbdModem:
        await self._at.__aenter__()
        try:
            await self._boot()
            await self._at.command("ATE0", self.settings.command_timeout)
            await self._at.command("AT&K0", self.settings.command_timeout)  # 3-wire UART: no RTS/CTS
            await self._at.command("AT+SBDMTA=1", self.settings.command_timeout)  # ring alerts on
            try:
                await self._at.command("AT+CIER=1,1,1", self.settings.command_timeout)  # signal and service indications
            except ModemGone:
                raise
            except ModemError as exc:
                # Indications are a convenience: without them the signal is simply unknown until asked.
                log.info("modem has no signal indications (AT+CIER: %s); signal strength unknown", exc)
            self.status.imei = await self.imei()
            self.status.present = True
        except BaseException:
            await self._at.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.status.present = False
        await self._at.__aexit__(*exc)

    async def _boot(self) -> None:
        deadline = time.monotonic() + self.settings.boot_timeout
        while True:
            try:
                await self._at.command("AT", 2.0)
                return
            except ModemTimeout:
                if time.monotonic() >= deadline:
                    raise ModemTimeout(f"no answer from the modem on {self.settings.device} after {self.settings.boot_timeout:.0f}s") from None

    @property
    def alive(self) -> bool:
        return self._at.alive

    async def imei(self) -> str:
        lines = await self._at.command("AT+CGSN", self.settings.command_timeout)
        for line in lines:
            if line.isdigit() and len(line) == 15:
                return line
        raise ModemError(f"no IMEI in the answer to AT+CGSN: {lines!r}")

    async def signal(self) -> int:
        """Signal bars 0..5; raises ModemError (ERROR, timeout, no answer line) and then the status says unknown (None)."""
        try:
            lines = await self._at.command("AT+CSQ", self.settings.csq_timeout)
        except ModemGone:
            raise
        except ModemError:
            self.status.signal = None
            raise
        for line in lines:
            m = CSQ_RE.match(line.strip())
            if m:
                self.status.signal = int(m.group(1))
                return self.status.signal
        self.status.signal = None
        raise ModemError(f"no signal quality in the answer to AT+CSQ: {lines!r}")

    async def check_alive(self) -> None:
        """Prove the module answers: AT+CSQ, or plain AT where the firmware refuses AT+CSQ (signal unknown)."""
        try:
            await self.signal()
        except ModemGone:
            raise
        except ModemError:
            await self._at.command("AT", self.settings.command_timeout)

    async def _write_mo(self, payload: bytes) -> None:
        async with self._at.exclusive() as at:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.command_timeout
            at._drain_stale()
            await at.write(f"AT+SBDWB={len(payload)}\r".encode())
            line = await at.read_line(deadline, f"AT+SBDWB={len(payload)}")
            if not line.endswith("READY"):  # tolerate line noise glued in front
                raise ModemError(f"AT+SBDWB: expected READY, got {line[:40]!r}")
            await at.write(payload + sbd_checksum(payload))
            deadline = loop.time() + self.settings.write_timeout
            # the result code is one digit 0..3; anything else on the line is noise
            result = await at.read_line(deadline)
            while result not in ("0", "1", "2", "3"):
                if result == "OK" or result.startswith("ERROR"):
                    raise ModemError(f"AT+SBDWB: no result code before {result!r}")
                result = await at.read_line(deadline)
            rest = await at.collect(deadline, None)
            if result != "0":
                reason = {"1": "timeout writing the payload", "2": "checksum mismatch", "3": "wrong message size"}.get(result, result)
                raise ModemError(f"AT+SBDWB refused the message: {reason} {rest!r}")

    async def _session(self) -> SbdixResult:
        lines = await self._at.command("AT+SBDIX", self.settings.session_timeout)
        for line in lines:
            if line.startswith("+SBDIX"):
                return SbdixResult.parse(line)
        raise ModemError(f"no +SBDIX line in the answer: {lines!r}")

    async def _read_mt(self) -> bytes:
        async with self._at.exclusive() as at:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.command_timeout
            at._drain_stale()
            await at.write(b"AT+SBDRB\r")
            # With echo on the command comes back first; ATE0 is set, but tolerate it.
            await at.skip_blank(deadline)
            if bytes(at._buf[:8]).upper().startswith(b"AT+SBDRB"):
                await at.read_line(deadline)
                await at.skip_blank(deadline)
            length = int.from_bytes(await at.read_exact(2, deadline), "big")
            if length > MT_MAX:
                raise ModemError(f"AT+SBDRB: impossible length {length}")
            body = await at.read_exact(length + 2, deadline)
            payload, checksum = body[:length], body[length:]
            await at.collect(deadline, None)
        if sbd_checksum(payload) != checksum:
            raise ModemError("AT+SBDRB: checksum mismatch on the MT message")
        return payload

    async def _clear(self, which: int) -> None:
        lines = await self._at.command(f"AT+SBDD{which}", self.settings.command_timeout)
        if "1" in lines or "0" not in lines:
            raise ModemError(f"AT+SBDD{which} failed: {lines!r}")

    async def _after_session(self, r: SbdixResult) -> None:
        self.status.last_attempt = time.time()
        if r.mt_status == 1:
            # the next session overwrites the MT buffer: read it now
            self._mt.append(await self._read_mt())
        self.status.ring_pending = r.mt_queued > 0

    async def send(self, payload: bytes) -> SbdResult:
        """Send one MO message (1..340 bytes) in one SBD session."""
        if not 1 <= len(payload) <= MO_MAX:
            raise PayloadTooLarge(f"SBD message of {len(payload)} bytes; the module takes 1..{MO_MAX}")
        await self._write_mo(payload)
        r = await self._session()
        await self._after_session(r)
        if r.mo_ok:
            await self._clear(0)  # or the next mailbox check sends it again
            self.status.last_success = time.time()
            self.status.sessions_ok += 1
            self.status.last_error = None
            return SbdResult(True, r.mo_status, r.momsn, False, MO_STATUS_TEXT.get(r.mo_status, "ok"), r.mt_status == 1, r.mt_queued)
        self.status.sessions_failed += 1
        detail = MO_STATUS_TEXT.get(r.mo_status, f"MO status {r.mo_status}")
        self.status.last_error = detail
        return SbdResult(False, r.mo_status, r.momsn, r.mo_status not in MO_FATAL, detail, r.mt_status == 1, r.mt_queued)

    async def receive(self) -> list[bytes]:
        """MT messages: those read after earlier sessions, plus a mailbox check if one is waiting."""
        if self.status.ring_pending and not self._mt:
            await self._clear(0)  # an empty MO buffer: the check must not resend anything
            r = await self._session()
            await self._after_session(r)
        out, self._mt = self._mt, []
        return out


@dataclass
class ModemManager:
    """Keeps a modem open; ``modem`` is None while it is unavailable (logged once each way)."""

    settings: ModemSettings
    retry: float = 10.0
    status: LinkStatus = field(default_factory=LinkStatus)
    modem: SbdModem | None = None
    health_interval: float = 60.0
    health_checks: int = 0  # answered health checks since start (tests wait on it)

    async def run(self) -> None:
        reported = False
        while True:
            try:
                async with SbdModem(self.settings, self.status) as m:
                    self.modem = m
                    if reported:
                        log.info("satellite modem on %s is back", self.settings.device)
                    reported = False
                    while m.alive:
                        await asyncio.sleep(self.health_interval)
                        await m.check_alive()
                        self.health_checks += 1
            except (ModemError, OSError) as exc:
                if not reported:
                    log.warning("satellite modem unavailable (%s); retrying every %.0fs", exc, self.retry)
                    reported = True
                self.status.last_error = str(exc)
            finally:
                self.modem = None
                self.status.present = False
            await asyncio.sleep(self.retry)

    # The same calls as SbdModem, on whichever modem is open now.
    def _current(self) -> SbdModem:
        if self.modem is None:
            raise ModemGone(f"satellite modem on {self.settings.device} is unavailable")
        return self.modem

    async def send(self, payload: bytes) -> SbdResult:
        return await self._current().send(payload)

    async def receive(self) -> list[bytes]:
        return await self._current().receive()

    async def signal(self) -> int:
        return await self._current().signal()
