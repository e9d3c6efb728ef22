"""The one way HQ sends to the vans: sequence, signed envelope, clock, HLC, publish.

Every HQ page and loop that sends something down (commands, assignments,
trip plans, pre-registrations, status edits, the catalogue) calls
``DownlinkSender``; none builds an envelope or picks a topic itself.  The
HLC is ticked here and only here, so bounds on it live in one place.

"Not connected" is one error, ``NotConnected``: an ``HttpProblem`` (503
``broker_down``), so the error middleware renders it for pages and APIs
alike, and loops that resend later catch just this type.
"""

from __future__ import annotations

import logging
from typing import Any

from provisioning.keys import HQKeys
from sync.clock import HLC, Clock
from sync.downlink import build, command
from sync.envelope import DOWN_KINDS, topic_catalog, topic_down
from sync.errors import LinkDown, PublishTimeout
from sync.ingest import MqttIngestWorker

from .errors import HQHttpError
from .store import HQStore

log = logging.getLogger(__name__)

# A command the van has not applied within a day is stale: the van answers "expired".
COMMAND_TTL = 24 * 3600.0


class NotConnected(HQHttpError):
    """HQ has no broker connection now: nothing was published."""

    status = 503
    code = "broker_down"

    def __init__(self, what: str = "повідомлення не надіслано") -> None:
        super().__init__(f"Немає зв'язку з брокером: {what}")


class DownlinkSender:
    def __init__(self, store: HQStore, keys: HQKeys, worker: MqttIngestWorker, hlc: HLC, clock: Clock) -> None:
        self.store = store
        self.keys = keys
        self.worker = worker
        self.hlc = hlc
        self.clock = clock
        self.sent = 0

    @property
    def connected(self) -> bool:
        return self.worker.connected

    def stamp(self) -> int:
        """A tick of HQ's HLC for something that will travel down (a status edit's last-writer-wins time)."""
        return self.hlc.tick()

    async def send(self, node_id: str, stream: str, docs: list[dict[str, Any]], what: str = "повідомлення не надіслано") -> int:
        """Sign ``docs`` as the next envelope of ``stream`` for ``node_id`` and publish it; returns its seq.

        Raises NotConnected (with ``what`` in its message) when nothing went out."""
        if stream not in DOWN_KINDS or stream == "ack":  # acks are the ingest's own, in its transaction
            raise ValueError(f"not a downlink kind HQ sends: {stream!r}")
        if not self.connected:
            raise NotConnected(what)  # no sequence number burnt for nothing
        seq = await self.store.next_down_seq(node_id, stream)
        payload = build(self.keys.sign, node_id, stream, seq, docs, self.hlc.tick())
        await self._publish(topic_down(node_id, stream), payload, what)
        return seq

    async def command(self, node_id: str, cmd_id: str, kind: str, **args: Any) -> int:
        """One console command, valid for COMMAND_TTL from now (HQ's injected clock)."""
        doc = command(cmd_id, kind, self.clock.now() + COMMAND_TTL, **args)
        return await self.send(node_id, "cmd", [doc], "команду не надіслано")

    async def catalog(self, version: int, doc: dict[str, Any]) -> None:
        """The catalogue to every van, retained; its version is the envelope's seq."""
        payload = build(self.keys.sign, "all", "catalog", version, [doc], self.hlc.tick())
        await self._publish(topic_catalog(), payload, "каталог не опубліковано", retain=True)

    async def _publish(self, topic: str, payload: bytes, what: str, retain: bool = False) -> None:
        try:
            sent = await self.worker.publish_down(topic, payload, retain=retain)
        except (LinkDown, PublishTimeout) as exc:  # the link dropped under us: same answer as not connected
            log.warning("downlink to %s not published: %s", topic, exc)
            raise NotConnected(what) from exc
        if not sent:
            raise NotConnected(what)
        self.sent += 1
