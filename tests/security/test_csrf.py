"""CSRF: every state-changing route, found by enumerating the router, refuses a forged request."""

from __future__ import annotations

import json

import aiohttp

from tests.conftest import ADMIN_PASSWORD
from tests.security.conftest import Node, csrf_of, form_login, route_paths

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
EVIL = "http://evil.example"


async def _code(r) -> str:  # type: ignore[no-untyped-def]
    text = await r.text()
    try:
        return str(json.loads(text)["error"]["code"])
    except ValueError:
        return text


async def test_every_unsafe_route_refuses_a_form_without_the_token(node: Node) -> None:
    c = node.client
    assert (await form_login(c)).status == 303
    routes = route_paths(node.app, UNSAFE)
    assert {"/applications", "/login", "/logout", "/api/v1/applications"} <= {p for _, p, _ in routes}
    good = await csrf_of(c, "/")
    for method, path, _ in routes:
        api = path.startswith("/api/")
        # What a cross-site <form> can send: urlencoded, no (or a wrong) token.
        for data in ({"x": "1"}, {"csrf": "forged", "username": "admin", "password": ADMIN_PASSWORD}):
            r = await c.request(method, path, data=data, headers={"Accept": "application/json"}, allow_redirects=False)
            assert r.status in ((415, 403) if api else (403,)), (method, path, r.status)
            assert await _code(r) in (("unsupported_media_type", "csrf_failed") if api else ("csrf_failed",)), (method, path)
        if not api:
            # A multipart form (uploads) without the token: refused too, whoever checks it.
            mp = aiohttp.FormData()
            mp.add_field("x", "1")
            mp.add_field("file", b"data", filename="a.txt", content_type="text/plain")
            r = await c.request(method, path, data=mp, headers={"Accept": "application/json"}, allow_redirects=False)
            assert r.status == 403 and await _code(r) == "csrf_failed", (method, path, r.status)
        # The right token, but the request comes from another site.
        headers = {"Origin": EVIL, "Accept": "application/json"}
        if api:
            r = await c.request(method, path, json={}, headers=headers, allow_redirects=False)
        else:
            r = await c.request(method, path, data={"csrf": good}, headers=headers, allow_redirects=False)
        assert r.status == 403 and await _code(r) == "csrf_failed", (method, path, r.status)
        r = await c.request(method, path, json={}, headers={"Sec-Fetch-Site": "cross-site"}, allow_redirects=False)
        assert r.status == 403, (method, path, r.status)
    # Still logged in and nothing was created by the forged requests.
    status = await (await c.get("/api/v1/status")).json()
    assert status["outbox"]["by_stream"].get("rec", {"pending": 0})["pending"] == 0
    assert (await c.get("/", allow_redirects=False)).status == 200


async def test_forged_intake_creates_nothing_and_the_real_form_works(node: Node) -> None:
    c = node.client
    await form_login(c)
    form = {"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776", "service_code": "RES-01", "consent": "on"}
    r = await c.post("/applications", data=form, allow_redirects=False)
    assert r.status == 403
    token = await csrf_of(c, "/applications/new")
    r = await c.post("/applications", data={**form, "csrf": token}, headers={"Origin": node.origin}, allow_redirects=False)
    assert r.status == 303, await r.text()
    status = await (await c.get("/api/v1/status")).json()
    assert status["outbox"]["by_stream"]["rec"]["pending"] == 1


async def test_login_and_rating_forms_need_a_pre_session_token(node: Node) -> None:
    async with node.browser() as b:
        r = await b.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD}, allow_redirects=False)
        assert r.status == 403  # login CSRF: a forged login would put the victim in the attacker's account
        token = await csrf_of(b, "/login")
        r = await b.post("/login", data={"csrf": token + "x", "username": "admin", "password": ADMIN_PASSWORD}, allow_redirects=False)
        assert r.status == 403
        r = await b.post("/login", data={"csrf": token, "username": "admin", "password": ADMIN_PASSWORD}, allow_redirects=False)
        assert r.status == 303
    async with node.browser() as other:
        # A token from one browser is worthless in another (bound to that browser's cookie).
        await other.get("/login")
        r = await other.post("/login", data={"csrf": token, "username": "admin", "password": ADMIN_PASSWORD}, allow_redirects=False)
        assert r.status == 403


async def test_api_with_a_session_accepts_only_json_or_the_header_token(node: Node) -> None:
    c = node.client
    r = await c.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    token = (await r.json())["csrf"]
    assert (await c.post("/api/v1/logout", headers={"X-CSRF-Token": "nope"})).status == 403
    assert (await c.post("/api/v1/logout")).status == 415
    assert (await c.get("/api/v1/status")).status == 200
    r = await c.post("/api/v1/logout", headers={"X-CSRF-Token": token})
    assert r.status == 200 and (await r.json())["status"] == "logged_out"
