"""Envelope encryption of citizens' records (the one crypto module, shared by van and HQ).

* A fresh 256-bit data key per record encrypts each sensitive field with
  AES-256-GCM; the associated data binds table, record id, field name and
  version, so a ciphertext moved to another field or record fails to open.
* The data key is wrapped twice: to HQ's X25519 public key (ephemeral ECDH
  + HKDF-SHA256 + AES-GCM, an HPKE-style base mode) and under the node key.
* The node key is itself only ever stored wrapped (keyslots): under a key
  derived with scrypt from each administrator's password, and to HQ.
* A wrap to a public key names that key (``KEY_ID_MAGIC`` + key id, the first
  8 bytes of SHA-256 of the raw public key), so HQ's sealing key can rotate:
  HQ keeps a ring of its keys and opens each wrap with the one it names.
  Wraps made before key ids (no prefix) are opened by trying the ring.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import CryptoError

KEY_LEN = 32
NONCE_LEN = 12
# OWASP's scrypt floor for 2024 is N=2^17, r=8, p=1: 128 MiB per derivation (a Pi 4 with 2 GB holds it), about 1 s there.
# Slots made with the old N=2^15 still open and are rewrapped at the next login (edge/store.py).
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
# Keyslot format: 1 bound node and username only; 2 binds the role as well (a row's role edited on the card no longer opens).
SLOT_VERSION = 2


def random_key() -> bytes:
    return os.urandom(KEY_LEN)


def _raw_public(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def wrap_with_key(secret: bytes, key: bytes, context: bytes) -> bytes:
    nonce = os.urandom(NONCE_LEN)
    return nonce + AESGCM(key).encrypt(nonce, secret, context)


def unwrap_with_key(blob: bytes, key: bytes, context: bytes) -> bytes:
    if len(blob) < NONCE_LEN + 16:
        raise CryptoError("wrapped key too short")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], context)
    except InvalidTag as exc:
        raise CryptoError("wrong key or tampered data") from exc


def _hkdf(shared: bytes, salt: bytes, context: bytes) -> bytes:
    return HKDF(hashes.SHA256(), KEY_LEN, salt, b"mo/v1/wrap|" + context).derive(shared)


KEY_ID_MAGIC = b"MOk1"
KEY_ID_LEN = 8
# One private key, or a ring of them (HQ's sealing keys, current first).
OpeningKeys = X25519PrivateKey | Sequence[X25519PrivateKey]


def key_id(public: X25519PublicKey) -> bytes:
    return hashlib.sha256(_raw_public(public)).digest()[:KEY_ID_LEN]


def evidence_context(node_id: str, visit_id: str) -> bytes:
    """AAD of a home visit's evidence point, sealed by the van to HQ (edge/trips, hq/trips)."""
    return f"evidence|{node_id}|{visit_id}".encode()


def wrap_to_public(secret: bytes, recipient: X25519PublicKey, context: bytes) -> bytes:
    """"MOk1" || key id(8) || eph_pub(32) || nonce(12) || AES-GCM(secret); only the private key holder opens it."""
    eph = X25519PrivateKey.generate()
    eph_pub = _raw_public(eph.public_key())
    key = _hkdf(eph.exchange(recipient), eph_pub + _raw_public(recipient), context)
    return KEY_ID_MAGIC + key_id(recipient) + eph_pub + wrap_with_key(secret, key, context)


def wrapped_key_id(blob: bytes) -> bytes | None:
    """The key id a wrap names (None: a wrap from before key ids)."""
    return blob[len(KEY_ID_MAGIC):len(KEY_ID_MAGIC) + KEY_ID_LEN] if blob.startswith(KEY_ID_MAGIC) else None


def _unwrap_one(body: bytes, private: X25519PrivateKey, context: bytes) -> bytes:
    if len(body) < 32 + NONCE_LEN + 16:
        raise CryptoError("sealed key too short")
    eph_pub = X25519PublicKey.from_public_bytes(body[:32])
    key = _hkdf(private.exchange(eph_pub), body[:32] + _raw_public(private.public_key()), context)
    return unwrap_with_key(body[32:], key, context)


