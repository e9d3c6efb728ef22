"""Form posts (urlencoded and multipart) with a cookie jar, for the HQ downlink tests."""

from __future__ import annotations

import re
import sqlite3
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ApiClient


def page(client: ApiClient, path: str) -> str:
    with client.opener.open(client.base + path, timeout=15) as r:
        return str(r.read().decode())


def csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m is not None, html[:500]
    return m.group(1)


def post_multipart(client: ApiClient, path: str, fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[int, str]:
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for k, (fname, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{fname}"\r\n'
                     f"Content-Type: application/json\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(client.base + path, data=body, method="POST")
    req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    try:
        with client.opener.open(req, timeout=15) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def rows(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as c:
        try:
            return list(c.execute(sql, args).fetchall())
        except sqlite3.OperationalError:  # the table is not there yet
            return []


def hq_user(hq_dir: Path, name: str, role: str, password: str, db: str | None) -> None:
    """``mobile-office hq-user`` against HQ's database (SQLite in hq_dir, or PostgreSQL)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    args = [sys.executable, "-m", "mobile_office.cli", "hq-user", name, "--role", role, "--hq-data-dir", str(hq_dir), "--password", password]
    r = subprocess.run(args + (["--db", db] if db else []), cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.fixture(params=["sqlite", "postgresql"])
def hq_db(request: pytest.FixtureRequest) -> str | None:
    """HQ on its embedded SQLite, and on PostgreSQL (skipped with the reason when no local cluster can start)."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
