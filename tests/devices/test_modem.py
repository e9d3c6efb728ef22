"""The SBD driver against the 9603 emulator on a real pseudo-terminal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from devices.errors import ModemError, ModemGone, ModemTimeout, PayloadTooLarge
from devices.modem import ModemManager, ModemSettings, SbdixResult, SbdModem
from firmware_sim.gateway import SatelliteGateway
from firmware_sim.modem import ModemSim, ModemSimConfig
from hq.directip import DirectIpReceiver, MoMessage, send_mt

pytestmark = pytest.mark.functional


async def until(pred: Callable[[], object], timeout: float = 15.0) -> None:
    """Poll with a deadline (the machine may be busy: the deadline only bounds a hang)."""
    for _ in range(int(timeout / 0.05)):
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.fixture
async def gateway() -> AsyncIterator[SatelliteGateway]:
    async with SatelliteGateway(hq_port=1) as gw:  # HQ unreachable unless a test points it somewhere
        yield gw


@pytest.fixture
async def sim(gateway: SatelliteGateway) -> AsyncIterator[ModemSim]:
    async with ModemSim(ModemSimConfig(), gateway) as m:
        gateway.on_mt_queued.append(lambda imei: m.ring())
        yield m


def settings(sim: ModemSim, **kw: float) -> ModemSettings:
    return ModemSettings(sim.device, boot_timeout=kw.pop("boot_timeout", 5), command_timeout=kw.pop("command_timeout", 2),
                         csq_timeout=kw.pop("csq_timeout", 3), session_timeout=kw.pop("session_timeout", 3))


async def test_init_reads_imei_and_signal(sim: ModemSim) -> None:
    async with SbdModem(settings(sim)) as m:
        assert await m.imei() == "300434063839690"
        assert await m.signal() == 4
        assert m.status.present and m.status.imei == "300434063839690"
    assert sim.echo is False and sim.ring_alerts and sim.cier


async def test_send_delivers_once_and_clears_the_mo_buffer(sim: ModemSim, gateway: SatelliteGateway) -> None:
    async with SbdModem(settings(sim)) as m:
        r = await m.send(b"hello van-01")
        assert r.ok and r.mo_status == 0 and r.momsn == 1
        assert sim.mo == b""  # cleared, so ...
        m.status.ring_pending = True
        assert await m.receive() == []  # ... a mailbox check sends nothing again
    assert [p for _, _, p in gateway.delivered] == [b"hello van-01"]


async def test_oversized_payload_is_refused_before_the_modem(sim: ModemSim) -> None:
    async with SbdModem(settings(sim)) as m:
        with pytest.raises(PayloadTooLarge):
            await m.send(bytes(341))
        with pytest.raises(PayloadTooLarge):
            await m.send(b"")
        assert (await m.send(bytes(340))).ok
    assert sim.sessions == [0]


@pytest.mark.parametrize("status,ok,retryable", [(0, True, False), (2, True, False), (18, False, True), (32, False, True),
                                                 (36, False, True), (15, False, False), (16, False, False)])
async def test_every_sbdix_status_class(sim: ModemSim, gateway: SatelliteGateway, status: int, ok: bool, retryable: bool) -> None:
    sim.forced_mo_status = status
    async with SbdModem(settings(sim)) as m:
        r = await m.send(b"x")
        assert (r.ok, r.retryable, r.mo_status) == (ok, retryable, status)
        assert bool(gateway.delivered) == ok
        assert m.status.sessions_ok == int(ok) and m.status.sessions_failed == int(not ok)


async def test_mt_message_with_ring_alert(sim: ModemSim, gateway: SatelliteGateway) -> None:
    async with SbdModem(settings(sim)) as m:
        gateway.queue_mt(sim.cfg.imei, b"cmd: sync now")
        gateway.queue_mt(sim.cfg.imei, b"cmd: second")
        await until(lambda: m.status.ring_pending)  # the SBDRING travels over the pty
        assert await m.receive() == [b"cmd: sync now"]
        assert m.status.ring_pending  # one more is queued at the gateway
        assert await m.receive() == [b"cmd: second"]
        assert not m.status.ring_pending and await m.receive() == []


async def test_mt_read_before_the_next_session_overwrites_it(sim: ModemSim, gateway: SatelliteGateway) -> None:
    async with SbdModem(settings(sim)) as m:
        gateway.queue_mt(sim.cfg.imei, b"first")
        gateway.queue_mt(sim.cfg.imei, b"second")
        assert (await m.send(b"a")).ok  # this session brings "first" down
        assert (await m.send(b"b")).ok  # and this one "second": "first" must not be lost
        assert await m.receive() == [b"first", b"second"]


async def test_mt_checksum_error_is_refused(sim: ModemSim, gateway: SatelliteGateway) -> None:
    sim.corrupt_mt_checksum = True
    async with SbdModem(settings(sim)) as m:
        gateway.queue_mt(sim.cfg.imei, b"garbled")
        with pytest.raises(ModemError, match="checksum"):
            await m.send(b"x")


async def test_ring_in_the_middle_of_a_slow_csq(sim: ModemSim, gateway: SatelliteGateway) -> None:
    sim.cfg.csq_delay = 0.5
    async with SbdModem(settings(sim)) as m:
        task = asyncio.create_task(m.signal())
        await asyncio.sleep(0.1)
        gateway.queue_mt(sim.cfg.imei, b"urgent")  # SBDRING lands while +CSQ is pending
        assert await task == 4
        await until(lambda: m.status.ring_pending)


async def test_modem_that_goes_silent_mid_command(sim: ModemSim) -> None:
    async with SbdModem(settings(sim)) as m:
        sim.cfg.csq_delay = 0.3
        task = asyncio.create_task(m.signal())
        await asyncio.sleep(0.05)
        sim.silent = True
        with pytest.raises(ModemTimeout):
            await task
        sim.silent = False
        assert await m.signal() == 4  # and it recovers when the module answers again


async def test_port_that_disappears(sim: ModemSim) -> None:
    async with SbdModem(settings(sim)) as m:
        sim.unplug()
        with pytest.raises(ModemGone):
            await m.send(b"x")
        assert not m.alive
    with pytest.raises(ModemGone):
        async with SbdModem(settings(sim)):
            pass


async def test_line_noise_does_not_break_the_exchange(gateway: SatelliteGateway) -> None:
    async with ModemSim(ModemSimConfig(noise_rate=0.3, seed=3), gateway) as sim:
        async with SbdModem(settings(sim)) as m:
            for i in range(8):
                assert (await m.send(f"msg {i}".encode())).ok
                assert await m.signal() == 4
    assert [p for _, _, p in gateway.delivered] == [f"msg {i}".encode() for i in range(8)]


async def test_boot_delay_and_momsn_wrap(gateway: SatelliteGateway) -> None:
    async with ModemSim(ModemSimConfig(boot_delay=1.0), gateway) as sim:
        sim.momsn = 65535
        async with SbdModem(settings(sim)) as m:
            r = await m.send(b"after wrap")
            assert r.ok and r.momsn == 0


async def test_directip_round_trip(sim: ModemSim, gateway: SatelliteGateway) -> None:
    got: list[MoMessage] = []

    async def on_mo(mo: MoMessage) -> None:
        got.append(mo)

    async with DirectIpReceiver(on_mo, host="127.0.0.1", port=0) as rx:
        gateway.hq_port = rx.port
        async with SbdModem(settings(sim)) as m:
            assert (await m.send(b"\x01\x02signed envelope")).ok
            await until(lambda: got)
            conf = await send_mt("127.0.0.1", gateway.mt_port, sim.cfg.imei, b"down", client_id=7)
            assert conf.ok and conf.client_id == 7 and conf.status == 1
            await until(lambda: m.status.ring_pending)
            assert await m.receive() == [b"down"]
    assert len(got) == 1 and got[0].payload == b"\x01\x02signed envelope"
    assert got[0].imei == sim.cfg.imei and got[0].momsn == 1
    await until(lambda: gateway.confirmed == 1)


# -- signal strength is advisory; answers with or without spaces (issue 15, item 7) ----------------------------

@pytest.mark.parametrize("line", ["+SBDIX: 0, 1, 0, 0, 0, 0", "+SBDIX:0,1,0,0,0,0", "+SBDIX : 0 ,1 , 0,0,0, 0", " +SBDIX:0, 1,0,0,0,0 "])
def test_sbdix_parses_with_or_without_spaces(line: str) -> None:
    assert SbdixResult.parse(line) == SbdixResult(0, 1, 0, 0, 0, 0)


@pytest.mark.parametrize("style", ["standard", "compact", "spaced"])
async def test_every_answer_style_works_end_to_end(gateway: SatelliteGateway, style: str) -> None:
    async with ModemSim(ModemSimConfig(answer_style=style), gateway) as sim:
        async with SbdModem(settings(sim)) as m:
            await until(lambda: m.status.signal == 4)  # the +CIEV indication after AT+CIER
            assert await m.signal() == 4
            r = await m.send(b"styled")
            assert r.ok and r.momsn == 1
    assert [p for _, _, p in gateway.delivered] == [b"styled"]


async def test_modem_without_csq_opens_and_sends(gateway: SatelliteGateway) -> None:
    async with ModemSim(ModemSimConfig(csq_supported=False), gateway) as sim:
        async with SbdModem(settings(sim)) as m:  # AT+CIER answered ERROR: opened all the same
            assert m.status.present and m.status.signal is None
            with pytest.raises(ModemError):
                await m.signal()
            assert m.status.signal is None  # unknown, not zero
            await m.check_alive()  # falls back to plain AT
            assert (await m.send(b"no csq here")).ok
    assert [p for _, _, p in gateway.delivered] == [b"no csq here"]


async def test_manager_keeps_a_modem_without_csq_open(gateway: SatelliteGateway) -> None:
    async with ModemSim(ModemSimConfig(csq_supported=False), gateway) as sim:
        mgr = ModemManager(settings(sim), retry=0.05, health_interval=0.05)
        task = asyncio.create_task(mgr.run())
        try:
            await until(lambda: mgr.health_checks >= 3)  # each health check answered: never reopened
            first = mgr.modem
            assert first is not None and mgr.status.last_error is None
            await until(lambda: mgr.health_checks >= 6)
            assert mgr.modem is first
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_link_manager_sends_by_satellite_with_a_modem_that_refuses_csq(gateway: SatelliteGateway) -> None:
    """The heartbeat goes out although the signal is unknown (before: 'no_signal' forever, nothing ever sent)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from kit.clock import ManualClock
    from sync.linkmgr import Heartbeat, LinkManager

    clock = ManualClock()
    seqs = iter(range(1, 100))

    async def hb() -> Heartbeat:
        return Heartbeat(clock.now(), 47.9, 33.4, 0.0, 0.0, False, True, {"rec": 1})

    async def seq() -> int:
        return next(seqs)

    async with ModemSim(ModemSimConfig(csq_supported=False), gateway) as sim:
        async with SbdModem(settings(sim)) as m:
            lm = LinkManager("van-01", Ed25519PrivateKey.generate(), clock, m, lambda: False, hb, seq, sbd_after=60, sbd_interval=600)
            assert await lm.step() == "waiting"
            clock.advance(61)
            assert await lm.step() == "sent"
    assert len(gateway.delivered) == 1


