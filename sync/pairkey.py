"""Keys a van shares with HQ without a new secret on the card.

The node turns its Ed25519 signing key into an X25519 key (the standard map
of RFC 7748 / RFC 8032, as libsodium's ``crypto_sign_ed25519_sk_to_curve25519``),
HQ turns the node's enrolled Ed25519 public key into the matching X25519
public key, and both run X25519 against HQ's sealing key pair, then HKDF with
a label naming what the key is for (so no two uses share a key).  Only that
van and HQ can compute it; a new signing key (rotation) or a new HQ sealing
key gives a new one.  Used by the compact satellite heartbeat (sync.sbdbeat)
and the MAC-authenticated envelope (sync.envelope.MacKey).
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_P = 2**255 - 19


def _hkdf(purpose: bytes, shared: bytes, node_id: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=purpose + b"|" + node_id.encode()).derive(shared)


def _x25519_private(sign: Ed25519PrivateKey) -> X25519PrivateKey:
    seed = sign.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return X25519PrivateKey.from_private_bytes(hashlib.sha512(seed).digest()[:32])  # clamped by X25519 itself


def _x25519_public(sign_public: Ed25519PublicKey) -> X25519PublicKey:
    """The Montgomery u of the node's Edwards point: u = (1 + y) / (1 - y) mod p."""
    y = int.from_bytes(sign_public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw), "little") & ((1 << 255) - 1)
    u = (1 + y) * pow((1 - y) % _P, _P - 2, _P) % _P
    return X25519PublicKey.from_public_bytes(u.to_bytes(32, "little"))


def van_key(purpose: bytes, node_id: str, sign: Ed25519PrivateKey, hq_seal_public: X25519PublicKey) -> bytes:
    """The van's side (its signing key, HQ's public sealing key)."""
    return _hkdf(purpose, _x25519_private(sign).exchange(hq_seal_public), node_id)


def hq_key(purpose: bytes, node_id: str, node_sign_public: Ed25519PublicKey, hq_seal: X25519PrivateKey) -> bytes:
    """HQ's side of the same key (the van's enrolled public signing key, HQ's private sealing key)."""
    return _hkdf(purpose, hq_seal.exchange(_x25519_public(node_sign_public)), node_id)
