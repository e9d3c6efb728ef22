"""`mobile-office demo`: broker, HQ and one simulated van on this machine.

The broker is the demo's own Mosquitto (MQTT 5, as in production) when it is
installed; the embedded amqtt broker (MQTT 3.1.1) is only a fallback.

It goes through the same provisioning path as a real deployment: HQ keys
are created once, the van gets an enrolment bundle, the node starts from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from firmware_sim.gateway import SatelliteGateway
from firmware_sim.gps_pty import NmeaPty, gpsd_binary, real_gpsd
from firmware_sim.gpsd_server import GpsdProtocolServer
from firmware_sim.modem import ModemSim, ModemSimConfig, SkySignal
from firmware_sim.route import Route, SimPosition
from provisioning.keys import AdminAccount, add_node, init_hq, load_hq

from .nodecli import hq_config, node_config
from .runtime import free_port, port_is_free, start_site, stop_event

log = logging.getLogger(__name__)

NODE_ID = "van-01"
YARD_S = 15.0


@dataclass
class DemoOptions:
    data_dir: Path
    http_port: int = 8080
    hq_port: int = 8090
    admin_password: str | None = None
    broker: str | None = None
    gpsd: tuple[str, int] | None = None
    modem: str | None = None
    directip_port: int | None = None
    trip: str = "TRIP-NORTH"
    speedup: float = 4.0
    host: str = "127.0.0.1"
    dwell_min: float | None = 40.0
    embedded_broker: bool = False  # the amqtt fallback even where Mosquitto is installed


def mosquitto_binary() -> str | None:
    """Debian puts mosquitto in /usr/sbin, which is not on a normal user's PATH."""
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None)


