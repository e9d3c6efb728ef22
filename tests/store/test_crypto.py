"""Envelope encryption: round trips, and every kind of tampering refused."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import crypto
from sync.errors import CryptoError

HQ = X25519PrivateKey.generate()
NODE_KEY = crypto.random_key()
fields_st = st.dictionaries(st.sampled_from(["surname", "given_name", "rnokpp", "phone", "address"]), st.text(max_size=40), min_size=1)


@given(fields_st, st.integers(1, 5))
@settings(max_examples=40, deadline=None)
def test_round_trip_with_node_key_and_hq_key(fields: dict[str, str], version: int) -> None:
    rec = crypto.seal("applicants", "r1", version, fields, HQ.public_key(), NODE_KEY)
    assert crypto.open_with_node_key(rec, NODE_KEY) == fields
    assert crypto.open_with_hq_key(rec, HQ) == fields


@given(fields_st, st.data())
@settings(max_examples=40, deadline=None)
def test_flipped_bit_is_refused(fields: dict[str, str], data: st.DataObject) -> None:
    rec = crypto.seal("applicants", "r1", 1, fields, HQ.public_key(), NODE_KEY)
    name = data.draw(st.sampled_from(sorted(fields)))
    blob = bytearray(rec.fields[name])
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= 1 << data.draw(st.integers(0, 7))
    bad = dataclasses.replace(rec, fields={**rec.fields, name: bytes(blob)})
    with pytest.raises(CryptoError):
        crypto.open_with_node_key(bad, NODE_KEY)
    with pytest.raises(CryptoError):
        crypto.open_with_hq_key(bad, HQ)


def test_swapped_fields_are_refused() -> None:
    rec = crypto.seal("applicants", "r1", 1, {"surname": "Шевченко", "rnokpp": "1759013776"}, HQ.public_key(), NODE_KEY)
    swapped = dataclasses.replace(rec, fields={"surname": rec.fields["rnokpp"], "rnokpp": rec.fields["surname"]})
    with pytest.raises(CryptoError):
        crypto.open_with_node_key(swapped, NODE_KEY)


def test_swapped_records_are_refused() -> None:
    a = crypto.seal("applicants", "a", 1, {"surname": "А"}, HQ.public_key(), NODE_KEY)
    b = crypto.seal("applicants", "b", 1, {"surname": "Б"}, HQ.public_key(), NODE_KEY)
    # b's ciphertext under a's id and keys; and a's keys with b's id.
    with pytest.raises(CryptoError):
        crypto.open_with_node_key(dataclasses.replace(a, fields=b.fields), NODE_KEY)
    with pytest.raises(CryptoError):
        crypto.open_with_hq_key(dataclasses.replace(a, record_id="b"), HQ)
    with pytest.raises(CryptoError):
        crypto.open_with_node_key(dataclasses.replace(a, version=2), NODE_KEY)


def test_wrong_keys_are_refused() -> None:
    rec = crypto.seal("applicants", "r1", 1, {"surname": "Шевченко"}, HQ.public_key(), NODE_KEY)
    with pytest.raises(CryptoError):
        crypto.open_with_node_key(rec, crypto.random_key())
    with pytest.raises(CryptoError):
        crypto.open_with_hq_key(rec, X25519PrivateKey.generate())


def test_blind_index_is_keyed_and_deterministic() -> None:
    k1, k2 = crypto.random_key(), crypto.random_key()
    assert crypto.blind_index(k1, "rnokpp", "1759013776") == crypto.blind_index(k1, "rnokpp", "1759013776")
    assert crypto.blind_index(k1, "rnokpp", "1759013776") != crypto.blind_index(k2, "rnokpp", "1759013776")
    assert crypto.blind_index(k1, "rnokpp", "1759013776") != crypto.blind_index(k1, "unzr", "1759013776")
