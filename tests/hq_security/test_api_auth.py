"""Every JSON route at HQ needs a login or a machine token; the route list is read from the router, so new routes are covered."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

from aiohttp import hdrs

from hq.auth import OPEN, is_json_route
from tests.conftest import REPO
from tests.hq_security.conftest import Hq, login


def json_routes(hq: Hq) -> list[tuple[str, str]]:
    out = []
    for route in hq.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or re.sub(r"\{[^}]+\}", "x1", info.get("formatter", ""))
        if path and route.method != hdrs.METH_HEAD and is_json_route(path) and path not in OPEN:
            out.append((route.method, path))
    return out


async def test_every_json_route_without_credentials_is_401_json(hq: Hq) -> None:
    routes = json_routes(hq)
    assert ("GET", "/api/v1/fleet") in routes and ("GET", "/fleet.json") in routes and len(routes) >= 10, routes
    async with hq.browser() as anonymous:
        for method, path in routes:
            r = await anonymous.request(method, path, headers={"Accept": "text/html"})  # what a browser asks for
            assert r.status == 401, (method, path, r.status)
            assert r.content_type == "application/json", (method, path)
            assert (await r.json())["error"]["code"] == "login_required", (method, path)
        for path in OPEN:  # these stay public
            assert (await anonymous.get(path)).status == 200, path
        r = await anonymous.get("/api/v1/fleet", headers={"Authorization": "Bearer mohq_not-a-token"})
        assert r.status == 401 and (await r.json())["error"]["code"] == "invalid_token"


async def test_a_logged_in_browser_reads_the_api(hq: Hq) -> None:
    async with hq.browser() as b:
        assert (await login(b, "petro")).status == 303
        r = await b.get("/api/v1/fleet")
        assert r.status == 200 and await r.json() == []


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mobile_office.cli", *args], cwd=REPO, capture_output=True, text=True)


async def test_machine_token_issued_once_hashed_and_revocable(hq: Hq) -> None:
    r = await asyncio.to_thread(_cli, "hq-token", "reporting", "--role", "viewer", "--hq-data-dir", str(hq.data_dir))
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("mohq_") and "\n" not in token and "shown once" in r.stderr
    raw = b"".join(p.read_bytes() for p in hq.data_dir.glob("hq.db*"))
    assert token.encode() not in raw  # only its hash is kept

    async with hq.browser() as script:
        bearer = {"Authorization": f"Bearer {token}"}
        r2 = await script.get("/api/v1/stats", headers=bearer)
        assert r2.status == 200, await r2.text()
        # a viewer token cannot do what a viewer cannot: the record status reads a record, not open one; pages stay for people
        assert (await script.get("/api/v1/data-classes", headers=bearer)).status == 200

        for method, path in json_routes(hq):  # the token opens every JSON route (none answers 401 or the login page)
            r4 = await script.request(method, path, headers=bearer, allow_redirects=False)
            assert r4.status in (200, 404, 422) and r4.content_type == "application/json", (method, path, r4.status)

        r = await asyncio.to_thread(_cli, "hq-token", "reporting", "--revoke", "--hq-data-dir", str(hq.data_dir))
        assert r.returncode == 0, r.stderr
        r3 = await script.get("/api/v1/stats", headers=bearer)
        assert r3.status == 401 and (await r3.json())["error"]["code"] == "invalid_token"

    r = await asyncio.to_thread(_cli, "hq-token", "reporting", "--revoke", "--hq-data-dir", str(hq.data_dir))
    assert r.returncode == 2 and "no active token" in r.stderr
    r = await asyncio.to_thread(_cli, "hq-token", "reporting", "--hq-data-dir", str(hq.data_dir))
    assert r.returncode == 2 and "--role" in r.stderr
