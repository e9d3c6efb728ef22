"""Credentials and personal data over their whole life (issue 16), black-box through HTTP where possible.

Passwords (change, one-time, rules, reset), revocation (removed administrator,
other sessions, absolute lifetime, lock after the last session), the bundle's
slots leaving the card, binding (role in a slot, application in an
attachment, old slots upgraded), node key rotation, the open redirect and
home visits by assignment.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from edge.app import create_app
from edge.appkeys import SESSIONS, STORE, VISITS
from edge.config import NodeConfig
from edge.errors import CryptoError
from edge.store import Store
from hq.planning import sealed_assignment
from provisioning.keys import AdminAccount, HQKeys, NodeBundle, add_node, load_bundle
from sync import crypto
from sync.clock import ManualClock
from tests.conftest import REPO, Proc, free_port, http_ok, mobile_office_cmd, spawn, wait_until
from tests.security.conftest import config, csrf_of, form_login

Client = TestClient[web.Request, web.Application]
PW = {"maria": "Марія-наглядає-1", "olena": "Олена-приймає-2", "ivan": "Іван-їздить-3"}
ONE_TIME = "kY3-pV9q-Zt7w"


@pytest.fixture
def staffed(hq_keys: HQKeys, tmp_path: Path) -> NodeBundle:
    return add_node(hq_keys, "van-05", tmp_path / "bundle5", [
        AdminAccount("maria", PW["maria"], "supervisor"), AdminAccount("olena", PW["olena"], "van_admin"),
        AdminAccount("ivan", PW["ivan"], "case_admin"), AdminAccount("petro", ONE_TIME, "van_admin", must_change=True),
    ])


def staffed_config(staffed: NodeBundle, tmp_path: Path, clock: ManualClock) -> NodeConfig:
    cfg = config(staffed, tmp_path / "node", clock)
    cfg.bundle_dir = staffed.directory
    return cfg


@pytest.fixture
async def van(staffed: NodeBundle, tmp_path: Path) -> AsyncIterator[tuple[Client, ManualClock]]:
    clock = ManualClock()
    async with TestClient(TestServer(create_app(staffed_config(staffed, tmp_path, clock)))) as client:
        yield client, clock


async def api_login(c: Client | aiohttp.ClientSession, user: str, password: str | None = None) -> dict[str, object]:
    r = await c.post("/api/v1/login", json={"username": user, "password": password or PW[user]})
    assert r.status == 200, await r.text()
    body: dict[str, object] = await r.json()
    return body


async def search_status(c: Client | aiohttp.ClientSession) -> int:
    return (await c.post("/api/v1/applicants/search", json={"rnokpp": "1759013776"})).status


def other_browser(c: Client) -> aiohttp.ClientSession:
    """Another browser on the same node: its own cookie jar."""
    return aiohttp.ClientSession(base_url=f"http://{c.host}:{c.port}", cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_one_time_password_is_changed_at_first_login(van: tuple[Client, ManualClock]) -> None:
    c, _ = van
    body = await api_login(c, "petro", ONE_TIME)
    assert body["password_change_required"] is True
    # Nothing else is open until the change: API and pages alike.
    r = await c.post("/api/v1/applicants/search", json={"rnokpp": "1759013776"})
    assert r.status == 403 and (await r.json())["error"]["code"] == "password_change_required"
    r = await c.get("/applications/new")
    assert r.status == 403 and 'data-code="password_change_required"' in await r.text()
    # The rules, in Ukrainian; a wrong old password does not change anything.
    for new, field, text in (("короткий", "new_password", "не коротшим"), ("Password2024!", "new_password", "надто поширений"),
                             ("petro-van-2026", "new_password", "ім'я користувача"), ("Довгий-новий-пароль-9", "old_password", "неправильний")):
        r = await c.post("/api/v1/password", json={"old_password": ONE_TIME if field == "new_password" else "не-той-пароль", "new_password": new})
        assert r.status == 422, (new, await r.text())
        err = (await r.json())["error"]
        assert err["code"] == "validation_failed" and text in err["fields"][field], (new, err)
    r = await c.post("/api/v1/password", json={"old_password": ONE_TIME, "new_password": "Довгий-новий-пароль-9"})
    assert r.status == 200 and (await r.json())["status"] == "changed"
    assert await search_status(c) == 200  # the fresh session is a normal one
    assert (await c.post("/api/v1/login", json={"username": "petro", "password": ONE_TIME})).status == 401
    assert (await api_login(c, "petro", "Довгий-новий-пароль-9"))["password_change_required"] is False
    # The demo's and the bundle's own passwords need no change.
    assert (await api_login(c, "olena"))["password_change_required"] is False


async def test_password_page_in_english_and_first_login_lands_there(van: tuple[Client, ManualClock]) -> None:
    c, _ = van
    r = await form_login(c, "petro", ONE_TIME)
    assert r.status == 303 and r.headers["Location"] == "/password"
    c.session.cookie_jar.update_cookies({"mo_lang": "en"})
    token = await csrf_of(c, "/password")
    r = await c.post("/password", data={"csrf": token, "old_password": ONE_TIME, "new_password": "Qwertyuiop1", "repeat": "Qwertyuiop1"})
    assert r.status == 422 and "too common" in await r.text()
    r = await c.post("/password", data={"csrf": token, "old_password": ONE_TIME, "new_password": "Три-слова-разом", "repeat": "Три-слова-разом"},
                     allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/"
    assert (await c.get("/applications/new")).status == 200


async def test_changing_a_password_ends_every_other_session(van: tuple[Client, ManualClock]) -> None:
    c, _ = van
    async with other_browser(c) as tablet:
        await api_login(tablet, "olena")
        await api_login(c, "olena")
        assert await search_status(tablet) == 200
        r = await c.post("/api/v1/password", json={"old_password": PW["olena"], "new_password": "Олена-має-новий-4"})
        assert r.status == 200
        assert await search_status(tablet) == 401  # at once, not at the idle timeout
        assert await search_status(c) == 200


async def test_removed_administrator_gets_401_at_once(van: tuple[Client, ManualClock]) -> None:
    c, _ = van
    async with other_browser(c) as hers:
        await api_login(hers, "olena")
        assert await search_status(hers) == 200
        assert (await form_login(c, "maria", PW["maria"])).status == 303
        token = await csrf_of(c, "/admins")
        r = await c.post("/admins/olena/remove", data={"csrf": token}, allow_redirects=False)
        assert r.status == 303
        assert await search_status(hers) == 401
        assert (await hers.post("/api/v1/applicants", json={"surname": "Х"})).status == 401
        assert (await hers.post("/api/v1/login", json={"username": "olena", "password": PW["olena"]})).status == 401


async def test_supervisor_resets_a_password_to_a_one_time_one(van: tuple[Client, ManualClock]) -> None:
    c, _ = van
    async with other_browser(c) as his:
        await api_login(his, "ivan")
        assert (await form_login(c, "maria", PW["maria"])).status == 303
        token = await csrf_of(c, "/admins")
        r = await c.post("/admins/ivan/reset", data={"csrf": token})
        page = await r.text()
        assert r.status == 200 and "Одноразовий пароль для ivan" in page
        new = page.split("Одноразовий пароль для ivan: ")[1].split(".")[0]
        assert await search_status(his) == 401
        assert (await his.post("/api/v1/login", json={"username": "ivan", "password": PW["ivan"]})).status == 401
        assert (await api_login(his, "ivan", new))["password_change_required"] is True
        assert (await c.post("/admins/maria/reset", data={"csrf": token})).status == 409  # one's own: the password page


async def test_sessions_have_an_absolute_lifetime(staffed: NodeBundle, tmp_path: Path) -> None:
    clock = ManualClock()
    cfg = staffed_config(staffed, tmp_path, clock)
    cfg.session_timeout, cfg.session_max_age = 900.0, 3000.0
    async with TestClient(TestServer(create_app(cfg))) as c:
        await api_login(c, "olena")
        for _ in range(4):
            clock.advance(700)  # never idle for the idle timeout...
            assert await search_status(c) == 200
        clock.advance(300)  # ...but past the shift's length
        assert await search_status(c) == 401


async def test_store_locks_again_after_the_last_session(staffed: NodeBundle, tmp_path: Path) -> None:
    clock = ManualClock()
    cfg = staffed_config(staffed, tmp_path, clock)
    cfg.lock_grace = 120.0
    async with TestClient(TestServer(create_app(cfg))) as c:
        store = c.app[STORE]
        await api_login(c, "olena")
        for _ in range(10):  # logged in: stays open however long the locker looks
            clock.advance(60)
            await asyncio.sleep(0.01)
            assert await search_status(c) == 200
        assert not store.locked
        assert (await c.post("/api/v1/logout", json={})).status == 200
        for _ in range(200):
            if store.locked:
                break
            clock.advance(30)
            await asyncio.sleep(0.01)
        assert store.locked  # the node key has left memory
        r = await c.get("/api/v1/status")
        assert (await r.json())["store"]["locked"] is True


async def test_bundle_slots_leave_the_card_after_the_first_start(staffed: NodeBundle, hq_keys: HQKeys, tmp_path: Path) -> None:
    before = (staffed.directory / "keyslots.json").read_bytes()
    admin_wraps = [base64.b64encode(s.wrapped) for s in staffed.keyslots if s.kind == "admin"]
    seal_wrapped = base64.b64encode(staffed.node_seal_wrapped or b"")
    assert all(w in before for w in admin_wraps) and seal_wrapped in (staffed.directory / "node.json").read_bytes()
    clock = ManualClock()
    async with TestClient(TestServer(create_app(staffed_config(staffed, tmp_path, clock)))) as c:
        bundle = load_bundle(staffed.directory)
        assert [s.kind for s in bundle.keyslots] == ["hq"] and bundle.node_seal_wrapped is None
        card = b"".join(p.read_bytes() for p in staffed.directory.iterdir() if p.is_file())
        assert not any(w in card for w in admin_wraps) and seal_wrapped not in card
        # The paper sheet's password opens nothing on the card any more; the node itself still logs in (its database holds the slots).
        for slot in bundle.keyslots:
            with pytest.raises(CryptoError):
                crypto.unwrap_with_key(slot.wrapped, crypto.kek_from_password(PW["olena"], slot.salt, slot.n),
                                       crypto.admin_slot_context("van-05", "olena", "van_admin"))
        await api_login(c, "ivan")
        visit = sealed_assignment(hq_keys.node_seal_keys()["van-05"], "van-05", {"name": "Гнатюк Ганна", "categories": []}, None, "ivan")
        await c.app[VISITS].receive_assignment(visit)
        assert (await c.get("/visits")).status == 200  # the sealing key came from the database
    # HQ's recovery slot stays and opens the node key.
    hq_slot = load_bundle(staffed.directory).keyslots[0]
    assert len(crypto.unwrap_with_private(hq_slot.wrapped, hq_keys.seal, b"keyslot|van-05|hq|")) == 32
    # A second start changes nothing and still logs in.
    async with TestClient(TestServer(create_app(staffed_config(staffed, tmp_path, clock)))) as c:
        await api_login(c, "olena")


async def test_role_is_bound_into_the_keyslot_and_old_slots_are_upgraded(staffed: NodeBundle, tmp_path: Path) -> None:
    clock = ManualClock()
    store = await Store.open(tmp_path / "n.db", staffed.node_id, staffed.hq_seal_public, clock)
    try:
        slots = [s.config() for s in staffed.keyslots]
        node_key = crypto.unwrap_with_key(slots[1]["wrapped"], crypto.kek_from_password(PW["olena"], slots[1]["salt"], slots[1]["n"]),
                                          crypto.admin_slot_context("van-05", "olena", "van_admin"))
        # ivan's slot as an old bundle made it: scrypt 2^15, no role in the associated data.
        salt = b"s" * 16
        old = crypto.wrap_with_key(node_key, crypto.kek_from_password(PW["ivan"], salt, 2**15), b"keyslot|van-05|admin|ivan")
        slots[2] = {**slots[2], "salt": salt, "n": 2**15, "v": 1, "wrapped": old}
        await store.import_keyslots(slots)
        await store.db.execute("UPDATE keyslots SET role = 'supervisor' WHERE username = 'olena'")  # edited on the card
        assert await store.unlock("olena", PW["olena"]) is None
        account = await store.unlock("ivan", PW["ivan"])
        assert account is not None and account.role == "case_admin"
        async with store.db.execute("SELECT n, v FROM keyslots WHERE username = 'ivan'") as cur:
            assert tuple(await cur.fetchone() or ()) == (crypto.SCRYPT_N, crypto.SLOT_VERSION)
        store.lock()
        assert await store.unlock("ivan", PW["ivan"]) is not None  # the upgraded slot opens
    finally:
        await store.close()


async def test_node_key_rotation(van: tuple[Client, ManualClock], staffed: NodeBundle, hq_keys: HQKeys, tmp_path: Path) -> None:
    c, _ = van
    old_key = crypto.unwrap_with_private(load_bundle(staffed.directory).keyslots[0].wrapped, hq_keys.seal, b"keyslot|van-05|hq|")
    await api_login(c, "olena")
    r = await c.post("/api/v1/applicants", json={"surname": "Коваленко", "given_name": "Олена", "rnokpp": "1759013776", "birth_date": "1980-01-02"})
    assert r.status == 201, await r.text()
    async with other_browser(c) as his:
        await api_login(his, "ivan")
        assert (await form_login(c, "maria", PW["maria"])).status == 303
        token = await csrf_of(c, "/admins")
        r = await c.post("/admins/rotate-key", data={"csrf": token, "password": "не-той-пароль"})
        assert r.status == 422
        r = await c.post("/admins/rotate-key", data={"csrf": token, "password": PW["maria"]})
        page = await r.text()
        assert r.status == 200 and "Ключ вузла замінено" in page and "Одноразовий пароль для olena" in page
        assert await search_status(his) == 401
        assert (await c.post("/api/v1/applicants/search", json={"rnokpp": "1759013776"})).status == 200
        found = await (await c.post("/api/v1/applicants/search", json={"rnokpp": "1759013776"})).json()
        assert found["applicants"][0]["surname"] == "Коваленко"  # same blind index, rewrapped data
    db = sqlite3.connect(tmp_path / "node" / "node.db")
    periods = db.execute("SELECT period, wrapped FROM period_keys").fetchall()
    assert periods
    for period, wrapped in periods:  # what a removed administrator may have noted opens nothing now
        with pytest.raises(CryptoError):
            crypto.unwrap_with_key(bytes(wrapped), old_key, f"period|van-05|{period}".encode())
    hq_wrapped = db.execute("SELECT wrapped FROM keyslots WHERE kind = 'hq'").fetchone()[0]
    new_key = crypto.unwrap_with_private(bytes(hq_wrapped), hq_keys.seal, b"keyslot|van-05|hq|")
    assert new_key != old_key and load_bundle(staffed.directory).keyslots[0].wrapped == bytes(hq_wrapped)  # the card's recovery slot too
    db.close()


async def test_language_switch_redirects_only_locally(van: tuple[Client, ManualClock]) -> None:
    c, _ = van
    for target in ("/%09/evil.example/", "//evil.example/", "/\\evil.example/", "https://evil.example/", "/%0a/evil.example",
                   "%2F%2Fevil.example", "/ /evil.example", "\\\\evil.example"):
        r = await c.get(f"/lang/uk?next={target}", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/", (target, r.headers["Location"])
    r = await c.get("/lang/en?next=/applicants", allow_redirects=False)
    assert r.headers["Location"] == "/applicants"


async def test_home_visits_are_listed_by_assignment(van: tuple[Client, ManualClock], hq_keys: HQKeys) -> None:
    c, _ = van
    seal = hq_keys.node_seal_keys()["van-05"]
    mine = sealed_assignment(seal, "van-05", {"name": "Прізвище-Івана", "categories": []}, None, "ivan")
    other = sealed_assignment(seal, "van-05", {"name": "Прізвище-Зої", "categories": []}, None, "zoya")
    for v in (mine, other):
        await c.app[VISITS].receive_assignment(v)
    seen = {}
    for user in ("olena", "ivan", "maria"):
        await api_login(c, user)
        page = await (await c.get("/visits")).text()
        seen[user] = ("Прізвище-Івана" in page, "Прізвище-Зої" in page)
    assert seen == {"olena": (False, False), "ivan": (True, False), "maria": (True, True)}
    await api_login(c, "olena")
    token = (await api_login(c, "olena"))["csrf"]
    r = await c.post(f"/visits/{mine['id']}/start", data={"csrf": str(token)}, allow_redirects=False)
    assert r.status == 404  # not hers to start either
    assert c.app[SESSIONS].active >= 1


@pytest.mark.functional
def test_printed_one_time_password_and_the_card_after_first_start(tmp_path: Path, procs: list[Proc]) -> None:
    """The operator's path: `provision add-node` prints a one-time password; the van started from the card asks to change it,
    and the card's keyslots.json keeps HQ's recovery slot only."""
    hq, bundle = tmp_path / "hq", tmp_path / "bundle"
    for args in (("provision", "init-hq", "--hq-dir", str(hq), "--no-passphrase"),
                 ("provision", "add-node", "van-09", "--hq-dir", str(hq), "--out", str(bundle), "--admin", "olha:supervisor")):
        r = subprocess.run([sys.executable, "-m", "mobile_office.cli", *args], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    password = re.search(r"olha \(supervisor\): one-time password (\S+)", r.stdout).group(1)  # type: ignore[union-attr]
    assert [s["kind"] for s in json.loads((bundle / "keyslots.json").read_text())] == ["admin", "hq"]
    port = free_port()
    procs.append(spawn(mobile_office_cmd("node", "--bundle", str(bundle), "--data-dir", str(tmp_path / "data"), "--http-host", "127.0.0.1",
                                         "--http-port", str(port), "--https", "off", "--broker", f"mqtt://127.0.0.1:{free_port()}"),
                       tmp_path / "node.log"))
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 60, what="the node")
    wait_until(lambda: [s["kind"] for s in json.loads((bundle / "keyslots.json").read_text())] == ["hq"], 30, what="the card's slots gone")
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())

    def post(path: str, body: dict[str, str]) -> tuple[int, dict[str, object]]:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with opener.open(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, body = post("/api/v1/login", {"username": "olha", "password": password})
    assert status == 200 and body["password_change_required"] is True
    status, body = post("/api/v1/applicants/search", {"rnokpp": "1759013776"})
    assert status == 403 and body["error"]["code"] == "password_change_required"  # type: ignore[index]
    assert post("/api/v1/password", {"old_password": password, "new_password": "Ольга-обрала-свій-1"})[0] == 200
    assert post("/api/v1/applicants/search", {"rnokpp": "1759013776"})[0] == 200
