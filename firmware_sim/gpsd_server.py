"""A tiny gpsd-protocol server (JSON over TCP) for machines without gpsd.

It answers what a gpsd client sends (?WATCH, ?POLL, ?DEVICES, ?VERSION) with
the position of a simulated van.  Where gpsd is installed, the tests feed
real gpsd with NMEA instead; this server exists so the demo runs anywhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

from .route import SimPosition

log = logging.getLogger(__name__)

DEVICE = "/dev/ttySIM0"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class GpsdProtocolServer:
    def __init__(self, position: Callable[[], SimPosition | None], host: str = "127.0.0.1", port: int = 0) -> None:
        self.position = position
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    def tpv(self) -> dict[str, object]:
        pos = self.position()
        now = time.time()
        if pos is None:
            return {"class": "TPV", "device": DEVICE, "mode": 1}
        return {
            "class": "TPV", "device": DEVICE, "mode": 3, "time": _iso(now),
            "lat": round(pos.lat, 7), "lon": round(pos.lon, 7), "alt": 110.0,
            "speed": round(pos.speed, 2), "track": round(pos.track, 1),
            "epx": 4.0, "epy": 4.0, "epv": 8.0, "climb": 0.0,
        }

    def devices(self) -> dict[str, object]:
        return {"class": "DEVICES", "devices": [{"class": "DEVICE", "path": DEVICE, "driver": "NMEA0183", "activated": _iso(time.time())}]}

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[task] = writer
        def send(obj: dict[str, object]) -> None:
            writer.write((json.dumps(obj) + "\n").encode())

        send({"class": "VERSION", "release": "3.25-sim", "rev": "sim", "proto_major": 3, "proto_minor": 15})
        try:
            while line := await reader.readline():
                cmd = line.decode(errors="replace").strip()
                if cmd.startswith("?WATCH"):
                    send(self.devices())
                    send({"class": "WATCH", "enable": True, "json": False})
                elif cmd.startswith("?POLL"):
                    tpv = self.tpv()
                    send({"class": "POLL", "time": _iso(time.time()), "active": 1, "tpv": [tpv], "sky": [{"class": "SKY", "device": DEVICE, "satellites": []}]})
                elif cmd.startswith("?DEVICES"):
                    send(self.devices())
                elif cmd.startswith("?VERSION"):
                    send({"class": "VERSION", "release": "3.25-sim", "rev": "sim", "proto_major": 3, "proto_minor": 15})
                else:
                    send({"class": "ERROR", "message": f"Unrecognized request '{cmd[:40]}'"})
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.pop(task, None)
            writer.close()

    async def __aenter__(self) -> GpsdProtocolServer:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            # End client sessions by EOF, not cancellation, so shutdown stays quiet.
            tasks = list(self._clients)
            for writer in self._clients.values():
                writer.transport.abort()
            for task in tasks:
                try:
                    await asyncio.wait_for(asyncio.shield(task), 2)
                except (TimeoutError, ConnectionError):
                    task.cancel()
            await self._server.wait_closed()
