"""Node side of the link: drain the outbox to HQ, prune on HQ's signed acks.

Nothing leaves the outbox on a PUBACK.  A batch counts as delivered only
when an ack envelope signed by HQ says HQ has committed every sequence
number up to N on that stream.  A batch with no ack progress within
``ack_timeout`` is sent again from the last acked number; HQ stores by
(node, stream, seq) so a resend is harmless.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import outbox
from .clock import HLC, Clock
from .db import open_db
from .envelope import Envelope, decode, encode, parse_ack_items, topic_down, topic_status, topic_up
from .errors import EnvelopeError
from .mqtt import MqttLink, MqttSettings, run_forever

log = logging.getLogger(__name__)


@dataclass
class UplinkStatus:
    mqtt_up: bool = False
    last_ack_at: float | None = None
    rejected_downlinks: int = 0
    listeners: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class _InFlight:
    upto: int
    since: float


class Uplink:
    def __init__(
        self,
        db_path: Path,
        node_id: str,
        signing_key: Ed25519PrivateKey,
        hq_key: Ed25519PublicKey,
        mqtt: MqttSettings,
        clock: Clock,
        ack_timeout: float = 10.0,
        max_batch_bytes: int = 64 * 1024,
        max_batch_items: int = 500,
        window_items: int = 5000,
    ) -> None:
        self.db_path = db_path
        self.node_id = node_id
        self._key = signing_key
        self._hq_key = hq_key
        self.clock = clock
        self.hlc = HLC(clock)
        self.ack_timeout = ack_timeout
        self.max_batch_bytes = max_batch_bytes
        self.max_batch_items = max_batch_items
        self.window_items = window_items
        self.status = UplinkStatus()
        self._wake = asyncio.Event()
        self._inflight: dict[str, _InFlight] = {}
        self._db: aiosqlite.Connection | None = None
        mqtt.will_topic = topic_status(node_id)
        mqtt.will_payload = json.dumps({"node_id": node_id, "state": "offline"}).encode()
        mqtt.subscriptions = [(f"mo/v1/{node_id}/down/#", 1)]
        self.mqtt = mqtt

    def kick(self) -> None:
        """Something new is in the outbox (or an ack moved): drain now."""
        self._wake.set()

    async def run(self) -> None:
        self._db = await open_db(self.db_path)
        await outbox.create_schema(self._db)
        try:
            await run_forever(self.mqtt, self._on_message, self._session, self.clock, self._set_link_state)
        finally:
            await self._db.close()

    def _set_link_state(self, up: bool) -> None:
        self.status.mqtt_up = up
        self._inflight.clear()  # a new session resends whatever is not acked

    async def _session(self, link: MqttLink) -> None:
        await link.publish(
            topic_status(self.node_id),
            json.dumps({"node_id": self.node_id, "state": "online", "ts": self.clock.now()}).encode(),
            retain=True,
        )
        while link.connected:
            sent = await self._drain_once(link)
            if not sent:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.ack_timeout / 2)
                except asyncio.TimeoutError:
                    pass

    async def _drain_once(self, link: MqttLink) -> bool:
        """Send at most one batch per stream in priority order; True if anything went out."""
        assert self._db is not None
        states = await outbox.streams(self._db)
        now = self.clock.monotonic()
        sent_any = False
        for stream in outbox.PRIORITY:
            st = states.get(stream)
            if st is None or st.pending == 0:
                self._inflight.pop(stream, None)
                continue
            fl = self._inflight.get(stream)
            if fl is not None and (fl.upto <= st.acked or now - fl.since > self.ack_timeout):
                if fl.upto > st.acked:
                    log.info("no ack for %s up to %d after %.0fs: sending again from %d", stream, fl.upto, self.ack_timeout, st.acked + 1)
                fl = None
                self._inflight.pop(stream, None)
            after = st.acked if fl is None else fl.upto
            if after - st.acked >= self.window_items:
                continue
            rows = await outbox.batch(self._db, stream, after, self.max_batch_items, self.max_batch_bytes)
            if not rows:
                continue
            env = Envelope(self.node_id, stream, rows[0].seq, tuple(r.payload for r in rows), self.hlc.tick())
            await link.publish(topic_up(self.node_id, stream), encode(env, self._key))
            self._inflight[stream] = _InFlight(rows[-1].seq, now if fl is None else fl.since)
            sent_any = True
        return sent_any

    async def _on_message(self, topic: str, payload: bytes) -> None:
        assert self._db is not None
        if not topic.endswith("/down/ack"):
            log.debug("ignoring downlink on %s (not handled yet)", topic)
            return
        try:
            env = decode(payload, lambda _node: self._hq_key)
            if not env.downlink or env.stream != "ack" or env.node_id != self.node_id:
                raise EnvelopeError("not an ack for this node")
            acks = parse_ack_items(env.items)
        except EnvelopeError as exc:
            self.status.rejected_downlinks += 1
            log.warning("rejected downlink on %s: %s", topic, exc)
            return
        self.hlc.observe(env.hlc)
        moved = False
        for stream, upto in acks.items():
            if await outbox.apply_ack(self._db, stream, upto, self.clock.now()):
                moved = True
                fl = self._inflight.get(stream)
                if fl is not None:
                    # progress resets the resend timer of what is still in flight
                    fl.since = self.clock.monotonic()
        if moved:
            self.status.last_ack_at = self.clock.now()
            for listener in self.status.listeners:
                listener()
        self.kick()
