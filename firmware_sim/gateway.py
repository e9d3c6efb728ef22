"""The Iridium side of the simulated modem: pushes MO messages to HQ over
DirectIP and accepts MT messages from HQ over DirectIP, as Iridium's
gateway does.  Written independently of hq/directip.py (from the same
published layout) so a mistake on one side shows up in the tests.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class SatelliteGateway:
    hq_host: str = "127.0.0.1"
    hq_port: int = 10800
    mt_host: str = "127.0.0.1"
    mt_port: int = 0  # DirectIP MT listener of this gateway; 0 = any free port
    mt_queues: dict[str, deque[bytes]] = field(default_factory=dict)
    delivered: list[tuple[str, int, bytes]] = field(default_factory=list)
    confirmed: int = 0
    cdr: int = 1000
    on_mt_queued: list[Callable[[str], None]] = field(default_factory=list)
    _server: asyncio.AbstractServer | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # -- MO: modem -> HQ ----------------------------------------------------------
    def deliver_mo(self, imei: str, momsn: int, mtmsn: int, payload: bytes) -> None:
        self.cdr += 1
        header = struct.pack(">I15sBHHI", self.cdr, imei.encode(), 0, momsn, mtmsn, int(time.time()))
        body = b"\x01" + struct.pack(">H", len(header)) + header + b"\x02" + struct.pack(">H", len(payload)) + payload
        msg = b"\x01" + struct.pack(">H", len(body)) + body
        self.delivered.append((imei, momsn, payload))
        task = asyncio.ensure_future(self._push(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push(self, msg: bytes, attempts: int = 5) -> None:
        for i in range(attempts):
            try:
                reader, writer = await asyncio.open_connection(self.hq_host, self.hq_port)
                writer.write(msg)
                await writer.drain()
                try:
                    conf = await asyncio.wait_for(reader.read(16), 10)
                    if conf[3:4] == b"\x05" and conf[6:7] == b"\x01":
                        self.confirmed += 1
                finally:
                    writer.close()
                return
            except OSError as exc:
                log.info("DirectIP MO to %s:%d failed (%s), retry %d", self.hq_host, self.hq_port, exc, i + 1)
                await asyncio.sleep(0.5 * (i + 1))

    # -- MT: HQ -> modem ---------------------------------------------------------------
    def take_mt(self, imei: str) -> tuple[bytes | None, int]:
        q = self.mt_queues.get(imei)
        if not q:
            return None, 0
        msg = q.popleft()
        return msg, len(q)

    def queue_mt(self, imei: str, payload: bytes) -> int:
        q = self.mt_queues.setdefault(imei, deque())
        q.append(payload)
        for cb in self.on_mt_queued:
            cb(imei)
        return len(q)

    async def _mt_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readexactly(3)
            body = await reader.readexactly(int.from_bytes(head[1:3], "big"))
            pos, ies = 0, {}
            while pos + 3 <= len(body):
                n = int.from_bytes(body[pos + 1 : pos + 3], "big")
                ies[body[pos]] = body[pos + 3 : pos + 3 + n]
                pos += 3 + n
            client_id, imei_b, _flags = struct.unpack(">I15sH", ies[0x41])
            payload = ies.get(0x42, b"")
            imei = imei_b.decode()
            if not payload:
                status = 0
            elif len(payload) > 270:
                status = -4  # payload size exceeded
            else:
                status = self.queue_mt(imei, payload)
            self.cdr += 1
            conf = struct.pack(">I15sIh", client_id, imei_b, self.cdr, status)
            out = b"\x44" + struct.pack(">H", len(conf)) + conf
            writer.write(b"\x01" + struct.pack(">H", len(out)) + out)
            await writer.drain()
        except (asyncio.IncompleteReadError, KeyError, struct.error) as exc:
            log.warning("bad DirectIP MT message: %r", exc)
        finally:
            writer.close()

    async def __aenter__(self) -> SatelliteGateway:
        self._server = await asyncio.start_server(self._mt_client, self.mt_host, self.mt_port)
        self.mt_port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._tasks:
            # give deliveries in flight a moment, then stop retrying to an absent HQ
            await asyncio.wait(self._tasks, timeout=1)
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
