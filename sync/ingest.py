"""HQ side of the link: verify, hand to storage, and only after COMMIT ack.

Several workers may run side by side on one MQTT 5 shared subscription
(``$share/hq/...``): storage is idempotent on (node, stream, seq), so two
workers seeing the same resend cannot make a duplicate.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .clock import HLC, Clock
from .envelope import Envelope, UP_STREAMS, ack_items, decode, encode, topic_down
from .errors import EnvelopeError
from .mqtt import MqttLink, MqttSettings, run_forever

log = logging.getLogger(__name__)


class IngestSink(Protocol):
    """Storage behind ingest (hq.store implements it)."""

    async def store_envelope(self, env: Envelope, via: str) -> int:
        """Commit the items idempotently; return the contiguous seq HQ now holds."""
        ...

    async def record_rejection(self, claimed_node: str, channel: str, reason: str) -> None: ...

    async def record_status(self, node_id: str, state: str, at: float) -> None: ...


def up_topic_parts(topic: str) -> tuple[str, str] | None:
    parts = topic.split("/")
    if len(parts) == 5 and parts[0] == "mo" and parts[1] == "v1" and parts[3] == "up":
        return parts[2], parts[4]
    return None


class Ingest:
    """Transport-independent: MQTT and the satellite gateway both call ``handle``."""

    def __init__(
        self,
        sink: IngestSink,
        key_for: Callable[[str], Ed25519PublicKey | None],
        hq_key: Ed25519PrivateKey,
        clock: Clock,
    ) -> None:
        self.sink = sink
        self.key_for = key_for
        self.hq_key = hq_key
        self.clock = clock
        self.hlc = HLC(clock)
        self.rejected = 0
        self._ack_seq = 0

    async def handle(self, payload: bytes, channel: str, topic_node: str | None = None, topic_stream: str | None = None) -> bytes | None:
        """Verify and store one envelope.  Returns the signed ack to send back, or None."""
        try:
            env = decode(payload, self.key_for)
            if env.downlink or env.stream not in UP_STREAMS:
                raise EnvelopeError("an uplink must carry an up stream")
            if topic_node is not None and topic_node != env.node_id:
                raise EnvelopeError(f"topic names node {topic_node!r} but the signature is {env.node_id!r}")
            if topic_stream is not None and topic_stream != env.stream:
                raise EnvelopeError("topic stream does not match the envelope")
        except EnvelopeError as exc:
            self.rejected += 1
            claimed = topic_node or "?"
            log.warning("rejected message via %s (claimed node %s): %s", channel, claimed, exc)
            await self.sink.record_rejection(claimed, channel, str(exc))
            return None
        self.hlc.observe(env.hlc)
        contiguous = await self.sink.store_envelope(env, channel)
        return self.make_ack(env.node_id, {env.stream: contiguous}) if contiguous > 0 else None

    def make_ack(self, node_id: str, acks: dict[str, int]) -> bytes:
        self._ack_seq += 1
        env = Envelope(node_id, "ack", self._ack_seq, ack_items(acks), self.hlc.tick(), downlink=True)
        return encode(env, self.hq_key)


class MqttIngestWorker:
    """One HQ ingest worker on the broker."""

    def __init__(self, ingest: Ingest, mqtt: MqttSettings, clock: Clock, shared: bool = True) -> None:
        self.ingest = ingest
        self.clock = clock
        up = "mo/v1/+/up/#"
        mqtt.subscriptions = [(f"$share/hq/{up}" if shared else up, 1), ("mo/v1/+/status", 1)]
        self.mqtt = mqtt
        self.connected = False
        # One message at a time per worker: storage commits are serial anyway.
        self._lock = asyncio.Lock()
        self._link: MqttLink | None = None

    async def run(self) -> None:
        await run_forever(self.mqtt, self._on_message, self._session, self.clock, self._state)

    def _state(self, up: bool) -> None:
        self.connected = up

    async def _session(self, link: MqttLink) -> None:
        self._link = link

    async def _on_message(self, topic: str, payload: bytes) -> None:
        link = self._link
        if topic.endswith("/status"):
            try:
                doc = json.loads(payload)
                node = topic.split("/")[2]
                await self.ingest.sink.record_status(node, str(doc.get("state", "?")), self.clock.now())
            except (ValueError, AttributeError):
                log.warning("unreadable status on %s", topic)
            return
        parts = up_topic_parts(topic)
        if parts is None:
            return
        async with self._lock:
            ack = await self.ingest.handle(payload, "mqtt", parts[0], parts[1])
        if ack is not None and link is not None and link.connected:
            await link.publish(topic_down(parts[0], "ack"), ack)
