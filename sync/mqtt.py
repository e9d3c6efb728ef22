"""One MQTT connection as an async context manager (paho-mqtt 2.x underneath).

Paho runs its network loop in its own thread; every callback is handed to
the event loop with ``call_soon_threadsafe``.  Publishes become futures keyed
by message id and resolve on the broker's PUBACK.  A PUBACK is *not* proof of
delivery (see docs/protocol.md): callers keep their data until HQ's
application-level ack.  The reconnect loop lives outside (``run_forever``),
so one ``MqttLink`` is one session attempt, as in aiomqtt.

Received messages are acknowledged to the broker by hand (paho's
``manual_ack``), only after the handler returned: a handler that raises (the
database was locked, the process is stopping) leaves the message
unacknowledged and ends the session, and the broker sends it again on the
next one (persistent session, clean start off).  A message whose handler
fails ``MAX_ATTEMPTS`` times in a row with anything but a transient error
(SQLite's OperationalError: locked, busy, disk; OSError) is acknowledged
anyway and logged as an error, so one poisonous message (a bug) cannot keep
the link down for good; a transient failure is never given up on.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import random
import sqlite3
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .clock import Clock
from .errors import LinkDown, PublishTimeout

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], Awaitable[None]]

# Deliveries of one message whose handler raised (not transiently) before it is acknowledged anyway.
MAX_ATTEMPTS = 5


def transient(exc: BaseException) -> bool:
    """Failures that pass (a locked or full database, I/O): the message is redelivered for as long as they last."""
    return isinstance(exc, (sqlite3.OperationalError, OSError))


@dataclass
class MqttSettings:
    url: str
    client_id: str
    version: str = "5"  # "5" or "3.1.1"
    keepalive: int = 30
    session_expiry: int = 7 * 24 * 3600
    connect_timeout: float = 10.0
    publish_timeout: float = 15.0
    will_topic: str | None = None
    will_payload: bytes = b""
    tls: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = None
    subscriptions: list[tuple[str, int]] = field(default_factory=list)

    @property
    def host_port(self) -> tuple[str, int]:
        u = urlparse(self.url)
        default = 8883 if u.scheme == "mqtts" else 1883
        return u.hostname or "127.0.0.1", u.port or default


def _message_key(topic: str, payload: bytes) -> bytes:
    """What identifies one message across deliveries (for counting its handler's failures)."""
    return hashlib.sha256(topic.encode() + b"\0" + payload).digest()


class MqttLink:
    """A connected MQTT session.  Leaves by raising LinkDown when the connection drops."""

    def __init__(self, settings: MqttSettings, on_message: MessageHandler, failures: dict[bytes, int] | None = None) -> None:
        self.settings = settings
        # failed deliveries per message (topic + payload digest), kept across sessions by run_forever
        self._failures = {} if failures is None else failures
        self._on_message = on_message
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Future[bool] | None = None
        self._closed = asyncio.Event()
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._client: paho.Client | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._inbox: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = collections.deque()  # paho thread -> loop
        self._drain_scheduled = False
        self.session_present = False

    # -- paho thread -> event loop --------------------------------------
    def _cb_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._on_connect, not reason.is_failure, bool(flags.session_present), str(reason))

    def _cb_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._on_disconnect, str(reason))

    def _cb_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._hand_over(self._on_puback, (mid, reason.is_failure, str(reason)))

    def _cb_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._hand_over(self._dispatch, (msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def _hand_over(self, handler: Callable[..., None], args: tuple[Any, ...]) -> None:
        """Messages and PUBACKs that arrive together cross to the event loop together, in order: one wake-up
        for the lot, not one per packet.  (_drain clears the flag before it empties the inbox, so a packet
        appended meanwhile is never stranded.)"""
        assert self._loop is not None
        self._inbox.append((handler, args))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon_threadsafe(self._drain)

    # -- on the event loop -----------------------------------------------
    def _on_connect(self, ok: bool, session_present: bool, reason: str) -> None:
        self.session_present = session_present
        if self._connected and not self._connected.done():
            if ok:
                self._connected.set_result(True)
            else:
                self._connected.set_exception(LinkDown(f"broker refused the connection: {reason}"))

    def _on_disconnect(self, reason: str) -> None:
        if self._connected and not self._connected.done():
            self._connected.set_exception(LinkDown(f"connection failed: {reason}"))
        self._closed.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(LinkDown(f"disconnected: {reason}"))
        self._pending.clear()

    def _on_puback(self, mid: int, failed: bool, reason: str) -> None:
        fut = self._pending.pop(mid, None)
        if fut is None or fut.done():
            return
        if failed:
            fut.set_exception(LinkDown(f"broker rejected publish: {reason}"))
        else:
            fut.set_result(None)

    def _drain(self) -> None:
        self._drain_scheduled = False
        inbox = self._inbox
        while inbox:
            handler, args = inbox.popleft()
            handler(*args)

    def _dispatch(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        client = self._client
        task = asyncio.ensure_future(self._on_message(topic, payload))
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, client, topic, payload, mid, qos))

    def _task_done(self, task: asyncio.Task[None], client: paho.Client | None, topic: str, payload: bytes, mid: int, qos: int) -> None:
        self._tasks.discard(task)
        if client is None or client is not self._client or self._closed.is_set():
            return  # that session is gone: the broker sends the message again on the next one
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            if self._failures:  # (the digest only when some message has failed: not a cost on every message)
                self._failures.pop(_message_key(topic, payload), None)
        else:
            key = _message_key(topic, payload)
            if len(self._failures) > 1000:
                self._failures.clear()  # bounded: only counts of recent failures matter
            n = self._failures[key] = self._failures.get(key, 0) + 1
            if n < MAX_ATTEMPTS or transient(exc):
                log.warning("message handler failed (%r): not acknowledged, the broker will send it again", exc)
                client.disconnect()  # the broker resends unacknowledged messages only on a new session
                return
            self._failures.pop(key, None)
            log.error("message handler failed %d times (%r): acknowledged and dropped", n, exc)
        client.ack(mid, qos)

    # -- public API --------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._client is not None and not self._closed.is_set()

    async def __aenter__(self) -> MqttLink:
        self._loop = asyncio.get_running_loop()
        s = self.settings
        v5 = s.version == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,  # acknowledged after the handler stored it (_task_done)
        )
        client.on_connect = self._cb_connect
        client.on_disconnect = self._cb_disconnect
        client.on_publish = self._cb_publish
        client.on_message = self._cb_message
        # Our own outbox resends; paho must not grow an unbounded queue.
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(64)
        if s.tls is not None:
            client.tls_set_context(s.tls)
        if s.username:
            client.username_pw_set(s.username, s.password)
        if s.will_topic:
            client.will_set(s.will_topic, s.will_payload, qos=1, retain=True)
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry
        host, port = s.host_port
        self._connected = self._loop.create_future()
        self._client = client
        try:
            if v5:
                client.connect_async(host, port, s.keepalive, clean_start=False, properties=props)
            else:
                client.connect_async(host, port, s.keepalive)
            client.loop_start()
            await asyncio.wait_for(asyncio.shield(self._connected), s.connect_timeout)
            for topic, qos in s.subscriptions:
                client.subscribe(topic, qos)
        except BaseException as exc:
            await self._stop()
            if isinstance(exc, asyncio.TimeoutError):
                raise LinkDown(f"no answer from broker {host}:{port}") from exc
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None or issubclass(exc_type, asyncio.CancelledError):
            # A clean stop (shutdown, ignition off): the broker suppresses the last will on a normal
            # DISCONNECT, so say "offline" ourselves before leaving.
            await self._announce_will()
        await self._stop()

    async def _announce_will(self) -> None:
        """Publish the last will as a retained message, bounded in time; a dead link just skips it."""
        s = self.settings
        if not s.will_topic or not self.connected:
            return
        try:
            await asyncio.wait_for(self.publish(s.will_topic, s.will_payload, qos=1, retain=True), min(s.publish_timeout, 5.0))
        except (TimeoutError, LinkDown, PublishTimeout) as exc:
            log.info("offline status not confirmed before disconnect: %s", exc)
        else:
            log.info("offline status published to %s", s.will_topic)

    async def _stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if self.settings.version == "5" and self.settings.will_topic:
                # MQTT 5 "disconnect with will message" (0x04): the broker publishes the will as well,
                # a second guarantee behind the explicit retained "offline" above.
                client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
            else:
                client.disconnect()
        except Exception:  # noqa: BLE001 - already gone
            pass
        # loop_stop joins the network thread: keep that off the event loop.
        await asyncio.get_running_loop().run_in_executor(None, client.loop_stop)
        self._on_disconnect("closed")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait for the broker's PUBACK (QoS 1)."""
        client = self._client
        if client is None or self._closed.is_set():
            raise LinkDown("not connected")
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise LinkDown(f"publish failed: {paho.error_string(info.rc)}")
        if qos == 0:
            return
        fut = self._pending.get(info.mid)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._pending[info.mid] = fut
        try:
            await asyncio.wait_for(fut, self.settings.publish_timeout)
        except TimeoutError as exc:
            self._pending.pop(info.mid, None)
            raise PublishTimeout(f"no PUBACK for {topic} within {self.settings.publish_timeout}s") from exc

    async def publish_many(self, messages: Sequence[tuple[str, bytes]], qos: int = 1) -> list[Exception | None]:
        """Publish several messages and wait for their PUBACKs together, under one timeout.

        Each message's fate in its place: None (PUBACKed) or the exception ``publish`` would have raised.
        """
        client = self._client
        if client is None or self._closed.is_set():
            return [LinkDown("not connected") for _ in messages]
        out: list[Exception | None] = [None] * len(messages)
        waiting: dict[asyncio.Future[None], int] = {}
        loop = asyncio.get_running_loop()
        for i, (topic, payload) in enumerate(messages):
            info = client.publish(topic, payload, qos=qos)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                out[i] = LinkDown(f"publish failed: {paho.error_string(info.rc)}")
            elif qos:
                fut = self._pending.get(info.mid)
                if fut is None:
                    fut = self._pending[info.mid] = loop.create_future()
                waiting[fut] = i
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=self.settings.publish_timeout)
            for fut, i in waiting.items():
                if fut in late:
                    fut.cancel()
                    out[i] = PublishTimeout(f"no PUBACK for {messages[i][0]} within {self.settings.publish_timeout}s")
                elif fut.cancelled():
                    out[i] = LinkDown("publish cancelled")
                else:
                    exc = fut.exception()
                    out[i] = exc if isinstance(exc, Exception) else None
            for mid in [m for m, f in self._pending.items() if f in late]:
                del self._pending[mid]
        return out

    async def wait_closed(self) -> None:
        await self._closed.wait()
        raise LinkDown("connection lost")


async def run_forever(
    settings: MqttSettings,
    on_message: MessageHandler,
    session: Callable[[MqttLink], Awaitable[None]],
    clock: Clock,
    on_state: Callable[[bool], None] | None = None,
    min_backoff: float = 0.5,
    max_backoff: float = 30.0,
) -> None:
    """Keep a session up: connect, run ``session(link)``, reconnect with jittered backoff."""
    backoff = min_backoff
    was_up: bool | None = None
    failures: dict[bytes, int] = {}
    while True:
        try:
            async with MqttLink(settings, on_message, failures) as link:
                backoff = min_backoff
                if was_up is not True:
                    log.info("MQTT connected to %s as %s", settings.url, settings.client_id)
                was_up = True
                if on_state:
                    on_state(True)
                await session(link)
                await link.wait_closed()
        except (LinkDown, PublishTimeout, OSError) as exc:
            if was_up is not False:
                log.warning("MQTT link down (%s); retrying", exc)
            was_up = False
        if on_state:
            on_state(False)
        # Full jitter: a fleet of vans must not reconnect in lockstep after a broker restart.
        await clock.sleep(random.uniform(min_backoff, backoff))
        backoff = min(max_backoff, backoff * 2)
