"""The compact satellite heartbeat: one 50-byte credit, authenticated, replay-safe through its sequence."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import sbdbeat
from sync.errors import EnvelopeError
from sync.sbdbeat import Heartbeat

NODE = "van-01"
SIGN = Ed25519PrivateKey.generate()
HQ_SEAL = X25519PrivateKey.generate()


def keys(node: str = NODE, sign: Ed25519PrivateKey = SIGN) -> tuple[bytes, bytes]:
    return (sbdbeat.node_mac_key(node, sign, HQ_SEAL.public_key()),
            sbdbeat.hq_mac_key(node, sign.public_key(), HQ_SEAL))


def candidates(tag: bytes) -> list[tuple[str, bytes]]:
    return [(NODE, keys()[1])] if tag == sbdbeat.node_tag(NODE) else []


HB = Heartbeat(1_780_000_123.0, 47.9105, 33.3918, 12.5, 271.0, True, True, {"rec": 12, "pos": 3000, "blob": 2})


def test_van_and_hq_derive_the_same_key_from_enrolment_keys_alone() -> None:
    van, hq = keys()
    assert van == hq and len(van) == 32
    other_van, other_hq = keys("van-02", Ed25519PrivateKey.generate())
    assert other_van == other_hq != van


def test_fits_one_credit_and_reads_back() -> None:
    data = sbdbeat.pack(NODE, 7, HB, keys()[0])
    assert len(data) == sbdbeat.SIZE <= 50
    node, seq, hb, itag = sbdbeat.open_heartbeat(data, candidates)
    assert itag == sbdbeat.instance_tag("")
    assert (node, seq) == (NODE, 7)
    assert hb.time == HB.time and hb.trusted_time and hb.has_fix and hb.depth == HB.depth
    assert abs(hb.lat - HB.lat) < 1e-7 and abs(hb.lon - HB.lon) < 1e-7
    assert abs(hb.speed - HB.speed) <= 0.5 / 3.6 + 1e-9 and abs(hb.course - HB.course) <= 1.0


@pytest.mark.parametrize("index", range(sbdbeat.SIZE))
def test_any_flipped_byte_is_refused(index: int) -> None:
    data = bytearray(sbdbeat.pack(NODE, 7, HB, keys()[0]))
    data[index] ^= 0x01
    with pytest.raises(EnvelopeError):
        sbdbeat.open_heartbeat(bytes(data), candidates)


def test_another_vans_key_is_refused() -> None:
    forged = sbdbeat.pack(NODE, 8, HB, keys("van-01", Ed25519PrivateKey.generate())[0])
    with pytest.raises(EnvelopeError):
        sbdbeat.open_heartbeat(forged, candidates)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2**32 - 1), st.floats(0, 2**32 - 1), st.floats(-90, 90), st.floats(-180, 180), st.floats(0, 100),
       st.floats(0, 359.99), st.booleans(), st.booleans(),
       st.dictionaries(st.sampled_from(sbdbeat.BACKLOG_STREAMS), st.integers(0, 10**6)))
def test_roundtrip_over_the_ranges(seq: int, t: float, lat: float, lon: float, speed: float, course: float, trusted: bool,
                                    fix: bool, depth: dict[str, int]) -> None:
    hb = Heartbeat(t, lat, lon, speed, course, trusted, fix, depth)
    node, got_seq, got, _ = sbdbeat.open_heartbeat(sbdbeat.pack(NODE, seq, hb, keys()[0]), candidates)
    assert (node, got_seq) == (NODE, seq)
    assert got.time == float(int(t)) and got.trusted_time == trusted and got.has_fix == fix
    assert abs(got.lat - lat) <= 1e-7 and abs(got.lon - lon) <= 1e-7
    assert got.depth == {k: min(v, 0xFFFF) for k, v in depth.items() if v}
    assert min(abs(got.course - course), 360 - abs(got.course - course)) <= 1.0 + 1e-9


async def test_link_manager_sends_one_credit_and_hq_stores_it_once(keys, clock, hq_store) -> None:  # type: ignore[no-untyped-def]
    """Node side (LinkManager with the enrolment-derived key) to HQ's ingest and fleet view, replay included."""
    from sync.ingest import Ingest
    from sync.linkmgr import LinkManager, unpack_heartbeat

    from tests.sync.test_protocol import FakeSatellite

    hq_seal = X25519PrivateKey.generate()
    pub = keys.node.public_key()
    ingest = Ingest(hq_store, lambda n: pub if n == "van-01" else None, keys.hq, clock,
                    heartbeat_keys=lambda tag: [("van-01", sbdbeat.hq_mac_key("van-01", pub, hq_seal))]
                    if tag == sbdbeat.node_tag("van-01") else [])
    modem = FakeSatellite(bars=3)
    seqs = iter(range(1, 100))

    async def hb() -> Heartbeat:
        return Heartbeat(clock.now(), 47.91, 33.39, 10.0, 90.0, True, True, {"rec": 12, "pos": 3000})

    async def seq() -> int:
        return next(seqs)

    lm = LinkManager("van-01", keys.node, clock, modem, lambda: False, hb, seq, sbd_after=0, sbd_interval=600,
                     mac_key=sbdbeat.node_mac_key("van-01", keys.node, hq_seal.public_key()))
    assert await lm.step() == "sent"
    clock.advance(601)
    assert await lm.step() == "sent"
    assert [len(m) for m in modem.sent] == [sbdbeat.SIZE, sbdbeat.SIZE]
    for m in modem.sent + modem.sent[:1]:  # a resent (or replayed) heartbeat is a duplicate, not a new one
        await ingest.handle(m, channel="sbd")
    items = await hq_store.items("van-01", "status")
    assert [s for s, _ in items] == [1, 2]
    assert unpack_heartbeat(items[0][1]).depth == {"rec": 12, "pos": 3000}
    fleet = (await hq_store.fleet())[0]
    assert fleet["link"] == "sbd" and fleet["outbox_depth"]["rec"] == 12 and abs(fleet["lat"] - 47.91) < 1e-6
    forged = bytearray(modem.sent[1])
    forged[5] ^= 1  # another seq under the same MAC
    await ingest.handle(bytes(forged), channel="sbd")
    assert ingest.rejected == 1 and [s for s, _ in await hq_store.items("van-01", "status")] == [1, 2]


