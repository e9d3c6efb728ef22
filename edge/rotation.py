"""Key rotation, van side: HQ's signed ``rotate_key`` command carries new credentials sealed to this van;
``hq_seal_key`` carries HQ's new sealing public key (``receive_hq_seal``).

The sealed blob is kept in the bundle directory (``rotation.pending``) as
received, even while the store is locked; it is opened with the van's X25519
key as soon as an administrator has unlocked the store (at once, or at the
next login).  Applying it replaces the bundle's credential files atomically,
switches the uplink to the new signing key and the MQTT TLS context to the
new client certificate (used from the next connection).  Both steps are
idempotent, as downlink callbacks must be.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from kit.files import write_atomic
from sync import crypto

from .appkeys import CONFIG, STORE, UPLINK
from .errors import StoreLocked

log = logging.getLogger(__name__)

PENDING = "rotation.pending"
ALLOWED = ("node_sign.key", "mqtt_client.crt", "mqtt_client.key", "ui.crt", "ui.key")


def _context(node_id: str, rotation_id: str) -> bytes:
    return f"rotate|{node_id}|{rotation_id}".encode()  # same as provisioning/rotation.py


async def receive(app: web.Application, doc: dict[str, Any]) -> None:
    """The downlink callback: keep the sealed credentials, apply them if the store is open."""
    args = doc.get("args") or {}
    if not isinstance(args, dict) or not args.get("sealed") or not args.get("rotation"):
        raise ValueError("rotate_key without sealed credentials")
    bundle = app[CONFIG].bundle_dir
    if bundle is None:
        raise ValueError("no bundle directory to rotate")
    data = json.dumps({"rotation": str(args["rotation"]), "sealed": str(args["sealed"])}).encode()
    await asyncio.get_running_loop().run_in_executor(None, write_atomic, bundle / PENDING, data, 0o600)
    await apply_pending(app)


HQ_SEAL_FILE = "hq_seal.json"  # read back by provisioning/keys.load_bundle at the next start


async def receive_hq_seal(app: web.Application, doc: dict[str, Any]) -> None:
    """HQ's signed ``hq_seal_key`` command: HQ's sealing key rotated; what is sealed from now on goes to the new key.

    Kept in the bundle (fsynced, renamed) before it is used, so a restart seals to the same key; idempotent.
    """
    args = doc.get("args") or {}
    try:
        raw = base64.b64decode(str(args["public"]), validate=True)
        public = X25519PublicKey.from_public_bytes(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("hq_seal_key without a valid public key") from exc
    kid = crypto.key_id(public).hex()
    if str(args.get("kid", "")) != kid:
        raise ValueError("hq_seal_key: the key id does not match the key")
    bundle = app[CONFIG].bundle_dir
    if bundle is not None:
        data = json.dumps({"kid": kid, "public": base64.b64encode(raw).decode()}).encode()
        await asyncio.get_running_loop().run_in_executor(None, write_atomic, bundle / HQ_SEAL_FILE, data, 0o644)
    app[STORE].hq_seal_public = public
    if UPLINK in app:
        app[UPLINK].use_hq_seal_public(public)
    log.warning("HQ's sealing key is now %s: new records are sealed to it", kid)


def _read_pending(bundle: Path) -> dict[str, Any] | None:
    path = bundle / PENDING
    return json.loads(path.read_text()) if path.exists() else None


def _install(bundle: Path, files: dict[str, str], tls: ssl.SSLContext | None) -> None:
    """The new credentials into the bundle (each file fsynced, then renamed), then the pending note removed."""
    for name, text in files.items():
        if name in ALLOWED:
            write_atomic(bundle / name, text.encode(), 0o600 if name.endswith(".key") else 0o644)
    if tls is not None and "mqtt_client.crt" in files:
        try:
            tls.load_cert_chain(str(bundle / "mqtt_client.crt"), str(bundle / "mqtt_client.key"))
        except ssl.SSLError as exc:
            log.error("rotated MQTT certificate unusable: %s", exc.reason)
    os.remove(bundle / PENDING)


async def apply_pending(app: web.Application) -> bool:
    """Apply a kept rotation if there is one and the store is unlocked; True if applied."""
    cfg = app[CONFIG]
    if cfg.bundle_dir is None:
        return False
    # File work (fsync on an SD card) stays off the event loop.
    loop = asyncio.get_running_loop()
    pending = await loop.run_in_executor(None, _read_pending, cfg.bundle_dir)
    if pending is None:
        return False
    store = app[STORE]
    try:
        key = store.seal_key
    except StoreLocked:
        log.info("key rotation %s received; applied after the next administrator login", pending["rotation"])
        return False
    files = json.loads(crypto.unwrap_with_private(bytes.fromhex(pending["sealed"]), key, _context(cfg.node_id, pending["rotation"])))
    new_key = serialization.load_pem_private_key(files["node_sign.key"].encode(), None)
    assert isinstance(new_key, Ed25519PrivateKey)
    await loop.run_in_executor(None, _install, cfg.bundle_dir, files, cfg.mqtt_tls)
    if UPLINK in app:
        app[UPLINK].use_signing_key(new_key)
    log.warning("key rotation %s applied: new signing key and certificates in the bundle", pending["rotation"])
    return True
