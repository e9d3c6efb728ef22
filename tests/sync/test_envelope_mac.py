"""MAC-authenticated uplinks (sync.envelope): what a MAC proves, what it is refused for, and a van's records over it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from provisioning.rotation import KeyRing
from sync import sbdbeat
from sync.envelope import (FLAG_MAC, MAC_LEN, SIG_LEN, Envelope, MacKey, decode, encode, hq_mac_key, van_mac_key)
from sync.errors import EnvelopeError

from .harness import NODE, hq_items, hq_workers, node_outbox, node_uplink, pending, record, submit, wait_for


def _env(seq: int = 1, downlink: bool = False, stream: str = "rec") -> Envelope:
    return Envelope(NODE, stream, seq, (b'{"type": "application"}', b"second item"), 123 << 16, downlink=downlink, instance="ab" * 8)


def test_both_ends_derive_one_key_and_it_is_not_the_heartbeat_key() -> None:
    van, seal = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    mine, hqs = van_mac_key(NODE, van, seal.public_key()), hq_mac_key(NODE, van.public_key(), seal)
    assert mine.tag(b"x") == hqs.tag(b"x")
    assert mine.tag(b"x") != MacKey(sbdbeat.node_mac_key(NODE, van, seal.public_key())).tag(b"x")  # one key per use
    other = hq_mac_key("van-99", van.public_key(), seal)  # the node id is bound in the key
    assert other.tag(b"x") != mine.tag(b"x")


def test_a_mac_envelope_round_trips_and_any_change_is_refused() -> None:
    van, seal = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    key = van_mac_key(NODE, van, seal.public_key())
    data = encode(_env(), key)
    signed = encode(_env(), van)
    assert data[3] & FLAG_MAC and len(signed) - len(data) == SIG_LEN - MAC_LEN
    ring = KeyRing(van.public_key(), None, lambda: None, NODE, [seal])
    assert decode(data, lambda n: ring) == _env()
    assert decode(signed, lambda n: ring) == _env()  # an older van's signed envelope still passes
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(EnvelopeError):
            decode(bytes(bad), lambda n: ring)
    with pytest.raises(EnvelopeError, match="bad MAC"):  # another HQ's key
        decode(data, lambda n: KeyRing(van.public_key(), None, lambda: None, NODE, [X25519PrivateKey.generate()]))
    with pytest.raises(EnvelopeError, match="bad MAC"):  # an HQ that holds no sealing key takes signatures only
        decode(data, lambda n: KeyRing(van.public_key(), None, lambda: None, NODE))


def test_a_mac_never_stands_in_for_a_signature() -> None:
    van, seal = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    key = van_mac_key(NODE, van, seal.public_key())
    # a van checks HQ's messages with HQ's public key: a MAC'd one (made by anyone holding a van key) is refused
    with pytest.raises(EnvelopeError, match="only a signature"):
        decode(encode(_env(), key), lambda n: van.public_key())
    with pytest.raises(EnvelopeError, match="signed"):
        encode(_env(downlink=True, stream="ack"), key)
    # a signed envelope whose flag is turned into "MAC" fails: the flag is under the MAC and the signature
    signed = bytearray(encode(_env(), van))
    signed[3] |= FLAG_MAC
    with pytest.raises(EnvelopeError):
        decode(bytes(signed), lambda n: KeyRing(van.public_key(), None, lambda: None, NODE, [seal]))


def test_the_ring_takes_the_next_key_and_older_sealing_keys() -> None:
    old_van, new_van = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    old_seal, new_seal = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    finished: list[bool] = []
    ring = KeyRing(old_van.public_key(), new_van.public_key(), lambda: finished.append(True), NODE, [new_seal, old_seal])
    # a van that has not yet heard of HQ's new sealing key
    decode(encode(_env(), van_mac_key(NODE, old_van, old_seal.public_key())), lambda n: ring)
    assert finished == []
    # the first envelope under the van's next key finishes its rotation; the old key is refused from then on
    decode(encode(_env(2), van_mac_key(NODE, new_van, new_seal.public_key())), lambda n: ring)
    assert finished == [True] and ring.current == new_van.public_key() and ring.next_key is None
    with pytest.raises(InvalidSignature):
        ring.verify_mac(van_mac_key(NODE, old_van, new_seal.public_key()).tag(b"x"), b"x")


@pytest.mark.functional
async def test_a_van_sends_its_records_macd_and_hq_without_the_key_keeps_them_waiting(mosquitto, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    nk, hk, seal = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    node_db, hq_db = tmp_path / "node.db", tmp_path / "hq.db"
    async with node_outbox(node_db) as db:
        await submit(db, 1, 30)
        # an HQ that takes signatures only: every MAC'd message is rejected, and the van keeps its items
        async with hq_workers(mosquitto.url, hq_db, nk, hk) as workers, \
                node_uplink(mosquitto.url, node_db, nk, hk, hq_seal_public=seal.public_key()) as up:
            worker, _ = workers[0]
            up.kick()
            await wait_for(lambda: _true(worker.ingest.rejected > 0), 60, "a rejection")
            assert worker.ingest.stored == 0
        assert await pending(node_db) == 30
        async with hq_workers(mosquitto.url, hq_db, nk, hk, seals=[seal]) as workers, \
                node_uplink(mosquitto.url, node_db, nk, hk, hq_seal_public=seal.public_key()) as up:
            up.kick()

            async def drained() -> bool:
                return await pending(node_db) == 0

            await wait_for(drained, 90, "outbox drained")
    items = await hq_items(hq_db)
    assert [p for _, p in items] == [record(i) for i in range(1, 31)]


async def _true(v: bool) -> bool:
    await asyncio.sleep(0)
    return v


def test_a_rotation_finishes_once_when_two_threads_see_the_next_key() -> None:
    """HQ verifies on a thread of its own and, for a few messages, on its event loop: one promotion, one on_next."""
    old_van, new_van, seal = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    for _ in range(20):
        finished: list[int] = []
        ring = KeyRing(old_van.public_key(), new_van.public_key(), lambda f=finished: f.append(1),
                       NODE, [seal])
        _race(ring, [encode(_env(), van_mac_key(NODE, new_van, seal.public_key())), encode(_env(), new_van)] * 4)
        assert finished == [1] and ring.current == new_van.public_key() and ring.next_key is None


def _race(ring: KeyRing, messages: list[bytes]) -> None:
    """Every message decoded at once, each on its own thread."""
    start = threading.Barrier(len(messages))

    def check(data: bytes) -> None:
        start.wait()
        decode(data, lambda n: ring)

    threads = [threading.Thread(target=check, args=(m,)) for m in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
