"""HQ's aiohttp application: ``create_app(config)``; ingest runs as one cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from kit.tasks import LOOPS, Loops, background
from provisioning.rotation import NodeKeyCache

from kit import hardening
from kit.ratelimit import LoginThrottle
from kit.sessions import Sessions
from kit.web import error_middleware, json_response
from sync.ingest import Ingest, MqttIngestWorker, SbdIngest
from sync.mqtt import MqttSettings

from . import appstatus, attachments, auth, sms, tokens, trips, users
from . import catalog_admin, indicators, pages, prereg_admin, retention, schedule
from . import web as web_routes
from .appkeys import CONFIG, DIRECTIP, DOWNLINK, INGEST, SBD_INGEST, SESSIONS, STORE, WORKER
from .config import HQConfig
from .directip import DirectIpReceiver, MoMessage
from .sender import DownlinkSender
from .store import HQStore

__all__ = ["CONFIG", "DIRECTIP", "DOWNLINK", "INGEST", "SBD_INGEST", "SESSIONS", "STORE", "WORKER", "HQConfig", "create_app"]

HERE = Path(__file__).parent


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    store = await HQStore.open(cfg.db_target, cfg.clock)
    await users.create_schema(store.db)
    await tokens.create_schema(store.db)
    app[STORE] = store
    yield
    await store.close()


async def _ingest_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    # Reloaded when provisioning changes a node record: enrolment, revocation and key rotation act without a restart.
    key_for = NodeKeyCache(cfg.keys.directory, cfg.keys.seal_ring)
    # Status and heartbeats count only from vans whose key HQ still accepts.
    app[STORE].node_active = lambda node: key_for(node) is not None
    ingest = Ingest(app[STORE], key_for, cfg.keys.sign, cfg.clock, max_clock_skew=cfg.max_clock_skew,
                    heartbeat_keys=lambda tag: key_for.heartbeat_keys(tag, cfg.keys.seal))
    app[INGEST] = ingest
    app[SBD_INGEST] = SbdIngest(ingest)
    mqtt = MqttSettings(url=cfg.broker, client_id=cfg.worker, version=cfg.mqtt_version, tls=cfg.mqtt_tls)
    worker = MqttIngestWorker(ingest, mqtt, cfg.clock, shared=cfg.mqtt_version == "5")
    app[WORKER] = worker
    app[DOWNLINK] = DownlinkSender(app[STORE], cfg.keys, worker, ingest.hlc, cfg.clock)
    async with background(worker.run, "hq-ingest", app[LOOPS]):
        yield


async def _directip_ctx(app: web.Application) -> AsyncIterator[None]:
    """Iridium DirectIP MO receiver: satellite messages enter the same ingest as MQTT."""
    cfg = app[CONFIG]
    if cfg.directip_port is None:
        yield
        return
    sbd = app[SBD_INGEST]

    async def on_mo(mo: MoMessage) -> None:
        await sbd.on_mo(mo.imei, mo.momsn, mo.payload, float(mo.session_time))

    async with DirectIpReceiver(on_mo, cfg.host, cfg.directip_port, gateways=cfg.directip_gateways,
                                reject_log_interval=cfg.directip_reject_log_interval, clock=cfg.clock) as rx:
        app[DIRECTIP] = rx
        yield


async def openapi(request: web.Request) -> web.FileResponse:
    return web.FileResponse(HERE / "openapi.yaml", headers={"Content-Type": "application/yaml; charset=utf-8"})


async def healthz(request: web.Request) -> web.Response:
    """Liveness (always 200 while HQ answers) and each supervised loop's state, restarts and last error."""
    return json_response({"status": "ok", "loops": request.app[LOOPS].snapshot()})


async def fleet(request: web.Request) -> web.Response:
    return json_response(await request.app[STORE].fleet())


async def stats(request: web.Request) -> web.Response:
    return json_response(await request.app[STORE].stats())


async def quarantine(request: web.Request) -> web.Response:
    return json_response(await request.app[STORE].quarantined())


async def data_classes(request: web.Request) -> web.Response:
    """Bytes received per node and data class; nodes report what still waits in their retained status."""
    store = request.app[STORE]
    ingest = request.app[INGEST]
    return json_response({"received": await store.class_bytes(),
                          "ingest": {"stored": ingest.stored, "duplicates": ingest.duplicates, "rejected": ingest.rejected}})


def create_app(config: HQConfig) -> web.Application:
    # Outermost first: errors in the one shape, the proxy's scheme (if trusted), API credentials (401 before anything else
    # for a JSON route), then CSRF and login throttling.
    app = web.Application(middlewares=[error_middleware, hardening.forwarded_scheme(config.trusted_proxies), auth.api_auth_middleware,
                                       *hardening.MIDDLEWARES])
    app[CONFIG] = config
    app[LOOPS] = Loops(config.clock)  # supervised background loops, shown in /healthz
    app[SESSIONS] = Sessions(config.clock, config.session_timeout, cookie="mo_hq_session", max_age=config.session_lifetime)
    app[hardening.GUARD] = auth.guard(app, LoginThrottle(config.clock, config.login_throttle))
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                         context_processors=[pages.i18n_context])
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_ingest_ctx)
    app.cleanup_ctx.append(_directip_ctx)
    app.cleanup_ctx.append(appstatus.status_ctx)
    app.cleanup_ctx.append(sms.sms_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/fleet", fleet)
    app.router.add_get("/api/v1/stats", stats)
    app.router.add_get("/api/v1/quarantine", quarantine)
    app.router.add_get("/api/v1/data-classes", data_classes)
    app.router.add_get("/api/v1/openapi.yaml", openapi)
    web_routes.add_routes(app)
    attachments.add_routes(app)
    trips.add_routes(app)
    catalog_admin.add_routes(app)
    prereg_admin.add_routes(app)
    schedule.add_routes(app)
    indicators.add_routes(app)
    retention.add_routes(app)
    app.router.add_static("/static", HERE / "static")
    return app
