"""HQ side of the link: verify, hand to storage, and only after COMMIT ack.

Several workers may run side by side on one MQTT 5 shared subscription
(``$share/hq/...``): storage is idempotent on (node, stream, seq), so two
workers seeing the same resend cannot make a duplicate.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from . import sbdbeat
from .clock import DEFAULT_MAX_SKEW, HLC, Clock
from .envelope import Envelope, UP_STREAMS, Verifier, ack_items, decode, encode, quarantine_item, resend_item, topic_down
from .errors import EnvelopeError
from .linkmgr import pack_heartbeat
from .mqtt import MqttLink, MqttSettings, run_forever

log = logging.getLogger(__name__)


@dataclass
class StoreResult:
    """What one committed envelope changed at HQ."""

    contiguous: int  # HQ holds every seq <= this on the stream
    new: int = 0  # items stored for the first time
    duplicates: int = 0  # items HQ already had (resends, replays): harmless, counted
    quarantined: list[tuple[int, str]] = field(default_factory=list)  # (seq, reason), stored but not applied
    held_back: bool = False  # the ack stops below a conflicting item: not a gap, so no resend request


class IngestSink(Protocol):
    """Storage behind ingest (hq.store implements it)."""

    async def store_envelope(self, env: Envelope, via: str, hold: str | None = None) -> StoreResult:
        """Commit the items idempotently; report the contiguous seq HQ now holds.

        ``hold``: store every new item but quarantine it with this reason instead of applying it.
        """
        ...

    async def record_rejection(self, claimed_node: str, channel: str, reason: str) -> None: ...

    async def instance_by_tag(self, node_id: str, tag: bytes, tag_of: Callable[[str], bytes]) -> str | None:
        """The node's known instance whose ``tag_of`` is ``tag`` (compact satellite heartbeats name it by tag only)."""
        ...

    async def record_status(self, node_id: str, state: str, at: float, depth: dict[str, Any] | None = None) -> None: ...


def _check_uplink(env: Envelope, topic_node: str | None, topic_stream: str | None) -> None:
    """An uplink's envelope must be an up stream, from the van and on the stream its topic names."""
    if env.downlink or env.stream not in UP_STREAMS:
        raise EnvelopeError("an uplink must carry an up stream")
    if topic_node is not None and topic_node != env.node_id:
        raise EnvelopeError(f"topic names node {topic_node!r} but the signature is {env.node_id!r}")
    if topic_stream is not None and topic_stream != env.stream:
        raise EnvelopeError("topic stream does not match the envelope")


# A message as verification left it: its envelope, why it was refused, or None for a compact satellite heartbeat.
Checked = Envelope | EnvelopeError | None