def unwrap_with_private(blob: bytes, private: OpeningKeys, context: bytes) -> bytes:
    keys = [private] if isinstance(private, X25519PrivateKey) else list(private)
    kid = wrapped_key_id(blob)
    if kid is not None:
        for k in keys:
            if hmac.compare_digest(key_id(k.public_key()), kid):
                return _unwrap_one(blob[len(KEY_ID_MAGIC) + KEY_ID_LEN:], k, context)
    # A wrap without a key id, or (one in 2**32) an old wrap whose random first bytes look like the prefix.
    for k in keys:
        try:
            return _unwrap_one(blob, k, context)
        except CryptoError:
            continue
    if kid is not None:
        raise CryptoError(f"sealed to key {kid.hex()}, which is not among the keys held here")
    raise CryptoError("wrong key or tampered data")


def admin_slot_context(node_id: str, username: str, role: str | None, version: int = SLOT_VERSION) -> bytes:
    """Associated data of an administrator's keyslot: the slot opens only for this node, username and (v2) role."""
    base = f"keyslot|{node_id}|admin|{username}"
    return base.encode() if version < 2 else f"{base}|{role or ''}|v{version}".encode()


def kek_from_password(password: str, salt: bytes, n: int = SCRYPT_N) -> bytes:
    """Deliberately slow (tens of ms); callers run it in an executor."""
    return Scrypt(salt=salt, length=KEY_LEN, n=n, r=SCRYPT_R, p=SCRYPT_P).derive(password.encode("utf-8"))


def field_aad(table: str, record_id: str, field: str, version: int) -> bytes:
    return f"mo/v1|{table}|{record_id}|{field}|{version}".encode()


def record_aad(table: str, record_id: str, version: int) -> bytes:
    return f"mo/v1|{table}|{record_id}|{version}".encode()


@dataclass(frozen=True)
class SealedRecord:
    table: str
    record_id: str
    version: int
    fields: dict[str, bytes]  # field -> nonce || ciphertext
    wrap_hq: bytes
    wrap_node: bytes | None


def seal(
    table: str,
    record_id: str,
    version: int,
    fields: dict[str, str],
    hq_public: X25519PublicKey,
    node_key: bytes,
) -> SealedRecord:
    data_key = random_key()
    aes = AESGCM(data_key)
    enc: dict[str, bytes] = {}
    for name, value in fields.items():
        nonce = os.urandom(NONCE_LEN)
        enc[name] = nonce + aes.encrypt(nonce, value.encode("utf-8"), field_aad(table, record_id, name, version))
    ctx = record_aad(table, record_id, version)
    return SealedRecord(
        table, record_id, version, enc, wrap_to_public(data_key, hq_public, ctx), wrap_with_key(data_key, node_key, ctx)
    )


def _open_fields(rec: SealedRecord, data_key: bytes) -> dict[str, str]:
    aes = AESGCM(data_key)
    out = {}
    for name, blob in rec.fields.items():
        try:
            plain = aes.decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], field_aad(rec.table, rec.record_id, name, rec.version))
        except InvalidTag as exc:
            raise CryptoError(f"field {name!r} does not open: tampered or moved") from exc
        out[name] = plain.decode("utf-8")
    return out


def open_with_node_key(rec: SealedRecord, node_key: bytes) -> dict[str, str]:
    if rec.wrap_node is None:
        raise CryptoError("the node's copy of this record's key was shredded")
    dk = unwrap_with_key(rec.wrap_node, node_key, record_aad(rec.table, rec.record_id, rec.version))
    return _open_fields(rec, dk)


def open_with_hq_key(rec: SealedRecord, hq_private: OpeningKeys) -> dict[str, str]:
    dk = unwrap_with_private(rec.wrap_hq, hq_private, record_aad(rec.table, rec.record_id, rec.version))
    return _open_fields(rec, dk)


def blind_index(index_key: bytes, kind: str, value: str) -> bytes:
    """Keyed HMAC of a normalised identifier, truncated: lookup without plaintext."""
    return hmac.new(index_key, f"{kind}:{value}".encode(), hashlib.sha256).digest()[:16]


def derive_subkey(node_key: bytes, purpose: str) -> bytes:
    return HKDF(hashes.SHA256(), KEY_LEN, None, b"mo/v1/subkey|" + purpose.encode()).derive(node_key)
