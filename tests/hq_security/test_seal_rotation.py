"""HQ's sealing key rotates: wraps name their key, new records use the new key, old ones stay readable, the van gets the key
over the signed downlink (real Mosquitto, HQ and the van as processes, the dashboard's command console)."""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from provisioning.keys import HQKeys, NodeBundle, load_bundle, load_hq
from sync import crypto
from sync.errors import CryptoError
from tests.conftest import REPO, Broker, Proc, wait_until
from tests.hq.stack import OFFICER_PASSWORD, HqBrowser, Stack


def test_wraps_name_their_key_and_a_ring_opens_old_and_new() -> None:
    old, new = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    blob = crypto.wrap_to_public(b"data key", new.public_key(), b"ctx")
    assert crypto.wrapped_key_id(blob) == crypto.key_id(new.public_key())
    assert crypto.unwrap_with_private(blob, [new, old], b"ctx") == b"data key"
    assert crypto.unwrap_with_private(blob, [old, new], b"ctx") == b"data key"  # the id picks the key, not the order
    legacy = crypto.wrap_to_public(b"old record", old.public_key(), b"ctx")[12:]  # as wraps were before key ids: no prefix
    assert crypto.wrapped_key_id(legacy) is None
    assert crypto.unwrap_with_private(legacy, [new, old], b"ctx") == b"old record"
    with pytest.raises(CryptoError, match=crypto.key_id(new.public_key()).hex()):
        crypto.unwrap_with_private(blob, [old], b"ctx")
    with pytest.raises(CryptoError):
        crypto.unwrap_with_private(blob, [new], b"other context")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mobile_office.cli", *args], cwd=REPO, capture_output=True, text=True)


def test_init_hq_encrypts_by_default(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "mobile_office.cli", "provision", "init-hq", "--hq-dir", str(tmp_path / "hq")], cwd=REPO,
                       capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "MO_HQ_PASSPHRASE"})
    assert r.returncode == 2 and "passphrase" in r.stderr and not (tmp_path / "hq").exists()
    r = cli("provision", "init-hq", "--hq-dir", str(tmp_path / "hq"), "--no-passphrase")
    assert r.returncode == 0 and "UNENCRYPTED" in r.stderr


def _wrap_kid(hq_db: Path, record_id: str) -> str:
    with sqlite3.connect(hq_db) as c:
        sealed = json.loads(c.execute("SELECT sealed FROM records WHERE record_id = ?", (record_id,)).fetchone()[0])
    kid = crypto.wrapped_key_id(base64.b64decode(sealed["wrap_hq"]))
    assert kid is not None
    return kid.hex()


@pytest.mark.functional
def test_hq_seal_key_rotation_end_to_end_with_a_van(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker,
                                                    procs: list[Proc]) -> None:
    st = Stack(tmp_path, mosquitto, bundle, procs)
    # a command's expiry is judged in trusted time; this machine's clock is right but nothing disciplines it
    st.start_node(False, "--trust-kernel-clock", "assume")
    st.start_hq()
    st.hq_user("olena.k", "admin")
    first = st.application()
    old_kid = crypto.key_id(hq_keys.seal_public).hex()
    assert _wrap_kid(st.hq_dir / "hq.db", first["id"]) == old_kid

    r = cli("provision", "rotate-hq-seal", "--hq-dir", str(st.hq_dir))
    assert r.returncode == 0, r.stderr
    new_kid = crypto.key_id(load_hq(st.hq_dir).seal_public).hex()
    assert new_kid != old_kid and new_kid in r.stdout
    assert st.hq is not None and st.hq.terminate() == 0
    st.start_hq()  # HQ now holds both keys

    admin = HqBrowser(st.hq_url)
    admin.login("olena.k", OFFICER_PASSWORD)
    wait_until(lambda: any(n["node_id"] == "van-01" for n in admin.api.get("/api/v1/fleet")), 60, what="the van in HQ's fleet")
    status, _ = admin.post("/commands", {"csrf": admin.csrf(), "node_id": "van-01", "kind": "hq_seal_key"})
    assert status == 200
    seal_file = bundle.directory / "hq_seal.json"
    wait_until(lambda: seal_file.exists(), 60, what="the van to take HQ's new sealing key")
    assert json.loads(seal_file.read_text())["kid"] == new_kid
    assert crypto.key_id(load_bundle(bundle.directory).hq_seal_public).hex() == new_kid  # kept across the van's restarts

    second = st.application()
    assert _wrap_kid(st.hq_dir / "hq.db", second["id"]) == new_kid  # new records: the new key
    assert _wrap_kid(st.hq_dir / "hq.db", first["id"]) == old_kid
    for rec in (first, second):  # both open in the vault
        status, page = admin.post(f"/records/{rec['id']}", {"csrf": admin.csrf(), "reason": "перевірка ротації ключа"})
        assert status == 200 and "Косач" in page, page[:300]
    assert re.search(r"hq_seal-[0-9a-f]{16}\.key", " ".join(p.name for p in st.hq_dir.iterdir()))


def test_rotated_key_is_encrypted_like_the_others(tmp_path: Path) -> None:
    from provisioning.keys import init_hq, rotate_hq_seal

    hq = init_hq(tmp_path / "hq", b"passphrase of HQ")
    kid, public = rotate_hq_seal(hq)
    key_file = tmp_path / "hq" / f"hq_seal-{kid}.key"
    assert key_file.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----") and key_file.stat().st_mode & 0o077 == 0
    again = load_hq(tmp_path / "hq", b"passphrase of HQ")
    assert [crypto.key_id(k.public_key()) for k in again.seal_ring] == [crypto.key_id(public), crypto.key_id(hq.older_seals[0].public_key())]
