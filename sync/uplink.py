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
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from . import outbox
from .clock import DEFAULT_MAX_SKEW, HLC, Clock
from .db import open_db
from .downlink import Downlink, Handler
from .envelope import Envelope, MacKey, decode, encode, van_mac_key, parse_ack_message, topic_catalog, topic_status, topic_up
from .errors import EnvelopeError
from .mqtt import MqttLink, MqttSettings, run_forever

log = logging.getLogger(__name__)

# Past this many full batches waiting on a stream, batches grow this many times (up to max_batch_items).
BACKLOG_FACTOR = 4


@dataclass
class UplinkStatus:
    mqtt_up: bool = False
    last_ack_at: float | None = None
    rejected_downlinks: int = 0
    last_connected_at: float | None = None
    last_status: dict[str, object] = field(default_factory=dict)
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
        trusted_time: Callable[[], bool] = lambda: False,
        latest_position: Callable[[], dict[str, object] | None] = lambda: None,
        heartbeat: float = 60.0,
        max_clock_skew: float = DEFAULT_MAX_SKEW,
        hq_seal_public: X25519PublicKey | None = None,
    ) -> None:
        """``hq_seal_public``: uplinks are MAC-authenticated under the key the van shares with HQ (sync.envelope);
        without it they are signed."""
        self.db_path = db_path
        self.node_id = node_id
        self._key = signing_key
        self._hq_seal_public = hq_seal_public
        self._mac = self._mac_key()
        self._hq_key = hq_key
        self.clock = clock
        self.hlc = HLC(clock, max_skew=max_clock_skew)
        self.instance = ""  # this database's instance id, read when run() opens it
        self.ack_timeout = ack_timeout
        self.max_batch_bytes = max_batch_bytes
        self.max_batch_items = max_batch_items
        self.window_items = window_items
        self.trusted_time = trusted_time
        self.latest_position = latest_position
        self.heartbeat = heartbeat
        self.status = UplinkStatus()
        self.downlink: Downlink | None = None
        # Edge registers downlink callbacks before run(); they are attached to the Downlink then.
        self.handlers: dict[str, Handler] = {}
        self._wake = asyncio.Event()
        self._inflight: dict[str, _InFlight] = {}
        self._db: aiosqlite.Connection | None = None
        self._status_at = 0.0
        # One connection, several coroutines (drain, downlink handler): one writer at a time.
        self._write = asyncio.Lock()
        mqtt.will_topic = topic_status(node_id)
        mqtt.will_payload = json.dumps({"node_id": node_id, "state": "offline"}).encode()
        mqtt.subscriptions = [(f"mo/v1/{node_id}/down/#", 1), (topic_catalog(), 1)]
        self.mqtt = mqtt

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        return self._key

    def use_signing_key(self, key: Ed25519PrivateKey) -> None:
        """Key rotation: envelopes from now on are signed with ``key`` (HQ learnt it from the rotation)."""
        self._key = key
        self._mac = self._mac_key()

    def use_hq_seal_public(self, public: X25519PublicKey) -> None:
        """HQ's sealing key rotated: the shared MAC key follows (HQ keeps the older sealing keys, so both pass meanwhile)."""
        if self._hq_seal_public is not None:
            self._hq_seal_public = public
            self._mac = self._mac_key()

    def _mac_key(self) -> MacKey | None:
        return None if self._hq_seal_public is None else van_mac_key(self.node_id, self._key, self._hq_seal_public)

    def kick(self) -> None:
        """Something new is in the outbox (or an ack moved): drain now."""
        self._wake.set()

    async def run(self) -> None:
        self._db = await open_db(self.db_path)
        # Everything after the open is inside try: a cancel during set-up must still close
        # the connection (an unclosed aiosqlite thread keeps the process from exiting).
        try:
            await outbox.create_schema(self._db)
            self.instance = await outbox.instance_id(self._db)
            self.downlink = Downlink(self._db, self.clock)
            await self.downlink.create_schema()
            self.downlink.on_enqueued.append(self.kick)
            for kind, handler in self.handlers.items():
                self.downlink.register(kind, handler)
            await run_forever(self.mqtt, self._on_message, self._session, self.clock, self._set_link_state)
        finally:
            if self.status.mqtt_up:
                self._set_link_state(False)  # a crash left the session: the status must not say "up" while it restarts
            await self._db.close()

    def _set_link_state(self, up: bool) -> None:
        self.status.mqtt_up = up
        if up:
            self.status.last_connected_at = self.clock.monotonic()
        self._inflight.clear()  # a new session resends whatever is not acked

    async def status_document(self) -> dict[str, object]:
        """Heartbeat: state, latest position, outbox depth per class.  Also the SBD heartbeat's source."""
        assert self._db is not None
        use = await outbox.usage(self._db)
        return {
            "node_id": self.node_id, "state": "online", "ts": self.clock.now(), "trusted_time": self.trusted_time(),
            "pos": self.latest_position(),
            "depth": {k: v["pending"] for k, v in use.items() if v["pending"]},
            "bytes": {k: v["bytes"] for k, v in use.items() if v["bytes"]},
        }

    async def _publish_status(self, link: MqttLink) -> None:
        doc = await self.status_document()
        self.status.last_status = doc
        self._status_at = self.clock.monotonic()
        await link.publish(topic_status(self.node_id), json.dumps(doc, separators=(",", ":")).encode(), retain=True)

    async def _session(self, link: MqttLink) -> None:
        # The latest position collapses into the retained status, which always goes first.
        await self._publish_status(link)
        while link.connected:
            if self.clock.monotonic() - self._status_at >= self.heartbeat:
                await self._publish_status(link)
            sent = await self._drain_once(link)
            if not sent:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.ack_timeout / 2)
                except TimeoutError:
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
            # A large backlog goes in larger batches: per-batch costs (a signature, a COMMIT at HQ, an ack) are paid fewer times.
            big = st.bytes > BACKLOG_FACTOR * self.max_batch_bytes
            rows = await outbox.batch(self._db, stream, after, self.max_batch_items, self.max_batch_bytes * (BACKLOG_FACTOR if big else 1))
            if not rows:
                continue
            env = Envelope(self.node_id, stream, rows[0].seq, tuple(r.payload for r in rows), self.hlc.tick(),
                           trusted_time=self.trusted_time(), instance=self.instance)
            await link.publish(topic_up(self.node_id, stream), encode(env, self._mac or self._key))
            async with self._write:
                await outbox.mark_sent(self._db, stream, rows[0].seq, rows[-1].seq, self.clock.now())
            self._inflight[stream] = _InFlight(rows[-1].seq, now if fl is None else fl.since)
            sent_any = True
        return sent_any

    async def _on_message(self, topic: str, payload: bytes) -> None:
        async with self._write:
            await self._on_message_locked(topic, payload)

    async def _on_message_locked(self, topic: str, payload: bytes) -> None:
        assert self._db is not None and self.downlink is not None
        try:
            env = decode(payload, lambda _node: self._hq_key)
            if not env.downlink:
                raise EnvelopeError("an uplink envelope on a downlink topic")
            if env.stream == "catalog":
                if env.node_id != "all" or not topic.endswith("/all/down/catalog"):
                    raise EnvelopeError("a catalogue is addressed to all nodes")
                self.hlc.observe(env.hlc)
                await self.downlink.apply_catalog(env)
                return
            if env.node_id != self.node_id or (topic != "sbd" and not topic.endswith(f"/down/{env.stream}")):
                raise EnvelopeError("not addressed to this node on this topic")
            if env.stream == "ack":
                if env.instance != self.instance:
                    # numbers of another database of this van (before a re-flash): pruning by them would lose data
                    raise EnvelopeError(f"ack for node instance {env.instance or 'legacy'!r}, this is {self.instance or 'legacy'!r}")
                await self._on_ack(env)
            else:
                self.hlc.observe(env.hlc)
                await self.downlink.apply(env)
        except EnvelopeError as exc:
            self.status.rejected_downlinks += 1
            log.warning("rejected downlink on %s: %s", topic, exc)

    async def handle_sbd_downlink(self, payload: bytes) -> None:
        """An MT message from the satellite: the same signed downlink envelope as on MQTT."""
        await self._on_message("sbd", payload)

    async def sbd_seq(self) -> int:
        assert self._db is not None
        async with self._write:
            return await outbox.allocate_seq(self._db, "status")

    async def _on_ack(self, env: Envelope) -> None:
        assert self._db is not None
        msg = parse_ack_message(env.items)
        self.hlc.observe(env.hlc)
        for stream, seq, reason in msg.quarantined:
            log.warning("HQ quarantined %s/%d: %s", stream, seq, reason)
            await outbox.record_quarantine(self._db, stream, seq, reason, self.clock.now())
        moved = False
        for stream, upto in msg.acks.items():
            if await outbox.apply_ack(self._db, stream, upto, self.clock.now()):
                moved = True
                fl = self._inflight.get(stream)
                if fl is not None:
                    # progress resets the resend timer of what is still in flight
                    fl.since = self.clock.monotonic()
        for stream, from_seq in msg.resend_from.items():
            # HQ saw a gap: forget what we think is in flight and go again from there.
            log.info("HQ asks to resend %s from %d", stream, from_seq)
            self._inflight.pop(stream, None)
        if moved or msg.quarantined:
            self.status.last_ack_at = self.clock.now()
            for listener in self.status.listeners:
                listener()
        self.kick()