# Groups at least this large are verified off the event loop (a thread hop costs about what two verifications do).
OFFLOAD_MIN = 4


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
        key_for: Callable[[str], Verifier | None],
        hq_key: Ed25519PrivateKey,
        clock: Clock,
        heartbeat_keys: Callable[[bytes], Iterable[tuple[str, bytes]]] | None = None,
        max_clock_skew: float = DEFAULT_MAX_SKEW,
    ) -> None:
        self.sink = sink
        self.key_for = key_for
        # node tag -> (node id, MAC key) candidates for the compact satellite heartbeat (sync.sbdbeat)
        self.heartbeat_keys = heartbeat_keys
        self.hq_key = hq_key
        self.clock = clock
        self.hlc = HLC(clock, max_skew=max_clock_skew)
        self.rejected = 0
        self.duplicates = 0
        self.stored = 0
        self._ack_seq = 0
        self._verifier: ThreadPoolExecutor | None = None  # made on the first large group

    async def handle(self, payload: bytes, channel: str = "mqtt", topic_node: str | None = None, topic_stream: str | None = None) -> bytes | None:
        """Verify and store one envelope.  Returns the signed ack to send back, or None.

        The satellite gateway (DirectIP MO) calls this with ``channel="sbd"``
        and the message body: same verification, same idempotent storage.
        """
        env = await self._verified(payload, channel, topic_node, topic_stream)
        if env is None:
            return None
        hold = self._hold(env)
        res = await self.sink.store_envelope(env, channel, hold)
        acks, extra = self._account(env, res)
        if not acks and not extra:
            return None
        return self.make_ack(env.node_id, acks, extra, env.instance)

    async def check_many(self, messages: Sequence[tuple[bytes, str, str | None, str | None]]) -> list[Checked]:
        """Each message verified (see ``_check_all``); a large lot on a thread of its own (the crypto releases the GIL),
        so the event loop meanwhile takes in messages, stores the previous group and sends its acks."""
        if len(messages) < OFFLOAD_MIN:
            return self._check_all(messages)
        if self._verifier is None:
            self._verifier = ThreadPoolExecutor(1, thread_name_prefix="verify")
        return await asyncio.get_running_loop().run_in_executor(self._verifier, self._check_all, messages)

    async def handle_many(self, messages: Sequence[tuple[bytes, str, str | None, str | None]],
                          checked: Sequence[Checked] | None = None) -> list[bytes | Exception | None]:
        """``handle`` for messages that arrived together (payload, channel, topic node, topic stream), in arrival order.

        Each is verified as by ``handle``; the valid ones are stored in ONE transaction
        (``store_envelopes``: one COMMIT, so one fsync, for the group) and acknowledged
        only after it: one signed ack per van database, cumulative, given in the place of
        that van's last message of the group (None elsewhere).  A message whose storage
        failed gets its exception: not acknowledged, the broker and the van send it again.
        ``checked``: what ``check_many`` already said of these messages (checked ahead, as they arrived).
        """
        out: list[bytes | Exception | None] = [None] * len(messages)
        opened: list[tuple[int, Envelope, str, str | None]] = []
        if checked is None:
            checked = await self.check_many(messages)
        for i, ((payload, channel, topic_node, topic_stream), env_or_error) in enumerate(zip(messages, checked, strict=True)):
            if isinstance(env_or_error, Envelope):
                env: Envelope | None = env_or_error
            elif env_or_error is None:  # a compact satellite heartbeat: opened here, it reads the store
                env = await self._verified(payload, channel, topic_node, topic_stream)
            else:
                await self._reject(env_or_error, channel, topic_node)
                env = None
            if env is not None:
                opened.append((i, env, channel, self._hold(env)))
        if not opened:
            return out
        store_many = getattr(self.sink, "store_envelopes", None)
        if store_many is not None:
            results: list[StoreResult | Exception] = await store_many([(env, channel, hold) for _, env, channel, hold in opened])
        else:  # a sink without group commit: one transaction each, same answers
            results = [await self.sink.store_envelope(env, channel, hold) for _, env, channel, hold in opened]
        # (node, instance) -> acks by stream (the last result of a stream is its newest), extra items, index of its last message
        per_db: dict[tuple[str, str], tuple[dict[str, int], list[bytes], list[int]]] = {}
        for (i, env, _, _), res in zip(opened, results, strict=True):
            if isinstance(res, Exception):
                log.warning("envelope %s/%s from %d not stored (%s): not acknowledged", env.node_id, env.stream, env.first_seq, res)
                out[i] = res
                continue
            acks, extra = self._account(env, res)
            slot = per_db.setdefault((env.node_id, env.instance), ({}, [], [i]))
            slot[0].update(acks)
            slot[1].extend(extra)
            slot[2][0] = i
        for (node_id, instance), (acks, extra, last) in per_db.items():
            if acks or extra:
                out[last[0]] = self.make_ack(node_id, acks, extra, instance)
        return out

    async def _verified(self, payload: bytes, channel: str, topic_node: str | None, topic_stream: str | None) -> Envelope | None:
        """The verified envelope, or None (recorded as a rejection)."""
        try:
            env = await self._open_heartbeat(payload) if sbdbeat.is_compact(payload) else decode(payload, self.key_for)
            _check_uplink(env, topic_node, topic_stream)
        except EnvelopeError as exc:
            await self._reject(exc, channel, topic_node)
            return None
        return env

    def _check_all(self, messages: Sequence[tuple[bytes, str, str | None, str | None]]) -> list[Checked]:
        """Each message verified (thread-safe: no state of ours is touched): its envelope, its error,
        or None for a compact satellite heartbeat (``_verified`` opens those on the event loop)."""
        out: list[Checked] = []
        for payload, _, topic_node, topic_stream in messages:
            if sbdbeat.is_compact(payload):
                out.append(None)
                continue
            try:
                env = decode(payload, self.key_for)
                _check_uplink(env, topic_node, topic_stream)
            except EnvelopeError as exc:
                out.append(exc)
            else:
                out.append(env)
        return out

    async def _reject(self, exc: EnvelopeError, channel: str, topic_node: str | None) -> None:
        self.rejected += 1
        claimed = topic_node or "?"
        log.warning("rejected message via %s (claimed node %s): %s", channel, claimed, exc)
        await self.sink.record_rejection(claimed, channel, str(exc))

    def _hold(self, env: Envelope) -> str | None:
        # An HLC HQ cannot merge (out of range, or too far ahead) is never observed: HQ's own
        # clock, and so every ack it stamps, stays encodable.  The items are kept, quarantined.
        hold = self.hlc.check(env.hlc)
        if hold is None:
            self.hlc.observe(env.hlc)
        else:
            log.warning("envelope %s/%s from %d quarantined: %s", env.node_id, env.stream, env.first_seq, hold)
        return hold

    def _account(self, env: Envelope, res: StoreResult) -> tuple[dict[str, int], list[bytes]]:
        """Count what was stored; the ack's cumulative number and its extra items (quarantine, resend) for this envelope."""
        self.stored += res.new
        if res.duplicates:
            self.duplicates += res.duplicates
            log.info("%d items from %s/%s already held (resend or replay)", res.duplicates, env.node_id, env.stream)
        extra = [quarantine_item(env.stream, seq, reason) for seq, reason in res.quarantined]
        if env.first_seq > res.contiguous + 1 and not res.held_back:
            # A gap before this batch: ask for it now instead of waiting for the node's timeout.
            extra.append(resend_item(env.stream, res.contiguous + 1))
        return ({env.stream: res.contiguous} if res.contiguous > 0 else {}), extra

    async def _open_heartbeat(self, payload: bytes) -> Envelope:
        """A compact satellite heartbeat becomes the envelope it stands for: one heartbeat item on ``status``."""
        if self.heartbeat_keys is None:
            raise EnvelopeError("compact heartbeat, but this HQ has no heartbeat keys")
        node_id, seq, hb, itag = sbdbeat.open_heartbeat(payload, self.heartbeat_keys)
        instance = await self.sink.instance_by_tag(node_id, itag, sbdbeat.instance_tag)
        return Envelope(node_id, "status", seq, (pack_heartbeat(hb),), int(hb.time * 1000) << 16, trusted_time=hb.trusted_time,
                        instance=instance if instance is not None else sbdbeat.provisional_instance(itag))

    def make_ack(self, node_id: str, acks: dict[str, int], extra: list[bytes] | None = None, instance: str = "") -> bytes:
        """``instance``: the node database the ack speaks of (its numbers mean nothing to another)."""
        self._ack_seq += 1
        items = ack_items(acks) + tuple(extra or ())
        env = Envelope(node_id, "ack", self._ack_seq, items, self.hlc.tick(), downlink=True, instance=instance)
        return encode(env, self.hq_key)


