"""Rotating a van's credentials, HQ side.  What rotates and what does not: docs/security.md, "Key rotation".

``rotate_node`` makes a new signing key, a new MQTT client certificate and (if
names are given) a new UI certificate, writes them as a bundle, seals them to
the van's X25519 key for delivery in a signed ``rotate_key`` command, and
records the new public key at HQ as *next*.  HQ then accepts both keys; the
first envelope that verifies with the new key proves the van has applied the
rotation (only the van can open the sealed keys), and from then on HQ keeps
only the new key: the old one is refused.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from sync import crypto, sbdbeat
from sync.envelope import MacKey, MacVerifier, hq_mac_key

from .ca import CA
from .errors import ProvisioningError
from .keys import HQKeys, _pem, _raw_pub, _write_json, _write_private, b64d, b64e, hq_seal_command_args

CREDENTIAL_FILES = ("node_sign.key", "mqtt_client.crt", "mqtt_client.key", "ui.crt", "ui.key")


def rotation_context(node_id: str, rotation_id: str) -> bytes:
    return f"rotate|{node_id}|{rotation_id}".encode()


@dataclass
class Rotation:
    node_id: str
    rotation_id: str
    out_dir: Path
    sealed: bytes  # the new credentials sealed to the van's X25519 key

    def command_args(self) -> dict[str, Any]:
        return {"rotation": self.rotation_id, "sealed": self.sealed.hex()}


def rotate_node(hq: HQKeys, node_id: str, out_dir: Path, ui_names: list[str] | None = None, old_bundle: Path | None = None) -> Rotation:
    record = hq.directory / "nodes" / f"{node_id}.json"
    if not record.exists():
        raise ProvisioningError(f"no node {node_id} is enrolled at this HQ")
    doc = json.loads(record.read_text(encoding="utf-8"))
    if doc.get("revoked"):
        raise ProvisioningError(f"{node_id} is revoked: enrol it again instead")
    if not doc.get("seal_public"):
        raise ProvisioningError(f"{node_id} has no sealing key at HQ (enrolled by an old version): copy a new bundle by hand")
    out_dir.mkdir(parents=True, exist_ok=True)
    if old_bundle is not None:  # a complete bundle for the SD card: the rest is unchanged
        for name in ("node.json", "keyslots.json"):
            shutil.copyfile(old_bundle / name, out_dir / name)
    sign = Ed25519PrivateKey.generate()
    _write_private(out_dir / "node_sign.key", _pem(sign))
    ca = CA.load(hq.directory / "ca", hq.passphrase)
    ca.issue(node_id, out_dir, "mqtt_client")
    if ui_names:
        ca.issue(node_id, out_dir, "ui", server_names=ui_names)
    (out_dir / "ca.crt").write_bytes(ca.cert_path.read_bytes())
    rotation_id = secrets.token_hex(8)
    files = {n: (out_dir / n).read_text() for n in CREDENTIAL_FILES if (out_dir / n).exists()}
    sealed = crypto.wrap_to_public(json.dumps(files).encode(), X25519PublicKey.from_public_bytes(b64d(doc["seal_public"])),
                                   rotation_context(node_id, rotation_id))
    doc.update({"next_sign_public": b64e(_raw_pub(sign.public_key())), "rotation_id": rotation_id, "rotation_started": time.time()})
    _write_json(record, doc)
    _write_json(hq.directory / "nodes" / f"{node_id}.rotation", {"rotation": rotation_id, "sealed": sealed.hex()})
    return Rotation(node_id, rotation_id, out_dir, sealed)


def pending_command_args(hq_dir: Path, node_id: str) -> dict[str, Any]:
    """Arguments of the ``rotate_key`` command HQ sends this van (empty if no rotation is pending)."""
    path = hq_dir / "nodes" / f"{node_id}.rotation"
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")))


def command_args(hq: HQKeys, node_id: str, kind: str) -> dict[str, Any]:
    """What HQ adds to a command for this van: the sealed new credentials (rotate_key), HQ's sealing key (hq_seal_key)."""
    if kind == "rotate_key":
        return pending_command_args(hq.directory, node_id)
    if kind == "hq_seal_key":
        return hq_seal_command_args(hq)
    return {}


def finish_rotation(hq_dir: Path, node_id: str) -> None:
    """The van signed with its new key: that key alone is valid from now on."""
    record = hq_dir / "nodes" / f"{node_id}.json"
    doc = json.loads(record.read_text(encoding="utf-8"))
    if not doc.get("next_sign_public"):
        return
    doc["previous_sign_public"] = doc["sign_public"]
    doc["sign_public"] = doc.pop("next_sign_public")
    doc["rotated_at"] = time.time()
    doc.pop("rotation_started", None)
    _write_json(record, doc)
    with_suffix = hq_dir / "nodes" / f"{node_id}.rotation"
    if with_suffix.exists():
        os.remove(with_suffix)


