"""A tiny synchronous HTTP client for tests that talk to node/HQ processes."""

from __future__ import annotations

import http.cookiejar
import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any


class ApiClient:
    """``token``: HQ's machine token (``mobile-office hq-token``), sent as ``Authorization: Bearer``."""

    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        if token:
            self.opener.addheaders.append(("Authorization", f"Bearer {token}"))

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self.opener.open(req, timeout=15) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def get(self, path: str) -> Any:
        status, doc = self.request("GET", path)
        assert status == 200, (status, doc)
        return doc

    def login(self, username: str, password: str) -> None:
        status, doc = self.request("POST", "/api/v1/login", {"username": username, "password": password})
        assert status == 200, (status, doc)

    def form_login(self, username: str, password: str) -> int:
        """HQ's login form, as a browser posts it: the page first (its pre-session CSRF token and cookie), then the form."""
        with self.opener.open(self.base + "/login", timeout=15) as r:
            m = re.search(r'name="csrf" value="([^"]+)"', r.read().decode())
        assert m is not None, "no CSRF token in the login form"
        req = urllib.request.Request(self.base + "/login", method="POST", data=urllib.parse.urlencode(
            {"csrf": m.group(1), "username": username, "password": password}).encode())
        try:
            with self.opener.open(req, timeout=15) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)


def hq_token(hq_dir: Path, role: str = "viewer", name: str = "tests", db: str | None = None) -> str:
    """A machine token for HQ's JSON API, made as an operator would (``mobile-office hq-token``)."""
    args = [sys.executable, "-m", "mobile_office.cli", "hq-token", name, "--role", role, "--hq-data-dir", str(hq_dir)]
    r = subprocess.run(args + (["--db", db] if db else []), cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()
