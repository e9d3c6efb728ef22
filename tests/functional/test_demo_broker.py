"""The demo's broker: its own Mosquitto (MQTT 5) where installed, the embedded amqtt broker (MQTT 3.1.1) only as a fallback."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mobile_office.demo import demo_broker, mosquitto_binary
from sync.mqtt import MqttLink, MqttSettings
from tests.conftest import mosquitto_path

pytestmark = pytest.mark.functional


async def round_trip(url: str, version: str) -> bytes:
    """Subscribe, publish with QoS 1 (PUBACK awaited) and receive it back through the production MQTT client."""
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(topic: str, payload: bytes) -> None:
        await got.put(payload)

    settings = MqttSettings(url=url, client_id="demo-broker-test", version=version, subscriptions=[("mo/v1/test/echo", 1)])
    async with MqttLink(settings, on_message) as link:
        await link.publish("mo/v1/test/echo", "привіт".encode())
        return await asyncio.wait_for(got.get(), 30)


def listening(url: str) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", int(url.rsplit(":", 1)[1]))) == 0


async def test_the_demo_runs_its_own_mosquitto_on_mqtt5(tmp_path: Path) -> None:
    if mosquitto_path() is None:
        pytest.skip("Mosquitto is not installed (bin/setup installs it when run as root)")
    assert mosquitto_binary() is not None
    async with demo_broker(tmp_path / "mosquitto") as (url, version, kind):
        assert (version, kind) == ("5", "Mosquitto, MQTT 5")
        assert await round_trip(url, version) == "привіт".encode()
    assert not listening(url)  # stopped with the demo
    assert "mosquitto version" in (tmp_path / "mosquitto" / "mosquitto.log").read_text()


async def test_the_embedded_broker_is_the_mqtt311_fallback(tmp_path: Path) -> None:
    async with demo_broker(tmp_path / "mosquitto", embedded=True) as (url, version, kind):
        assert (version, kind) == ("3.1.1", "embedded amqtt, MQTT 3.1.1")
        assert await round_trip(url, version) == "привіт".encode()
    assert not (tmp_path / "mosquitto").exists()  # no Mosquitto was started


def test_the_van_and_hq_never_import_amqtt() -> None:
    code = ("import sys, edge.app, hq.app, mobile_office.cli, mobile_office.nodecli, mobile_office.demo, sync.uplink, sync.ingest; "
            "sys.exit('amqtt' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], timeout=60).returncode == 0