class KeyRing(MacVerifier):
    """Verifies with the current key or, during a rotation, the next one (then finishes the rotation).

    MAC-authenticated envelopes (sync.envelope) are checked with the keys HQ shares with the van: one per
    signing key of the van and sealing key of HQ (older sealing keys too: a van learns a new one only
    when HQ's command reaches it), each derived once.
    """

    def __init__(self, current: Ed25519PublicKey, next_key: Ed25519PublicKey | None, on_next: Callable[[], None],
                 node_id: str = "", seals: Sequence[X25519PrivateKey] = ()) -> None:
        self.current, self.next_key, self.on_next = current, next_key, on_next
        self.node_id = node_id
        self.seals = tuple(seals)
        self._macs: dict[tuple[bytes, int], MacKey] = {}
        self._promoting = threading.Lock()

    def _mac_keys(self, public: Ed25519PublicKey) -> Iterator[MacKey]:
        raw = _raw_pub(public)
        for i, seal in enumerate(self.seals):
            key = self._macs.get((raw, i))
            if key is None:
                key = self._macs[(raw, i)] = hq_mac_key(self.node_id, public, seal)
            yield key

    def _mac_matches(self, public: Ed25519PublicKey, tag: bytes, data: bytes) -> bool:
        for key in self._mac_keys(public):
            try:
                key.verify_mac(tag, data)
            except InvalidSignature:
                continue
            return True
        return False

    def verify_mac(self, tag: bytes, data: bytes) -> None:
        next_key = self.next_key
        if next_key is not None and self._mac_matches(next_key, tag, data):
            self._promote(next_key)
            return
        if not self._mac_matches(self.current, tag, data):
            raise InvalidSignature()

    def verify(self, signature: bytes, data: bytes) -> None:
        next_key = self.next_key
        if next_key is not None:
            try:
                next_key.verify(signature, data)
            except InvalidSignature:
                pass
            else:
                self._promote(next_key)
                return
        self.current.verify(signature, data)

    def _promote(self, next_key: Ed25519PublicKey) -> None:
        """The van signed with its next key: that key alone from now on, and the rotation finished once
        (HQ verifies on a thread of its own and, for a few messages, on its event loop: both may get here)."""
        with self._promoting:
            if self.next_key is not next_key:
                return  # the other one did it
            self.current, self.next_key = next_key, None
        self.on_next()


class NodeKeyCache:
    """HQ's view of the vans' signing keys, reloaded whenever provisioning changes a node record.

    (Enrolment, revocation and rotation take effect in a running HQ without a restart.)
    """

    def __init__(self, hq_dir: Path, seals: Sequence[X25519PrivateKey] = ()) -> None:
        """``seals``: HQ's sealing keys, newest first (for MAC-authenticated envelopes; without them only signatures pass)."""
        self.nodes = hq_dir / "nodes"
        self.seals = tuple(seals)
        self._stamp: float | None = None
        self._keys: dict[str, KeyRing] = {}

    def _reload(self) -> None:
        stamp = self.nodes.stat().st_mtime_ns if self.nodes.exists() else 0
        if stamp == self._stamp:
            return
        keys: dict[str, KeyRing] = {}
        for p in sorted(self.nodes.glob("*.json")):
            doc = json.loads(p.read_text(encoding="utf-8"))
            if doc.get("revoked"):
                continue
            node_id = str(doc["node_id"])
            nxt = Ed25519PublicKey.from_public_bytes(b64d(doc["next_sign_public"])) if doc.get("next_sign_public") else None
            keys[node_id] = KeyRing(Ed25519PublicKey.from_public_bytes(b64d(doc["sign_public"])), nxt,
                                    functools.partial(finish_rotation, self.nodes.parent, node_id), node_id, self.seals)
        self._keys, self._stamp = keys, stamp

    def __call__(self, node_id: str) -> KeyRing | None:
        self._reload()
        return self._keys.get(node_id)

    def heartbeat_keys(self, tag: bytes, hq_seal: X25519PrivateKey) -> Iterator[tuple[str, bytes]]:
        """Compact satellite heartbeat keys (sync.sbdbeat) of the unrevoked vans whose tag this is, mid-rotation keys too."""
        self._reload()
        for node_id, ring in list(self._keys.items()):
            if sbdbeat.node_tag(node_id) == tag:
                for pub in (ring.current, ring.next_key):
                    if pub is not None:
                        yield node_id, sbdbeat.hq_mac_key(node_id, pub, hq_seal)
