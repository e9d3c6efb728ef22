"""A real node app on a real HTTP server (aiohttp's TestServer on a local port), with an injected clock.

The helpers below speak plain HTTP to it; ``raw_get`` writes the request line
byte for byte so path-traversal strings reach the server unnormalised.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from edge.app import create_app
from edge.config import NodeConfig
from mobile_office import nodecli
from provisioning.keys import AdminAccount, HQKeys, NodeBundle, add_node
from sync.clock import ManualClock
from tests.conftest import ADMIN_PASSWORD, free_port

CASE_PASSWORD = "Другий-пароль-2"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def bundle(hq_keys: HQKeys, tmp_path: Path) -> NodeBundle:
    return add_node(hq_keys, "van-01", tmp_path / "bundle",
                    [AdminAccount("admin", ADMIN_PASSWORD, "van_admin"), AdminAccount("olena", CASE_PASSWORD, "case_admin")])


def config(bundle: NodeBundle, data_dir: Path, clock: ManualClock) -> NodeConfig:
    """Built the way production builds it (mobile_office/nodecli.py); no broker reachable, no GPS, the test's clock."""
    cfg = nodecli.node_config(bundle.directory, None, {"data_dir": str(data_dir), "broker": f"mqtt://127.0.0.1:{free_port()}", "https": "off",
                                                              "trust_kernel_clock": "assume"})
    cfg.gpsd = None
    cfg.clock = clock
    return cfg


@dataclass
class Node:
    app: web.Application
    client: TestClient
    clock: ManualClock

    @property
    def origin(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    def browser(self) -> aiohttp.ClientSession:
        """Another browser: its own cookie jar, same server (use with ``async with``)."""
        return aiohttp.ClientSession(base_url=self.origin, cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def raw_get(self, target: str, cookie: str = "") -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(self.client.host, self.client.port)
        head = f"GET {target} HTTP/1.1\r\nHost: {self.client.host}:{self.client.port}\r\nConnection: close\r\n"
        if cookie:
            head += f"Cookie: {cookie}\r\n"
        writer.write((head + "\r\n").encode("latin-1"))
        await writer.drain()
        data = await reader.read()
        writer.close()
        status_line, _, rest = data.partition(b"\r\n")
        return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.fixture
async def node(bundle: NodeBundle, tmp_path: Path) -> AsyncIterator[Node]:
    clock = ManualClock()
    app = create_app(config(bundle, tmp_path / "node", clock))
    async with TestClient(TestServer(app)) as client:
        yield Node(app, client, clock)


async def csrf_of(client: Any, path: str) -> str:
    r = await client.get(path)
    assert r.status == 200, (path, r.status)
    m = CSRF_RE.search(await r.text())
    assert m, f"no csrf field on {path}"
    return m.group(1)


async def form_login(client: Any, username: str = "admin", password: str = ADMIN_PASSWORD) -> Any:
    token = await csrf_of(client, "/login")
    return await client.post("/login", data={"csrf": token, "username": username, "password": password}, allow_redirects=False)


SAMPLE_VALUES = ("0" * 32, "issue", "start", "x", "1")


def route_paths(app: web.Application, methods: set[str]) -> list[tuple[str, str, bool]]:
    """Every route of the app for these methods as (method, concrete path, has path variables).

    Taken from the router, so a route added later is covered without touching the tests.
    """
    out = []
    for route in app.router.routes():
        if route.method not in methods:
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        if "path" in info:
            out.append((route.method, str(info["path"]), False))
        elif "formatter" in info:
            formatter, pattern = str(info["formatter"]), info["pattern"]
            names = re.findall(r"\{(\w+)\}", formatter)
            for combo in itertools.product(SAMPLE_VALUES, repeat=len(names)):
                path = formatter.format(**dict(zip(names, combo, strict=True)))
                if pattern.fullmatch(path):
                    out.append((route.method, path, True))
                    break
            else:
                raise AssertionError(f"no sample value fits {formatter}; extend SAMPLE_VALUES")
    return out


def dynamic_routes(app: web.Application, methods: set[str]) -> list[tuple[str, str, list[str]]]:
    """(method, formatter, variable names) of every route with path variables."""
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        if route.method in methods and "formatter" in info:
            out.append((route.method, str(info["formatter"]), re.findall(r"\{(\w+)\}", str(info["formatter"]))))
    return out
