"""Key rotation: new credentials sealed in HQ's rotate_key command, applied by a running van (at once or at its
next login), HQ accepting the new key and refusing the old one once the van has signed with the new one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization

from edge.app import create_app
from edge.appkeys import UPLINK
from provisioning.keys import HQKeys, NodeBundle, load_bundle
from provisioning.rotation import NodeKeyCache, pending_command_args, rotate_node
from sync.downlink import command
from sync.envelope import Envelope, decode, encode
from sync.errors import EnvelopeError
from tests.conftest import ADMIN_PASSWORD
from tests.unit.test_node_api import node_config


def _raw(key) -> bytes:  # type: ignore[no-untyped-def]
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def envelope(key, seq: int) -> bytes:  # type: ignore[no-untyped-def]
    return encode(Envelope("van-01", "evt", seq, (b'{"type":"x"}',), seq), key)


async def test_rotation_end_to_end(hq_keys: HQKeys, bundle: NodeBundle, tmp_path: Path) -> None:
    hq_keys_for = NodeKeyCache(hq_keys.directory)
    old_key = bundle.sign
    decode(envelope(old_key, 1), hq_keys_for)  # accepted before the rotation

    # HQ: new credentials, a full new bundle, the command's sealed arguments.
    rot = rotate_node(hq_keys, "van-01", tmp_path / "new", ["van-01.local"], old_bundle=bundle.directory)
    new_bundle = load_bundle(tmp_path / "new")
    assert _raw(new_bundle.sign) != _raw(old_key) and (tmp_path / "new" / "ui.crt").exists()
    assert (tmp_path / "new" / "mqtt_client.crt").read_bytes() != (bundle.directory / "mqtt_client.crt").read_bytes()
    args = pending_command_args(hq_keys.directory, "van-01")
    assert args == rot.command_args() and len(args["sealed"]) > 200
    assert b"PRIVATE KEY" not in bytes.fromhex(args["sealed"])  # sealed, not in clear in the command
    # During the rotation HQ accepts both keys.
    decode(envelope(old_key, 2), hq_keys_for)

    # The running van: its own copy of the old bundle, store locked (just rebooted).
    van_bundle = tmp_path / "van-sd"
    shutil.copytree(bundle.directory, van_bundle)
    cfg = node_config(bundle, tmp_path / "node")
    cfg.bundle_dir = van_bundle
    cfg.node_seal_wrapped = bundle.node_seal_wrapped
    app = create_app(cfg)
    async with TestClient(TestServer(app)) as c:
        handler = app[UPLINK].handlers["rotate_key"]
        await handler(command("c1", "rotate_key", 4e9, **args))
        assert (van_bundle / "rotation.pending").exists()  # kept sealed until the store opens
        assert _raw(app[UPLINK].signing_key) == _raw(old_key)
        await handler(command("c1", "rotate_key", 4e9, **args))  # a repeat is harmless
        r = await c.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status == 200
        assert not (van_bundle / "rotation.pending").exists()
        assert _raw(app[UPLINK].signing_key) == _raw(new_bundle.sign)
        assert (van_bundle / "node_sign.key").read_bytes() == (tmp_path / "new" / "node_sign.key").read_bytes()
        assert (van_bundle / "node_sign.key").stat().st_mode & 0o077 == 0
        assert load_bundle(van_bundle).node_id == "van-01"  # still a complete bundle for the next start

    # The van's first envelope with the new key finishes the rotation at HQ; the old key is refused from then on.
    decode(envelope(new_bundle.sign, 3), hq_keys_for)
    record = json.loads((hq_keys.directory / "nodes" / "van-01.json").read_text())
    assert "next_sign_public" not in record and record.get("rotated_at")
    assert pending_command_args(hq_keys.directory, "van-01") == {}
    with pytest.raises(EnvelopeError, match="bad signature"):
        decode(envelope(old_key, 4), hq_keys_for)
    decode(envelope(new_bundle.sign, 5), NodeKeyCache(hq_keys.directory))  # a restarted HQ agrees


def test_rotate_refuses_unknown_and_revoked_vans(hq_keys: HQKeys, bundle: NodeBundle, tmp_path: Path) -> None:
    from provisioning.errors import ProvisioningError
    from provisioning.keys import revoke_node

    with pytest.raises(ProvisioningError, match="no node"):
        rotate_node(hq_keys, "van-99", tmp_path / "x")
    revoke_node(hq_keys, "van-01")
    with pytest.raises(ProvisioningError, match="revoked"):
        rotate_node(hq_keys, "van-01", tmp_path / "x")
    with pytest.raises(EnvelopeError, match="unknown signer"):
        decode(envelope(bundle.sign, 1), NodeKeyCache(hq_keys.directory))  # revocation acts without an HQ restart
