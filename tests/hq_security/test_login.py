"""HQ's login as hardened as the van's: CSRF on the form, throttling, a fresh session, an absolute lifetime, headers."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from hq.app import create_app
from kit.web import SECURITY_HEADERS
from provisioning.keys import HQKeys
from sync.clock import ManualClock
from tests.hq_security.conftest import PASSWORD, Hq, hq_config, login, login_csrf


async def test_login_without_the_csrf_token_is_refused(hq: Hq) -> None:
    async with hq.browser() as b:
        r = await b.post("/login", data={"username": "olena", "password": PASSWORD}, allow_redirects=False)
        assert r.status == 403 and "mo_hq_session" not in r.cookies
        r = await b.post("/login", data={"username": "olena", "password": PASSWORD}, headers={"Authorization": "Bearer mohq_x"},
                         allow_redirects=False)
        assert r.status == 403  # a bearer header exempts API calls from CSRF, never a form
        await login_csrf(b)  # the pre-session cookie is set, the token is not sent
        r = await b.post("/login", data={"csrf": "підробка", "username": "olena", "password": PASSWORD}, allow_redirects=False)
        assert r.status == 403
        # another site's page posting the form: refused by its origin even with a token
        r = await b.post("/login", data={"csrf": await login_csrf(b), "username": "olena", "password": PASSWORD},
                         headers={"Origin": "https://evil.example"}, allow_redirects=False)
        assert r.status == 403
        r = await login(b)
        assert r.status == 303 and r.headers["Location"] == "/"
        cookie = r.cookies["mo_hq_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"


async def test_unsafe_requests_need_the_session_token(hq: Hq) -> None:
    async with hq.browser() as b:
        await login(b)
        r = await b.post("/logout", data={}, allow_redirects=False)
        assert r.status == 403
        r = await b.post("/commands", data={"node_id": "van-01", "kind": "ping"}, allow_redirects=False)
        assert r.status == 403


async def test_brute_force_gets_429_with_the_retry_time(hq: Hq) -> None:
    async with hq.browser() as b:
        for _ in range(5):
            r = await b.post("/login", data={"csrf": await login_csrf(b), "username": "olena", "password": "не той пароль"},
                             allow_redirects=False)
            assert r.status == 401
        r = await b.post("/login", data={"csrf": await login_csrf(b), "username": "olena", "password": PASSWORD}, allow_redirects=False)
        assert r.status == 429  # even the right password, while locked: the guesser learns nothing
        assert int(r.headers["Retry-After"]) == 300
        page = await r.text()
        assert "Забагато невдалих спроб входу. Спробуйте знову о" in page and 'id="login-error"' in page
        async with hq.browser() as other:  # the username is locked, from anywhere
            r = await other.post("/login", data={"csrf": await login_csrf(other), "username": "olena", "password": PASSWORD},
                                 headers={"Accept": "application/json"}, allow_redirects=False)
            assert r.status == 429
            doc = await r.json()
            assert doc["error"]["code"] == "too_many_attempts" and "Спробуйте знову о" in doc["error"]["message"]
        hq.clock.advance(301)
        assert (await login(b)).status == 303


async def test_throttled_per_address_across_usernames(hq_keys: HQKeys) -> None:
    from kit.ratelimit import ThrottleSettings

    clock = ManualClock()
    app = create_app(hq_config(hq_keys, clock, login_throttle=ThrottleSettings(max_per_user=50, max_per_address=3)))
    async with TestClient(TestServer(app)) as client, Hq(app, client, clock, hq_keys.directory).browser() as b:
        for i in range(3):
            r = await b.post("/login", data={"csrf": await login_csrf(b), "username": f"user{i}", "password": "x" * 12},
                             allow_redirects=False)
            assert r.status == 401
        r = await b.post("/login", data={"csrf": await login_csrf(b), "username": "someone", "password": "x" * 12},
                         allow_redirects=False)
        assert r.status == 429


async def test_fresh_session_at_login_and_absolute_lifetime(hq: Hq) -> None:
    async with hq.browser() as b:
        await login(b)
        first = next(c.value for c in b.cookie_jar if c.key == "mo_hq_session")
        r = await login(b, "petro")
        second = r.cookies["mo_hq_session"].value
        assert second != first
        async with hq.browser() as thief:  # the token from before the login is dead
            thief.cookie_jar.update_cookies({"mo_hq_session": first})
            assert (await thief.get("/api/v1/fleet")).status == 401
        # Busy all day (never idle for long), yet the session ends 12 h after its login.
        for _ in range(28):  # 28 x 25 min = 11 h 40 min, never 30 min idle
            hq.clock.advance(1500)
            assert (await b.get("/api/v1/fleet")).status == 200
        hq.clock.advance(1500)
        assert (await b.get("/api/v1/fleet")).status == 401


async def test_security_headers_and_csp_as_on_the_van(hq: Hq) -> None:
    async with hq.browser() as b:
        for path in ("/login", "/api/v1/fleet", "/healthz"):
            r = await b.get(path, allow_redirects=False)
            for name, value in SECURITY_HEADERS.items():
                assert r.headers.get(name) == value, (path, name)
            assert r.headers["Cache-Control"] == "no-store"


async def test_forwarded_scheme_believed_only_from_the_configured_proxy(hq_keys: HQKeys, tmp_path: Path) -> None:
    for trusted, secure in ((frozenset({"192.0.2.1"}), False), (frozenset({"127.0.0.1"}), True)):
        clock = ManualClock()
        app = create_app(hq_config(hq_keys, clock, trusted_proxies=trusted))
        async with TestClient(TestServer(app)) as client:
            from hq import users
            from hq.app import STORE

            await users.add_user(app[STORE].db, "olena", "admin", PASSWORD, clock.now())
            fwd = {"X-Forwarded-Proto": "https"}
            got = await client.get("/login", headers=fwd)
            assert bool(got.cookies["mo_pre"]["secure"]) is secure
            token = (await got.text()).split('name="csrf" value="')[1].split('"')[0]
            origin = f"https://{client.host}:{client.port}" if secure else f"http://{client.host}:{client.port}"
            # the proxy's client speaks https: its Secure cookie comes back (this client speaks http, so it is sent by hand)
            r = await client.post("/login", data={"csrf": token, "username": "olena", "password": PASSWORD},
                                  headers={**fwd, "Origin": origin, "Cookie": f"mo_pre={got.cookies['mo_pre'].value}"}, allow_redirects=False)
            assert r.status == 303, await r.text()
            assert bool(r.cookies["mo_hq_session"]["secure"]) is secure, trusted


async def test_behind_the_proxy_throttling_counts_clients_not_the_proxy(hq_keys: HQKeys) -> None:
    from kit.ratelimit import ThrottleSettings

    clock = ManualClock()
    app = create_app(hq_config(hq_keys, clock, trusted_proxies=frozenset({"127.0.0.1"}),
                               login_throttle=ThrottleSettings(max_per_user=50, max_per_address=2)))
    async with TestClient(TestServer(app)) as client, Hq(app, client, clock, hq_keys.directory).browser() as b:
        async def attempt(client_address: str, user: str) -> int:
            r = await b.post("/login", data={"csrf": await login_csrf(b), "username": user, "password": "x" * 12},
                             headers={"X-Forwarded-For": f"198.51.100.9, {client_address}"}, allow_redirects=False)
            return r.status
        assert [await attempt("203.0.113.5", f"u{i}") for i in range(3)] == [401, 401, 429]
        assert await attempt("203.0.113.6", "u9") == 401  # another client behind the same proxy is not locked out
