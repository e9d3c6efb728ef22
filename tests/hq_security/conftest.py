"""A real HQ app on a real HTTP server (aiohttp's TestServer on a local port, SQLite file), with an injected clock.

The broker it would ingest from is a closed port: these tests are about HQ's web surface, not the fleet.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hq import users
from hq.app import STORE, create_app
from hq.config import HQConfig
from provisioning.keys import HQKeys
from sync.clock import ManualClock
from tests.conftest import free_port

PASSWORD = "Пароль-штабу-1"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Hq:
    app: web.Application
    client: TestClient
    clock: ManualClock
    data_dir: Path

    @property
    def origin(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    def browser(self) -> aiohttp.ClientSession:
        """Another browser: its own cookie jar, same server (use with ``async with``)."""
        return aiohttp.ClientSession(base_url=self.origin, cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login_csrf(b: aiohttp.ClientSession) -> str:
    m = CSRF_RE.search(await (await b.get("/login")).text())
    assert m, "the login form carries a CSRF token"
    return m.group(1)


async def login(b: aiohttp.ClientSession, user: str = "olena", password: str = PASSWORD) -> aiohttp.ClientResponse:
    return await b.post("/login", data={"csrf": await login_csrf(b), "username": user, "password": password}, allow_redirects=False)


def hq_config(hq_keys: HQKeys, clock: ManualClock, **extra: object) -> HQConfig:
    return HQConfig(data_dir=hq_keys.directory, keys=hq_keys, broker=f"mqtt://127.0.0.1:{free_port()}", clock=clock, **extra)  # type: ignore[arg-type]


@pytest.fixture
async def hq(hq_keys: HQKeys) -> AsyncIterator[Hq]:
    clock = ManualClock()
    app = create_app(hq_config(hq_keys, clock))
    async with TestClient(TestServer(app)) as client:
        await users.add_user(app[STORE].db, "olena", "admin", PASSWORD, clock.now())
        await users.add_user(app[STORE].db, "petro", "viewer", PASSWORD, clock.now())
        yield Hq(app, client, clock, hq_keys.directory)