@contextlib.asynccontextmanager
async def private_mosquitto(binary: str, workdir: Path, port: int) -> AsyncIterator[str]:
    """The demo's own Mosquitto on 127.0.0.1 (MQTT 5, the production path), persistent in ``workdir``.

    Anonymous on loopback only: the demo's broker is reachable from this machine alone."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    # Started as root, Mosquitto would drop to its own user, which cannot write a data directory that is root's alone.
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {workdir}/\n"
                    f"autosave_interval 5\nmax_queued_messages 100000\n{user}", encoding="utf-8")
    log_file = workdir / "mosquitto.log"
    with open(log_file, "ab") as out:
        proc = await asyncio.create_subprocess_exec(binary, "-c", str(conf), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 15.0
        while True:
            if proc.returncode is not None:
                raise SystemExit(f"mobile-office demo: Mosquitto exited at start (code {proc.returncode}); see {log_file}")
            with contextlib.suppress(OSError):
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"mobile-office demo: Mosquitto did not listen on port {port}; see {log_file}")
            await asyncio.sleep(0.05)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@contextlib.asynccontextmanager
async def demo_broker(workdir: Path, embedded: bool = False) -> AsyncIterator[tuple[str, str, str]]:
    """The demo's broker: its URL, MQTT version and a name to print.

    Mosquitto when installed (bin/setup installs it); the embedded amqtt broker
    (MQTT 3.1.1 only, the optional extra ``embedded-broker``) only where it is
    missing, or when asked for."""
    binary = None if embedded else mosquitto_binary()
    if binary is not None:
        async with private_mosquitto(binary, workdir, free_port()) as url:
            yield url, "5", "Mosquitto, MQTT 5"
        return
    if importlib.util.find_spec("amqtt") is None:
        raise SystemExit("mobile-office demo: no MQTT broker: install Mosquitto (bin/setup does, as root) "
                         "or the embedded fallback: pip install 'mobile-office[embedded-broker]'")
    async with embedded_broker(free_port()) as url:
        yield url, "3.1.1", "embedded amqtt, MQTT 3.1.1"  # amqtt speaks MQTT 3.1.1 only


@contextlib.asynccontextmanager
async def embedded_broker(port: int) -> AsyncIterator[str]:
    from amqtt.broker import Broker  # an optional extra: imported only when the fallback is used

    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
    )
    await broker.start()
    try:
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        await broker.shutdown()


def _provision(opts: DemoOptions) -> tuple[Path, str]:
    hq_dir = opts.data_dir / "hq"
    bundle_dir = opts.data_dir / "bundles" / NODE_ID
    pw_file = opts.data_dir / "demo-admin-password.txt"
    keys = load_hq(hq_dir) if (hq_dir / "hq.json").exists() else init_hq(hq_dir)
    if not (bundle_dir / "node.json").exists():
        password = opts.admin_password or secrets.token_urlsafe(9)
        add_node(keys, NODE_ID, bundle_dir, [AdminAccount("admin", password, "van_admin")])
        # Demo only: a real van's one-time password is handed over on paper, never stored.
        fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
    elif opts.admin_password is not None:
        log.warning("the demo van already exists in %s: its administrator keeps the first password", opts.data_dir)
    password = pw_file.read_text().strip() if pw_file.exists() else "(see the first run)"
    return bundle_dir, password


async def _plan_demo_trip(hq_app: web.Application, node_app: web.Application, opts: DemoOptions) -> None:
    """HQ plans today's trip for the van through the dispatcher's own path (signed plan on the assign downlink)."""
    import json
    from datetime import date

    from hq import trips as hq_trips
    from hq.sender import NotConnected
    from hq.appkeys import STORE as HQ_STORE
    from kit import data_path

    today = date.today().isoformat()
    async with hq_app[HQ_STORE].db.execute(
        "SELECT 1 FROM trip_plans WHERE node_id = ? AND planned_date = ?", (NODE_ID, today)
    ) as cur:
        if await cur.fetchone():
            return  # planned on an earlier start of the demo today
    doc = json.loads(data_path("stops.json").read_text(encoding="utf-8"))
    trip = next(t for t in doc["trips"] if t["code"] == opts.trip)
    purposes = {p["code"]: p.get("purpose", "other") for p in doc["stops"]}
    rows = [{"place": code, "purpose": purposes.get(code, "other")} for code in trip["route"][1:-1]]
    from edge.appkeys import UPLINK

    for _ in range(100):  # the van's first MQTT session must exist, or the broker has nobody to keep the plan for
        if not node_app[UPLINK].status.mqtt_up:
            await asyncio.sleep(0.1)
            continue
        await asyncio.sleep(0.5)  # its SUBACK
        try:
            await hq_trips.plan_trip(hq_app, NODE_ID, trip["name"], today, "van", None,
                                     hq_trips.parse_stops(rows), "hq-admin")
            return
        except NotConnected:
            await asyncio.sleep(0.2)
    log.warning("demo: could not plan today's trip at HQ (no broker connection)")


async def run_demo(opts: DemoOptions) -> None:
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    for port, what in ((opts.http_port, "--http-port"), (opts.hq_port, "--hq-port")):
        if not port_is_free(port, opts.host):
            raise SystemExit(f"mobile-office demo: port {port} ({what}) is already in use; choose another")
    bundle_dir, password = await asyncio.get_running_loop().run_in_executor(None, _provision, opts)
    stop = stop_event()
    route = Route.from_trip(opts.trip, dwell_min=opts.dwell_min)
    # The van waits in the yard while the demo plans its trip at HQ, so the plan is there before it leaves.
    started = time.monotonic() + YARD_S

    def position() -> SimPosition:
        return route.at(max(0.0, time.monotonic() - started) * opts.speedup)

    async with contextlib.AsyncExitStack() as stack:
        if opts.broker:
            broker, version, broker_kind = opts.broker, "5", "MQTT 5"
        else:
            broker, version, broker_kind = await stack.enter_async_context(demo_broker(opts.data_dir / "mosquitto", opts.embedded_broker))
        if opts.gpsd:
            gpsd = opts.gpsd
        elif gpsd_binary() is not None:
            # The real thing: Debian's gpsd reading NMEA from the simulated receiver through a pty.
            feed = await stack.enter_async_context(NmeaPty(route, speedup=opts.speedup, hold_s=YARD_S))
            gpsd = ("127.0.0.1", free_port())
            await stack.enter_async_context(real_gpsd(feed.device, gpsd[1]))
        else:
            sim = await stack.enter_async_context(GpsdProtocolServer(position))
            gpsd = ("127.0.0.1", sim.port)
        directip_port = opts.directip_port or free_port()
        if opts.modem:
            modem_device = opts.modem
        else:
            gateway = await stack.enter_async_context(SatelliteGateway(hq_port=directip_port))
            sky = SkySignal(lambda: max(0.0, time.monotonic() - started) * opts.speedup)
            sim_modem = await stack.enter_async_context(ModemSim(ModemSimConfig(signal=sky), gateway))
            gateway.on_mt_queued.append(lambda imei: sim_modem.ring())
            modem_device = sim_modem.device
        # A local SMS gateway: "ready" notices to consenting citizens land in a file (hq/sms.py).
        from firmware_sim.sms_gateway import SmsGateway, start as start_sms

        sms_port, sms_file = free_port(), opts.data_dir / "sms-sent.jsonl"
        stack.push_async_callback((await start_sms(SmsGateway(sms_file), "127.0.0.1", sms_port)).cleanup)
        hq_cfg = hq_config(None, {"hq_data_dir": str(opts.data_dir / "hq"), "hq_broker": broker, "hq_mqtt_version": version,
                                  "hq_port": str(opts.hq_port), "directip_port": str(directip_port), "hq_host": opts.host,
                                  "sms_url": f"http://127.0.0.1:{sms_port}/send"})
        from hq.app import create_app as create_hq

        hq_app = create_hq(hq_cfg)
        hq_runner = await start_site(hq_app, opts.host, opts.hq_port)
        # The demo's HQ administrator has the van administrator's password (one thing to remember).
        from hq import users
        from hq.appkeys import STORE as HQ_STORE

        hq_password = password if len(password) >= 10 else password + "-hq-demo"
        await users.add_user(hq_app[HQ_STORE].db, "hq-admin", "admin", hq_password, time.time())
        # A viewer token for scripts against HQ's JSON API (every /api/v1/ route needs one, or a login).
        from hq import tokens

        token_file = opts.data_dir / "demo-hq-token.txt"
        token = await tokens.issue(hq_app[HQ_STORE].db, "demo-viewer", "viewer", time.time())
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        stack.push_async_callback(hq_runner.cleanup)
        cfg = node_config(
            bundle_dir,
            None,
            {"data_dir": str(opts.data_dir / "node"), "broker": broker, "mqtt_version": version,
             "gpsd": f"{gpsd[0]}:{gpsd[1]}", "http_port": str(opts.http_port), "position_interval": "2",
             "modem": modem_device, "sbd_after": "60", "sbd_interval": "120", "https": "off"},  # the demo stays on http://
        )
        from edge.app import create_app as create_node

        node_app = create_node(cfg)
        node_runner = await start_site(node_app, opts.host, opts.http_port)
        stack.push_async_callback(node_runner.cleanup)
        print(f"Van UI (administrator):  http://{opts.host}:{opts.http_port}/", flush=True)
        print(f"HQ dashboard:            http://{opts.host}:{opts.hq_port}/", flush=True)
        print(f"Login: admin / {password}", flush=True)
        print(f"HQ login: hq-admin / {hq_password}", flush=True)
        print(f"HQ API token (viewer): in {token_file} (curl -H \"Authorization: Bearer $(cat {token_file})\" "
              f"http://{opts.host}:{opts.hq_port}/api/v1/fleet)", flush=True)
        print(f"Broker: {broker} ({broker_kind}) · GPS: gpsd {gpsd[0]}:{gpsd[1]} · trip {opts.trip} at x{opts.speedup:g}", flush=True)
        print(f"Satellite modem: {modem_device} · HQ DirectIP receiver: port {directip_port}", flush=True)
        print(f"SMS gateway (demo): http://127.0.0.1:{sms_port}/send · messages recorded in {sms_file}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        await _plan_demo_trip(hq_app, node_app, opts)
        await stop.wait()
        print("Stopping…", flush=True)
