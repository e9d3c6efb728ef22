"""A local SMS gateway for the demo and the tests: the same HTTP API HQ's provider adapter speaks.

``POST /send`` with JSON ``{"id", "to", "text"}``, an ``Idempotency-Key``
header and, if the gateway has a token, ``Authorization: Bearer ...``.  Each
accepted message is appended to a JSON-lines file (fsynced before the
answer); a key already accepted is answered 200 ``duplicate`` and not
recorded again, also after a restart (the file is read back at start).
It can be told to fail: ``fail`` answers the next N requests with 503,
``delay`` records a message and then waits before answering (HQ may be
killed in that window).  It stands for the provider, so the file holds
phone numbers; it belongs to no HQ data directory.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from aiohttp import web


class SmsGateway:
    def __init__(self, out: Path, token: str | None = None, fail: int = 0, delay: float = 0.0) -> None:
        self.out = out
        self.token = token
        self.fail = fail
        self.delay = delay
        self.seen: set[str] = set()
        self.requests = 0
        if out.exists():
            for line in out.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    self.seen.add(str(json.loads(line)["key"]))

    def _record(self, doc: dict[str, Any]) -> None:
        fd = os.open(self.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(doc, ensure_ascii=False) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    async def send(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.fail > 0:
            self.fail -= 1
            return web.json_response({"error": "temporarily unavailable"}, status=503)
        try:
            body = await request.json()
            to, text = str(body["to"]), str(body["text"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected JSON {id, to, text}"}, status=400)
        key = request.headers.get("Idempotency-Key") or str(body.get("id") or "")
        if not key:
            return web.json_response({"error": "Idempotency-Key required"}, status=400)
        if key in self.seen:
            return web.json_response({"status": "duplicate", "key": key})
        self.seen.add(key)
        await asyncio.get_running_loop().run_in_executor(None, self._record, {"key": key, "to": to, "text": text})
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response({"status": "accepted", "key": key})

    async def control(self, request: web.Request) -> web.Response:
        """Tell a running gateway to fail the next N requests or to delay its answers."""
        body = await request.json()
        self.fail = int(body.get("fail", self.fail))
        self.delay = float(body.get("delay", self.delay))
        return web.json_response({"fail": self.fail, "delay": self.delay, "accepted": len(self.seen), "requests": self.requests})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/send", self.send)
        app.router.add_post("/control", self.control)
        return app


async def start(gw: SmsGateway, host: str, port: int) -> web.AppRunner:
    """Listening when this returns; ``await runner.cleanup()`` stops it."""
    runner = web.AppRunner(gw.app())
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def serve(gw: SmsGateway, host: str, port: int, stop: asyncio.Event) -> None:
    runner = await start(gw, host, port)
    print(f"SMS gateway on http://{host}:{port}/send; messages recorded in {gw.out}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