class SbdIngest:
    """HQ's entry for Iridium SBD: the DirectIP MO receiver calls ``on_mo`` for each message.

    The payload is an ordinary envelope v1 (heartbeat on the ``status``
    stream); it is verified and stored exactly like MQTT traffic.  The ack is
    not sent back over the satellite (MT bytes cost money and heartbeats are
    not pruned from an outbox), so it is dropped here.
    """

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.received = 0

    async def on_mo(self, imei: str, momsn: int, payload: bytes, session_time: float) -> None:
        self.received += 1
        log.info("SBD MO %d from modem ...%s (%d bytes)", momsn, imei[-4:], len(payload))
        await self.ingest.handle(payload, channel="sbd")


# At most this many messages per group commit: the write lock (one writer on SQLite) is held for one group,
# so a second worker on the same database still gets its turn between groups.  Large enough that a busy
# fleet's messages share acks (one per van per group: 50 vans sending at once, 0.8 acks per message at 64,
# 0.2 at 256; an ack is a signature, a publish and a PUBACK), small enough that a group commits in tens of ms.
MAX_GROUP = 256


class MqttIngestWorker:
    """One HQ ingest worker on the broker."""

    def __init__(self, ingest: Ingest, mqtt: MqttSettings, clock: Clock, shared: bool = True) -> None:
        self.ingest = ingest
        self.clock = clock
        up = "mo/v1/+/up/#"
        mqtt.subscriptions = [(f"$share/hq/{up}" if shared else up, 1), ("mo/v1/+/status", 1)]
        self.mqtt = mqtt
        self.connected = False
        # Messages that arrive while a group is being committed wait here and go in the next group (group commit),
        # each with the verification of the lot it arrived in (started on arrival) and its place in that lot.
        self._queue: list[tuple[str, str, bytes, asyncio.Future[None], asyncio.Future[list[Checked]], int]] = []
        self._flusher: asyncio.Future[None] | None = None
        self._answering: set[asyncio.Future[None]] = set()  # groups whose acks wait for the broker's PUBACKs
        self._link: MqttLink | None = None
        self.sessions = 0  # broker connections so far: HQ re-retains the catalogue on each new one

    async def run(self) -> None:
        try:
            await run_forever(self.mqtt, self._on_message, self._session, self.clock, self._state, on_batch=self._on_batch)
        finally:
            # acks still waiting for PUBACKs: their messages were not PUBACKed, the broker sends them again
            for task in list(self._answering):
                task.cancel()

    def _state(self, up: bool) -> None:
        self.connected = up

    async def _session(self, link: MqttLink) -> None:
        self._link = link
        self.sessions += 1

    async def publish_down(self, topic: str, payload: bytes, retain: bool = False) -> bool:
        """Send a signed downlink (command, assignment, catalogue); False if not connected."""
        link = self._link
        if link is None or not link.connected:
            return False
        await link.publish(topic, payload, retain=retain)
        return True

    async def _on_message(self, topic: str, payload: bytes) -> None:
        (outcome,) = await self._on_batch([(topic, payload)])
        if outcome is not None:
            raise outcome

    async def _on_batch(self, messages: list[tuple[str, bytes]]) -> list[BaseException | None]:
        """Messages that arrived together: each one's outcome once its group's COMMIT is done (and its ack out),
        so the broker gets each PUBACK only then; an exception in the place of one not stored."""
        outcomes: list[BaseException | None] = [None] * len(messages)
        waiting: list[tuple[int, asyncio.Future[None]]] = []
        loop = asyncio.get_running_loop()
        ups: list[tuple[int, str, str, bytes]] = []
        for i, (topic, payload) in enumerate(messages):
            if topic.endswith("/status"):
                try:
                    await self._status(topic, payload)
                except Exception as exc:  # noqa: BLE001 - this message's outcome (the broker sends it again)
                    outcomes[i] = exc
                continue
            parts = up_topic_parts(topic)
            if parts is not None:
                ups.append((i, parts[0], parts[1], payload))
        if ups:
            # verified now, while the group before is stored: the group finds its messages checked
            lot = [(payload, "mqtt", node, stream) for _, node, stream, payload in ups]
            checking: asyncio.Future[list[Checked]] = asyncio.ensure_future(self.ingest.check_many(lot))
            for k, (i, node, stream, payload) in enumerate(ups):
                fut: asyncio.Future[None] = loop.create_future()
                self._queue.append((node, stream, payload, fut, checking, k))
                waiting.append((i, fut))
        if waiting and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.ensure_future(self._flush())
        for i, fut in waiting:
            try:
                await fut
            except Exception as exc:  # noqa: BLE001 - not stored: not acknowledged
                outcomes[i] = exc
        return outcomes

    async def _status(self, topic: str, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
            node = topic.split("/")[2]
            depth = doc.get("depth")
            await self.ingest.sink.record_status(node, str(doc.get("state", "?")), self.clock.now(),
                                                 depth if isinstance(depth, dict) else None)
        except (ValueError, AttributeError):
            log.warning("unreadable status on %s", topic)

    async def _flush(self) -> None:
        """Store what queued up as one group, then answer: per-(van, stream) order is arrival order."""
        while self._queue:
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            try:
                lots: dict[int, list[Checked]] = {}
                for *_, checking, _ in group:
                    if id(checking) not in lots:
                        lots[id(checking)] = await checking
                answers = await self.ingest.handle_many([(payload, "mqtt", node, stream) for node, stream, payload, *_ in group],
                                                        [lots[id(checking)][k] for *_, checking, k in group])
            except Exception as exc:  # noqa: BLE001 - the group's transaction failed: every message hears it, none is acked
                for _, _, _, fut, _, _ in group:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            except BaseException:
                for _, _, _, fut, _, _ in group:
                    fut.cancel()
                raise
            link = self._link
            sends: list[tuple[asyncio.Future[None], str, bytes]] = []
            for (node, _, _, fut, _, _), answer in zip(group, answers, strict=True):
                if isinstance(answer, Exception):
                    if not fut.done():
                        fut.set_exception(answer)
                elif answer is not None and link is not None and link.connected:
                    sends.append((fut, topic_down(node, "ack"), answer))
                elif not fut.done():
                    fut.set_result(None)
            if sends and link is not None:
                # The next group is stored while these acks wait for the broker's PUBACKs (they took as long
                # as the storage itself); each message is still PUBACKed only once its own ack is out.
                task = asyncio.ensure_future(self._answer(link, sends))
                self._answering.add(task)
                task.add_done_callback(self._answering.discard)

    @staticmethod
    async def _answer(link: MqttLink, sends: list[tuple[asyncio.Future[None], str, bytes]]) -> None:
        """Publish a group's acks together (pipelined PUBACK waits); each message answered with its own ack's fate."""
        try:
            sent = await link.publish_many([(topic, answer) for _, topic, answer in sends])
        except BaseException:
            for fut, _, _ in sends:
                fut.cancel()
            raise
        for (fut, _, _), result in zip(sends, sent, strict=True):
            if fut.done():
                continue
            if result is not None:
                fut.set_exception(result)
            else:
                fut.set_result(None)
