"""MqttLink against the real broker: a burst crosses to the event loop in order; publish_many answers each message."""

from __future__ import annotations

import asyncio

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sync.errors import LinkDown
from sync.clock import SystemClock
from sync.mqtt import MqttLink, MqttSettings, run_forever
from tests.conftest import Broker

from .harness import until

pytestmark = pytest.mark.functional


def _publish_burst(broker: Broker, topic: str, payloads: list[bytes]) -> None:
    """QoS 1 from one client, all in flight at once: the broker keeps their order."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="burst", protocol=paho.MQTTv5)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    infos = [c.publish(topic, p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(30)
    c.loop_stop()
    c.disconnect()


async def test_a_burst_reaches_the_handler_in_arrival_order(mosquitto: Broker) -> None:
    seen: list[bytes] = []

    async def handler(topic: str, payload: bytes) -> None:
        seen.append(payload)

    settings = MqttSettings(url=mosquitto.url, client_id="burst-reader", subscriptions=[("t/burst", 1)])
    async with MqttLink(settings, handler):
        while b"warm-up" not in seen:  # the subscription is in place once a message comes through
            await asyncio.to_thread(_publish_burst, mosquitto, "t/burst", [b"warm-up"])
            await asyncio.sleep(0.05)
        burst = [b"m%04d" % i for i in range(500)]
        await asyncio.to_thread(_publish_burst, mosquitto, "t/burst", burst)
        await until(lambda: len([p for p in seen if p != b"warm-up"]) >= len(burst), "the whole burst")
    assert [p for p in seen if p != b"warm-up"] == burst


async def test_publish_many_answers_each_message(mosquitto: Broker) -> None:
    got: list[bytes] = []
    reader = paho.Client(CallbackAPIVersion.VERSION2, client_id="many-reader", protocol=paho.MQTTv5)
    reader.on_message = lambda c, u, m: got.append(bytes(m.payload))
    reader.connect("127.0.0.1", mosquitto.port)
    reader.subscribe("t/many", qos=1)
    reader.loop_start()

    async def ignore(topic: str, payload: bytes) -> None:
        return None

    try:
        async with MqttLink(MqttSettings(url=mosquitto.url, client_id="many-writer"), ignore) as link:
            while b"warm-up" not in got:
                assert await link.publish_many([("t/many", b"warm-up")]) == [None]
                await asyncio.sleep(0.05)
            batch = [("t/many", b"a%03d" % i) for i in range(100)]
            assert await link.publish_many(batch) == [None] * len(batch)  # every PUBACK came
            await until(lambda: len(got) >= 101, "the reader to get the batch")
            assert sorted(got[-100:]) == sorted(p for _, p in batch)
            mosquitto.stop()
            with pytest.raises(LinkDown):
                await asyncio.wait_for(link.wait_closed(), 30)
            answers = await link.publish_many([("t/many", b"late-1"), ("t/many", b"late-2")])
            assert all(isinstance(a, LinkDown) for a in answers)  # an answer for each, nothing raised
    finally:
        reader.loop_stop()


async def test_a_batch_handler_settles_each_message_by_its_own_outcome(mosquitto: Broker) -> None:
    """Messages that arrive together go to the batch handler in one call; the one it fails is delivered again."""
    calls: list[list[bytes]] = []
    stored: list[bytes] = []
    fail_once = {b"bad"}

    async def on_batch(messages: list[tuple[str, bytes]]) -> list[BaseException | None]:
        calls.append([p for _, p in messages])
        outcomes: list[BaseException | None] = []
        for _, payload in messages:
            if payload in fail_once:
                fail_once.discard(payload)
                outcomes.append(OSError("disk busy"))  # transient: never given up on
            else:
                stored.append(payload)
                outcomes.append(None)
        return outcomes

    async def never(topic: str, payload: bytes) -> None:
        raise AssertionError("with a batch handler, messages go to it")

    settings = MqttSettings(url=mosquitto.url, client_id="batch-reader", subscriptions=[("t/batch", 1)])
    connected = asyncio.Event()

    async def session(link: MqttLink) -> None:
        connected.set()

    task = asyncio.create_task(run_forever(settings, never, session, SystemClock(), min_backoff=0.1, max_backoff=0.5, on_batch=on_batch))
    try:
        await asyncio.wait_for(connected.wait(), 30)
        while b"warm-up" not in stored:
            await asyncio.to_thread(_publish_burst, mosquitto, "t/batch", [b"warm-up"])
            await asyncio.sleep(0.05)
        burst = [b"m%03d" % i for i in range(200)]
        await asyncio.to_thread(_publish_burst, mosquitto, "t/batch", [*burst[:100], b"bad", *burst[100:]])
        await until(lambda: set(burst) | {b"bad"} <= set(stored), "every message handled")
        assert stored.count(b"bad") == 1  # failed once, handled when the broker sent it again
        assert max(len(c) for c in calls) > 1  # a burst arrives as batches, not one call per message
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
