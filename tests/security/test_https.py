"""HTTPS on the van UI: `provision add-node` puts a server certificate in the bundle, `mobile-office node` serves it,
a real TLS client verifies it against HQ's CA (and nothing else)."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from mobile_office.nodecli import node_config
from kit.settings import ConfigError
from provisioning.errors import ProvisioningError
from provisioning.keys import NodeBundle
from tests.conftest import REPO, Proc, free_port, mobile_office_cmd, spawn, wait_until


def cli(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "mobile_office.cli", *args], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.functional
def test_node_serves_https_with_the_bundle_certificate(tmp_path: Path, procs: list[Proc]) -> None:
    hq, bundle = tmp_path / "hq", tmp_path / "bundle"
    cli("provision", "init-hq", "--hq-dir", str(hq), "--no-passphrase")
    out = cli("provision", "add-node", "van-07", "--hq-dir", str(hq), "--out", str(bundle), "--admin", "admin",
              "--ui-name", "van-07.local", "--ui-name", "127.0.0.1")
    password = re.search(r"one-time password (\S+)", out).group(1)  # type: ignore[union-attr]
    assert (bundle / "ui.crt").exists() and (bundle / "ui.key").stat().st_mode & 0o077 == 0
    port = free_port()
    procs.append(spawn(mobile_office_cmd("node", "--bundle", str(bundle), "--data-dir", str(tmp_path / "data"), "--http-host", "127.0.0.1",
                                         "--http-port", str(port), "--broker", f"mqtt://127.0.0.1:{free_port()}"), tmp_path / "node.log"))
    trusted = ssl.create_default_context(cafile=str(bundle / "ca.crt"))

    def up() -> bool:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=trusted, timeout=2) as r:
            return r.status == 200

    wait_until(up, 60, what="the node over HTTPS")
    # The certificate is HQ CA's, for the names given.
    with socket.create_connection(("127.0.0.1", port)) as raw, trusted.wrap_socket(raw, server_hostname="van-07.local") as tls:
        cert = tls.getpeercert()
        assert ("DNS", "van-07.local") in cert["subjectAltName"] and ("IP Address", "127.0.0.1") in cert["subjectAltName"]
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    # Another name, or a client that does not trust HQ's CA, is refused.
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(("127.0.0.1", port)) as raw, trusted.wrap_socket(raw, server_hostname="evil.example"):
            pass
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(("127.0.0.1", port)) as raw, ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1"):
            pass
    # Over HTTPS the session cookie is Secure.
    req = urllib.request.Request(f"https://127.0.0.1:{port}/api/v1/login", data=json.dumps({"username": "admin", "password": password}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, context=trusted, timeout=30) as r:
        cookie = next(v for k, v in r.headers.items() if k.lower() == "set-cookie" and v.startswith("mo_session="))
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # Plain HTTP on the HTTPS port gets nothing useful.
    with pytest.raises(OSError):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            r.read()


def test_https_setting(bundle: NodeBundle, hq_keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A bundle without the UI certificate (as the demo and most tests make): auto is plain HTTP, on is refused in one line.
    assert node_config(bundle.directory, None, {"https": "auto"}).https is None
    with pytest.raises(ProvisioningError, match=r"ui\.crt"):
        node_config(bundle.directory, None, {"https": "on"})
    with pytest.raises(ConfigError, match="--https"):
        node_config(bundle.directory, None, {"https": "maybe"})
    from provisioning.keys import AdminAccount, add_node

    b2 = add_node(hq_keys, "van-08", tmp_path / "b2", [AdminAccount("admin", "довгий-пароль-8")], ui_names=["van-08.local"])
    cfg = node_config(b2.directory, None, {"https": "auto"})
    assert cfg.https is not None and cfg.secure_cookies
    assert node_config(b2.directory, None, {"https": "off"}).https is None
