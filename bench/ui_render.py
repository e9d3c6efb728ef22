"""Intake-flow pages with 10 tablets at once: the real node app vs a bare aiohttp handler.

Each server runs in its own process (as on the van); 10 concurrent clients,
each with its own login session, walk the intake flow's pages (queue, new
application form, applicant search, a receipt with its QR codes) for a fixed
number of rounds.  The baseline serves a fixed HTML page of the same size
from a bare aiohttp handler on the same machine, to the same clients.
Printed: ms per page (mean, p95) for both and the ratio node / bare.
Aim (issue 6): a page well under 100 ms at the node with 10 tablets.

    .venv/bin/python bench/ui_render.py [ROUNDS]      (the test command runs it with ROUNDS=1)
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import re
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

CLIENTS = 10
PASSWORD = "bench-password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_node(tmp: str, port: int) -> None:
    from edge.app import create_app
    from mobile_office.nodecli import node_config
    from provisioning.keys import AdminAccount, add_node, init_hq

    hq = init_hq(Path(tmp) / "hq")
    bundle = add_node(hq, "van-bench", Path(tmp) / "bundle", [AdminAccount(f"admin{i}", PASSWORD, "van_admin") for i in range(CLIENTS)])
    # Built as production builds it (the settings registry); no broker: records wait in the outbox, as offline in a field.
    cfg = node_config(bundle.directory, None, {"data_dir": str(Path(tmp) / "node"), "broker": f"mqtt://127.0.0.1:{free_port()}", "https": "off"})
    cfg.gpsd = None
    web.run_app(create_app(cfg), host="127.0.0.1", port=port, print=None, access_log=None)


def run_bare(port: int, body: str) -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def wait_up(base: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(600):
            try:
                async with s.get(base + "/healthz") as r:
                    if r.status in (200, 404):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{base} did not start")


async def prepare_node(base: str) -> tuple[list[aiohttp.ClientSession], list[str]]:
    """Log every tablet in and save one application, whose receipt is part of the walk."""
    sessions = []
    for i in range(CLIENTS):
        s = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # cookies for 127.0.0.1
        # The login form carries a pre-session CSRF token (edge/hardening.py), as a tablet's browser would send it.
        async with s.get(base + "/login") as r:
            token = re.search(r'name="csrf" value="([^"]+)"', await r.text())
        assert token, "the login page has no CSRF token"
        async with s.post(base + "/login", data={"username": f"admin{i}", "password": PASSWORD, "csrf": token.group(1)}) as r:
            assert r.status == 200, r.status
        sessions.append(s)
    async with sessions[0].get(base + "/applications/new") as r:
        csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
    assert csrf
    data = {"csrf": csrf.group(1), "surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776", "service_code": "RES-01",
            "consent": "on"}
    async with sessions[0].post(base + "/applications", data=data, allow_redirects=False) as r:
        receipt = r.headers["Location"].split("?")[0]
    return sessions, ["/", "/applications/new", "/applicants", receipt]


async def walk(base: str, sessions: list[aiohttp.ClientSession], paths: list[str], rounds: int,
               per_path: dict[str, list[float]] | None = None) -> tuple[list[float], float]:
    times: list[float] = []

    async def tablet(s: aiohttp.ClientSession) -> None:
        for _ in range(rounds):
            for p in paths:
                t0 = time.perf_counter()
                async with s.get(base + p) as r:
                    await r.read()
                    assert r.status == 200, (p, r.status)
                times.append(time.perf_counter() - t0)
                if per_path is not None:
                    per_path.setdefault(p if not p.endswith("/receipt") else "receipt", []).append(times[-1])

    t0 = time.perf_counter()
    await asyncio.gather(*(tablet(s) for s in sessions))
    return times, time.perf_counter() - t0


def summary(times: list[float]) -> tuple[float, float]:
    ms = sorted(t * 1000 for t in times)
    return statistics.fmean(ms), ms[int(len(ms) * 0.95) - 1]


async def main(rounds: int) -> None:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        node_port, bare_port = free_port(), free_port()
        node = ctx.Process(target=run_node, args=(tmp, node_port), daemon=True)
        node.start()
        try:
            base = f"http://127.0.0.1:{node_port}"
            await wait_up(base)
            sessions, paths = await prepare_node(base)
            async with sessions[0].get(base + paths[1]) as r:
                size = len(await r.read())
            await walk(base, sessions, paths, 1)  # warm up templates and caches
            per_path: dict[str, list[float]] = {}
            node_times, node_wall = await walk(base, sessions, paths, rounds, per_path)
            for s in sessions:
                await s.close()
        finally:
            node.terminate()
            node.join()
        bare = ctx.Process(target=run_bare, args=(bare_port, "<!doctype html>" + "x" * size), daemon=True)
        bare.start()
        try:
            bbase = f"http://127.0.0.1:{bare_port}"
            await wait_up(bbase)
            bsessions = [aiohttp.ClientSession() for _ in range(CLIENTS)]
            await walk(bbase, bsessions, paths, 1)
            bare_times, bare_wall = await walk(bbase, bsessions, paths, rounds)
            for s in bsessions:
                await s.close()
        finally:
            bare.terminate()
            bare.join()
    n_mean, n_p95 = summary(node_times)
    b_mean, b_p95 = summary(bare_times)
    pages = len(node_times)
    print(f"{CLIENTS} concurrent tablets, {pages} pages each side (queue, new application, applicant search, receipt)")
    print(f"node app : {n_mean:6.1f} ms/page mean, {n_p95:6.1f} ms p95, {pages / node_wall:7.1f} pages/s")
    print(f"bare     : {b_mean:6.1f} ms/page mean, {b_p95:6.1f} ms p95, {pages / bare_wall:7.1f} pages/s")
    # With every tablet requesting back to back, latency is mostly queueing; wall/pages is the server's cost per page.
    print(f"server time per page (wall / pages): node {node_wall / pages * 1000:.1f} ms, bare {bare_wall / pages * 1000:.2f} ms")
    print("node app per page: " + ", ".join(f"{p} {summary(t)[0]:.1f} ms" for p, t in per_path.items()))
    print(f"ratio node/bare: {n_mean / b_mean:.1f}x mean latency, {n_p95 / b_p95:.1f}x p95 latency (aim <= 3), "
          f"{(pages / bare_wall) / (pages / node_wall):.1f}x throughput cost")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
