"""HQ's private keys encrypted with a passphrase: every command that needs them loads them with it, or fails in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mobile_office.nodecli import hq_config
from tests.conftest import REPO


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k != "MO_HQ_PASSPHRASE"}
    return subprocess.run([sys.executable, "-m", "mobile_office.cli", *args], cwd=REPO, capture_output=True, text=True, env={**e, **(env or {})})


def test_encrypted_hq_keys(tmp_path: Path) -> None:
    hq, pw, wrong = tmp_path / "hq", tmp_path / "pass", tmp_path / "wrong"
    pw.write_text("довга фраза для ключів ЦНАП\n")
    wrong.write_text("не та фраза\n")
    r = run("provision", "init-hq", "--hq-dir", str(hq), "--passphrase-file", str(pw))
    assert r.returncode == 0, r.stderr
    for key in (hq / "hq_seal.key", hq / "hq_sign.key", hq / "ca" / "ca.key"):
        assert key.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----"), key
        assert key.stat().st_mode & 0o077 == 0

    r = run("provision", "add-node", "van-01", "--hq-dir", str(hq), "--out", str(tmp_path / "b1"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is encrypted" in r.stderr and "Traceback" not in r.stderr
    r = run("provision", "add-node", "van-01", "--hq-dir", str(hq), "--out", str(tmp_path / "b1"), "--passphrase-file", str(wrong))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "wrong passphrase" in r.stderr
    r = run("provision", "add-node", "van-01", "--hq-dir", str(hq), "--out", str(tmp_path / "b1"), "--passphrase-file", str(tmp_path / "nope"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "passphrase file unreadable" in r.stderr
    assert not (hq / "nodes" / "van-01.json").exists()  # nothing half-done

    r = run("provision", "add-node", "van-01", "--hq-dir", str(hq), "--out", str(tmp_path / "b1"), "--passphrase-file", str(pw))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b1" / "mqtt_client.crt").exists() and (tmp_path / "b1" / "ui.crt").exists()
    r = run("provision", "add-hq-worker", "hq-1", "--hq-dir", str(hq), env={"MO_HQ_PASSPHRASE": "довга фраза для ключів ЦНАП"})
    assert r.returncode == 0, r.stderr
    r = run("provision", "revoke", "van-01", "--hq-dir", str(hq), env={"MO_HQ_PASSPHRASE": "не та"})
    assert r.returncode == 2 and "wrong passphrase" in r.stderr
    r = run("provision", "revoke", "van-01", "--hq-dir", str(hq), "--passphrase-file", str(pw))
    assert r.returncode == 0, r.stderr
    r = run("provision", "list", "--hq-dir", str(hq), "--passphrase-file", str(pw))
    assert "REVOKED" in r.stdout

    # HQ itself starts from its setting.
    cfg = hq_config(None, {"hq_data_dir": str(hq), "hq_passphrase_file": str(pw)})
    assert cfg.keys.passphrase is not None
    r = run("hq", "--hq-data-dir", str(hq), "--hq-port", "0")
    assert r.returncode == 2 and "is encrypted" in r.stderr and r.stderr.count("\n") == 1
