"""The van node's aiohttp application: ``create_app(config)``.

Each resource (store, GPS, uplink) has one cleanup context, so teardown
mirrors setup and every background task is awaited on shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from devices.gps import GpsTracker
from devices.modem import ModemManager, ModemSettings
from kit.ratelimit import LoginThrottle
from kit.tasks import LOOPS, Loops, background
from kit.timesource import TimeSource
from kit.web import ERROR_PAGE_TEXT, error_middleware
from sync.linkmgr import for_uplink
from sync.mqtt import MqttSettings
from sync.uplink import Uplink

from . import api, app_status, cardkeys, handover, hardening, passwords, rotation, supervisor, views
from . import catalog as catalog_store
from .appkeys import CATALOG, CONFIG, DESK, GPS, MODEM, SESSIONS, STORE, TRIPS, UPLINK, VISITS
from .appkeys import ATTACHMENTS, GPS_TIMES, PREREG
from .attachments import Attachments
from .prereg import Preregistrations
from .auth import Sessions
from .catalog import Catalog
from .config import NodeConfig
from .service_desk import ServiceDesk
from .store import Store
from .timekeeping import GpsTimes, keep_time
from .trips import lifecycle as trips_lifecycle
from .trips import recorder as trips_recorder
from .trips import web as trips_web
from .visits import HomeVisits

log = logging.getLogger(__name__)

HERE = Path(__file__).parent


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    store = await Store.open(cfg.db_path, cfg.node_id, cfg.hq_seal_public, cfg.clock, cfg.limits)
    store.node_seal_wrapped = cfg.node_seal_wrapped
    if await store.import_keyslots(cfg.keyslots):
        log.info("node %s: keyslots imported from the enrolment bundle", cfg.node_id)
    if cfg.bundle_dir is not None:
        await cardkeys.destroy_bundle_secrets(store, cfg.bundle_dir)
    app[STORE] = store
    app[DESK] = ServiceDesk(store)
    app[VISITS] = HomeVisits(store)
    await HomeVisits.create_schema(store.db)
    await Attachments.create_schema(store.db)
    app[ATTACHMENTS] = Attachments(store)
    await Preregistrations.create_schema(store.db)
    app[PREREG] = Preregistrations(store, app[DESK])
    await catalog_store.create_schema(store.db)
    saved = await catalog_store.load_saved(store.db)  # a catalogue HQ published wins over the bundled one
    if saved is not None and saved.version >= app[CATALOG].version:
        app[CATALOG].replace_with(saved)
    await trips_recorder.create_schema(store.db)
    await trips_lifecycle.create_schema(store.db)
    app[TRIPS] = store.trips = trips_lifecycle.Trips(store)
    yield
    await store.close()


async def _shredder_ctx(app: web.Application) -> AsyncIterator[None]:
    """Crypto-shred what HQ holds once local retention has passed (needs no key: runs while locked)."""
    cfg, store = app[CONFIG], app[STORE]

    async def shred_forever() -> None:
        while True:
            n = await store.shred_expired(cfg.retention_days * 86400)
            n += await app[ATTACHMENTS].shred_expired(cfg.retention_days * 86400)
            await store.shred_track(cfg.track_retention_days * 86400)
            if n:
                log.info("shredded the local copy of %d records held by HQ", n)
            await cfg.clock.sleep(cfg.shred_interval)

    async with background(shred_forever, "shredder", app[LOOPS]):
        yield


async def _locker_ctx(app: web.Application) -> AsyncIterator[None]:
    """Lock the store again (drop the node key from memory) once no administrator has been logged in for ``lock_grace``."""
    cfg, store, sessions = app[CONFIG], app[STORE], app[SESSIONS]

    async def lock_when_idle() -> None:
        idle_since: float | None = None
        while True:
            await cfg.clock.sleep(min(cfg.lock_grace / 2, 30.0))
            if store.locked or sessions.purge():
                idle_since = None
                continue
            now = cfg.clock.monotonic()
            if idle_since is None:
                idle_since = now
            elif now - idle_since >= cfg.lock_grace:
                store.lock()
                idle_since = None
                log.info("store locked: no administrator logged in for %.0f s", cfg.lock_grace)

    async with background(lock_when_idle, "locker", app[LOOPS]):
        yield


async def _gps_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    host, port = cfg.gpsd or ("127.0.0.1", 2947)
    tracker = GpsTracker(host, port)
    app[GPS] = tracker
    times = app[GPS_TIMES] = GpsTimes(app[STORE].time)
    if cfg.gpsd is None:
        yield
        return

    async def record_positions() -> None:
        last = None
        while True:
            fix = tracker.fix
            if fix is not None and fix.received != last:
                last = fix.received
                # GPS time if the time source accepted it; else the node's time, trusted or not (a rollover date never goes out)
                t, trusted, stamp = times.position_time(times.sane(fix))
                await app[STORE].record_position(t, fix.lat, fix.lon, fix.speed, fix.track, trusted_time=trusted, stamp=stamp)
            await cfg.clock.sleep(cfg.position_interval)

    recorder = trips_recorder.TrackRecorder(app[STORE].db, cfg.clock)
    tracker.listeners.append(lambda fix: recorder.on_fix(times.filter(fix)))
    recorder.listeners.append(app[TRIPS].on_points)  # departed / at a stop / returned from GPS movement
    async with background(tracker.run, "gps", app[LOOPS]):
        async with background(record_positions, "positions", app[LOOPS]):
            async with background(recorder.run, "track-recorder", app[LOOPS]):
                yield


async def _uplink_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    mqtt = MqttSettings(url=cfg.broker, client_id=cfg.node_id, version=cfg.mqtt_version, tls=cfg.mqtt_tls, keepalive=cfg.mqtt_keepalive)
    gps = app[GPS]

    time = app[STORE].time
    times = app[GPS_TIMES]

    def trusted_time() -> bool:
        return time.trusted

    def latest_position() -> dict[str, object] | None:
        fix = gps.fix
        if fix is None:
            return None
        t, _, _ = times.position_time(times.sane(fix))
        return {"lat": fix.lat, "lon": fix.lon, "t": t, "speed": fix.speed, "course": fix.track}

    uplink = Uplink(cfg.db_path, cfg.node_id, cfg.sign_key, cfg.hq_sign_public, mqtt, cfg.clock, ack_timeout=cfg.ack_timeout,
                    max_clock_skew=cfg.max_clock_skew, trusted_time=trusted_time, latest_position=latest_position,
                    hq_seal_public=cfg.hq_seal_public if cfg.uplink_auth == "mac" else None)
    app[UPLINK] = uplink
    store, sessions = app[STORE], app[SESSIONS]
    store.on_enqueued.append(uplink.kick)

    # Signed commands from HQ; each runs at most once per command id (sync/downlink.py)
    # and must be harmless to repeat after a crash between running and recording it.
    async def lock(doc: dict[str, object]) -> None:
        store.lock()
        sessions.drop_all()
        log.warning("HQ command: store locked, all sessions closed")

    async def sync_now(doc: dict[str, object]) -> None:
        uplink.kick()

    async def shred(doc: dict[str, object]) -> None:
        n = await store.shred_expired(0.0)  # everything HQ already holds, whatever its age
        n += await app[ATTACHMENTS].shred_expired(0.0)
        await store.shred_track(0.0)
        log.warning("HQ command: shredded the local copy of %d records", n)

    async def rotate_key(doc: dict[str, object]) -> None:
        await rotation.receive(app, doc)

    async def assign(doc: dict[str, object]) -> None:
        # Planned trips share the assignment stream: positions and places need signing, not sealing.
        await (app[TRIPS].receive_plan(doc) if doc.get("kind") == "trip" else app[VISITS].receive_assignment(doc))

    uplink.handlers.update({"lock": lock, "sync_now": sync_now, "shred": shred, "assign": assign})
    # Application status set at HQ (edge/app_status.py): HLC last-writer-wins.
    statuses = app_status.AppStatuses(store)
    await statuses.create_schema()
    await handover.create_schema(store)  # results handed over at the van (edge/handover.py)
    app[app_status.APP_STATUS] = statuses
    uplink.handlers["recon"] = statuses.receive
    uplink.handlers["prereg"] = app[PREREG].receive
    uplink.handlers["rotate_key"] = rotate_key
    uplink.handlers["hq_seal_key"] = lambda doc: rotation.receive_hq_seal(app, doc)
    uplink.handlers["catalog"] = catalog_store.handler(store.db, app[CATALOG], cfg.clock.now, store._notify)

    async def deferred() -> int:
        return 0 if uplink.downlink is None else await uplink.downlink.apply_deferred()

    async with background(uplink.run, "uplink", app[LOOPS]):
        async with background(lambda: keep_time(time, store, deferred), "time", app[LOOPS]):
            yield


async def _modem_ctx(app: web.Application) -> AsyncIterator[None]:
    """Satellite link: the modem kept open by its manager, and the link manager that uses it."""
    cfg = app[CONFIG]
    if not cfg.modem:
        yield
        return
    manager = ModemManager(ModemSettings(cfg.modem))
    app[MODEM] = manager
    links = for_uplink(app[UPLINK], manager, sbd_after=cfg.sbd_after, sbd_interval=cfg.sbd_interval, hq_seal_public=cfg.hq_seal_public)
    async with background(manager.run, "modem", app[LOOPS]):
        async with background(links.run, "link-manager", app[LOOPS]):
            yield


def create_app(config: NodeConfig) -> web.Application:
    app = web.Application(middlewares=[error_middleware, *hardening.MIDDLEWARES, passwords.middleware], client_max_size=2 * 1024 * 1024)
    if not isinstance(config.clock, TimeSource):
        # every part of the node reads time through this: "now, and how sure" (kit/timesource.py)
        config.clock = TimeSource(config.clock, config.floor_path, trust_kernel=config.trust_kernel_clock,
                                  assume_synchronised=config.assume_clock_synchronised)
    app[CONFIG] = config
    app[LOOPS] = Loops(config.clock)  # supervised background loops, shown in /api/v1/status
    app[SESSIONS] = Sessions(config.clock, config.session_timeout, max_age=config.session_max_age)
    app[hardening.THROTTLE] = throttle = LoginThrottle(config.clock, config.login_throttle)  # also the password change's
    app[hardening.GUARD] = hardening.guard(app, throttle)
    app[CATALOG] = Catalog.load()
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, auto_reload=False,  # compiled once per process
        context_processors=[aiohttp_jinja2.request_processor, views.ui_context, hardening.csrf_context]
    )
    views.install_filters(env)
    app[ERROR_PAGE_TEXT] = views.error_page_text  # error pages in the UI's language
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_shredder_ctx)
    app.cleanup_ctx.append(_locker_ctx)
    app.cleanup_ctx.append(_gps_ctx)
    app.cleanup_ctx.append(_uplink_ctx)
    app.cleanup_ctx.append(_modem_ctx)
    api.add_routes(app)
    views.add_routes(app)
    supervisor.add_routes(app)
    passwords.add_routes(app)
    trips_web.add_routes(app)
    app.router.add_static("/static", HERE / "static")
    return app