async def test_failed_sessions_back_off(gateway: SatelliteGateway) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from kit.clock import ManualClock
    from sync.linkmgr import Heartbeat, LinkManager

    clock = ManualClock()

    async def hb() -> Heartbeat:
        return Heartbeat(clock.now(), 47.9, 33.4, 0.0, 0.0, False, False, {})

    n = iter(range(1, 100))

    async def seq() -> int:
        return next(n)

    async with ModemSim(ModemSimConfig(csq_supported=False), gateway) as sim:
        sim.forced_mo_status = 18  # RF drop, every time
        async with SbdModem(settings(sim)) as m:
            lm = LinkManager("van-01", Ed25519PrivateKey.generate(), clock, m, lambda: False, hb, seq, sbd_after=0, sbd_interval=600,
                             retry_min=15)
            assert await lm.step() == "failed"
            assert await lm.step() == "backoff"  # not hammering the modem every tick
            clock.advance(15)
            assert await lm.step() == "failed"
            clock.advance(15)
            assert await lm.step() == "backoff"  # doubled: 30 s now
            clock.advance(15)
            assert await lm.step() == "failed"
            sim.forced_mo_status = None
            clock.advance(60)
            assert await lm.step() == "sent"
    assert sim.sessions == [18, 18, 18, 0]
