"""HQ over HTTPS with a certificate from its own CA, verified by a real TLS client; plain HTTP only on loopback or behind a proxy."""

from __future__ import annotations

import http.cookiejar
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from hq.config import HQConfig
from kit.settings import ConfigError
from mobile_office.nodecli import hq_listen_check
from provisioning.keys import HQKeys
from tests.conftest import REPO, Proc, free_port, mobile_office_cmd, spawn, wait_until

PASSWORD = "Пароль-штабу-1"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mobile_office.cli", *args], cwd=REPO, capture_output=True, text=True)


def test_plain_http_refused_on_a_non_loopback_address(hq_keys: HQKeys) -> None:
    r = cli("hq", "--hq-data-dir", str(hq_keys.directory), "--hq-host", "0.0.0.0", "--hq-port", str(free_port()))
    assert r.returncode == 2 and "plain HTTP only on loopback" in r.stderr and "Traceback" not in r.stderr
    cfg = HQConfig(data_dir=hq_keys.directory, keys=hq_keys, host="10.0.0.5")
    with pytest.raises(ConfigError):
        hq_listen_check(cfg)
    for ok in (HQConfig(data_dir=hq_keys.directory, keys=hq_keys, host="127.0.0.1"),
               HQConfig(data_dir=hq_keys.directory, keys=hq_keys, host="::1"),
               HQConfig(data_dir=hq_keys.directory, keys=hq_keys, host="0.0.0.0", trusted_proxies=frozenset({"10.0.0.2"}))):
        hq_listen_check(ok)


def _https_ok(url: str, ctx: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def test_hq_serves_https_with_its_ca_certificate(hq_keys: HQKeys, tmp_path: Path, procs: list[Proc]) -> None:
    r = cli("provision", "hq-cert", "--hq-dir", str(hq_keys.directory), "--name", "localhost", "--name", "127.0.0.1")
    assert r.returncode == 0, r.stderr
    key = hq_keys.directory / "https" / "hq.key"
    assert key.stat().st_mode & 0o077 == 0
    r = cli("hq-user", "olena", "--role", "viewer", "--hq-data-dir", str(hq_keys.directory), "--password", PASSWORD)
    assert r.returncode == 0, r.stderr
    port = free_port()
    hq = spawn(mobile_office_cmd("hq", "--hq-data-dir", str(hq_keys.directory), "--hq-broker", f"mqtt://127.0.0.1:{free_port()}",
                                 "--hq-host", "127.0.0.1", "--hq-port", str(port)), tmp_path / "hq.log")
    procs.append(hq)
    trusting_ca = ssl.create_default_context(cafile=str(hq_keys.directory / "ca" / "ca.crt"))
    base = f"https://127.0.0.1:{port}"
    wait_until(lambda: _https_ok(base + "/healthz", trusting_ca), 30, what="HQ over HTTPS")
    assert f"serving on https://127.0.0.1:{port}/" in hq.output()
    assert "private keys are NOT encrypted" in hq.output()  # this test's HQ keys are plain: said loudly at every start

    # The certificate is HQ CA's, for the names it was issued for: the name is checked, not just the chain.
    with pytest.raises(urllib.error.URLError) as exc:
        urllib.request.urlopen(base + "/healthz", context=ssl.create_default_context(), timeout=5)  # the system's trust only
    assert isinstance(exc.value.reason, ssl.SSLCertVerificationError)
    with pytest.raises(OSError):  # the connection is closed or the answer is no HTTP
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)  # no plain HTTP on the TLS port
    by_name = ssl.create_default_context(cafile=str(hq_keys.directory / "ca" / "ca.crt"))
    assert _https_ok(f"https://localhost:{port}/healthz", by_name)

    # Logging in over HTTPS: the session cookie is Secure (and HttpOnly, SameSite=Strict).
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=trusting_ca), urllib.request.HTTPCookieProcessor(jar), NoRedirect)
    with opener.open(base + "/login", timeout=10) as page:
        m = re.search(r'name="csrf" value="([^"]+)"', page.read().decode())
    assert m
    req = urllib.request.Request(base + "/login", method="POST",
                                 data=urllib.parse.urlencode({"csrf": m.group(1), "username": "olena", "password": PASSWORD}).encode())
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(req, timeout=10)
    assert redirect.value.code == 303
    set_cookie = [v for k, v in redirect.value.headers.items() if k.lower() == "set-cookie" and v.startswith("mo_hq_session=")]
    assert set_cookie and "Secure" in set_cookie[0] and "HttpOnly" in set_cookie[0] and "SameSite=Strict" in set_cookie[0]