async def test_a_heartbeat_is_filed_under_the_van_database_hq_knows(keys, clock, hq_store) -> None:  # type: ignore[no-untyped-def]
    """The compact heartbeat names its database by a tag; HQ files it under the instance it knows, no re-flash alarm."""
    from sync.envelope import Envelope, encode
    from sync.ingest import Ingest

    hq_seal = X25519PrivateKey.generate()
    pub = keys.node.public_key()
    ingest = Ingest(hq_store, lambda n: pub if n == "van-01" else None, keys.hq, clock,
                    heartbeat_keys=lambda tag: [("van-01", sbdbeat.hq_mac_key("van-01", pub, hq_seal))])
    instance = "00112233aabbccdd"
    await ingest.handle(encode(Envelope("van-01", "evt", 1, (b'{"type":"x"}',), int(clock.now() * 1000) << 16, instance=instance),
                               keys.node))
    key = sbdbeat.node_mac_key("van-01", keys.node, hq_seal.public_key())
    await ingest.handle(sbdbeat.pack("van-01", 1, HB, key, instance), channel="sbd")
    async with hq_store.db.execute("SELECT instance FROM node_instances WHERE node_id = 'van-01'") as cur:
        assert [r[0] async for r in cur] == [instance]
    assert (await hq_store.fleet())[0]["link"] == "sbd"
    # a database HQ has never seen over MQTT gets a provisional instance of its own, never the known one's numbers
    await ingest.handle(sbdbeat.pack("van-01", 1, HB, key, "ffeeddccbbaa9988"), channel="sbd")
    async with hq_store.db.execute("SELECT instance FROM node_instances WHERE node_id = 'van-01' ORDER BY ordinal") as cur:
        assert [r[0] async for r in cur] == [instance, sbdbeat.provisional_instance(sbdbeat.instance_tag("ffeeddccbbaa9988"))]
