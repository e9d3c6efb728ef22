"""Publishing the service catalogue from HQ: versioned, signed, retained for every van.

A dispatcher or admin publishes either the catalogue packaged with the
software (catalog.json + packages.json) or an uploaded JSON document of the
same shape (sync/catalog_doc.py; errors in Ukrainian, nothing is
published when anything is wrong).  The new version is N+1 where N is the
newest version HQ published, or the packaged catalogue's own version (every
van ships with that one) if HQ never published.  The document goes out as
ONE signed downlink envelope on ``mo/v1/all/down/catalog`` with node id
``all`` and seq = version, retained by the broker, so a van that connects
later gets the newest one; the van applies it only if newer
(sync/downlink.py ``apply_catalog``) and swaps it in (edge/catalog.py).

Every published version is kept in HQ's database (component
``hq_catalog``).  The row is written before the publish and removed if the
broker refuses it, so the table never claims a version the vans cannot get.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from kit.tasks import LOOPS, background
from sync import catalog_doc
from kit.web import json_response

from .appkeys import CONFIG, DOWNLINK, SESSIONS, STORE, WORKER
from .pages import page, session
from .db import DB, migrate, transaction
from .errors import HQError
from .events import fold_events
from .sender import NotConnected

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE catalog_versions (
        version {ID}, published_at DOUBLE PRECISION NOT NULL, published_by TEXT NOT NULL, source TEXT NOT NULL,
        services BIGINT NOT NULL, packages BIGINT NOT NULL, doc TEXT NOT NULL
    );
    """,
    # Which version each van runs: its ``{"type": "catalog", "event": "applied", "version"}`` evt items, read with our own cursor.
    """
    CREATE TABLE catalog_vans (node_id TEXT PRIMARY KEY, version BIGINT NOT NULL, applied_at DOUBLE PRECISION NOT NULL);
    CREATE TABLE catalog_cursor (node_id TEXT PRIMARY KEY, seq BIGINT NOT NULL);
    """,
]

MAX_UPLOAD = 512 * 1024  # bytes; the packaged catalogue is ~20 KB


class CatalogError(HQError):
    """A catalogue that cannot be published; ``errors`` are for people."""

    def __init__(self, message: str, errors: list[str] | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.errors = errors or [message]
        self.status = status


async def create_schema(db: DB) -> None:
    await migrate(db, "hq_catalog", MIGRATIONS)


async def current(db: DB) -> dict[str, Any]:
    """The newest published version, or the packaged catalogue (``published_at`` None) if HQ never published."""
    async with db.execute(
        "SELECT version, published_at, published_by, source, doc FROM catalog_versions ORDER BY version DESC LIMIT 1"
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        doc = catalog_doc.packaged()
        return {"version": int(doc["version"]), "published_at": None, "published_by": None, "source": "packaged", "doc": doc}
    return {"version": int(row[0]), "published_at": row[1], "published_by": row[2], "source": row[3], "doc": json.loads(row[4])}


async def history(db: DB, limit: int = 20) -> list[dict[str, Any]]:
    async with db.execute(
        "SELECT version, published_at, published_by, source, services, packages FROM catalog_versions ORDER BY version DESC LIMIT ?", (limit,)
    ) as cur:
        return [{"version": r[0], "published_at": r[1], "published_by": r[2], "source": r[3], "services": r[4], "packages": r[5]}
                for r in await cur.fetchall()]


async def project(db: DB) -> int:
    """Fold the vans' "catalogue applied" events into ``catalog_vans`` (the highest version wins); returns how many were seen."""

    async def fold(node_id: str, doc: dict[str, Any]) -> bool:
        if doc.get("type") != "catalog" or not isinstance(doc.get("version"), int):
            return False
        await db.execute(
            "INSERT INTO catalog_vans(node_id, version, applied_at) VALUES (?, ?, ?) ON CONFLICT (node_id) DO UPDATE"
            " SET version = excluded.version, applied_at = excluded.applied_at WHERE excluded.version > catalog_vans.version",
            (node_id, int(doc["version"]), float(doc.get("at") or 0)),
        )
        return True

    return await fold_events(db, "catalog_cursor", fold)


async def vans(app: web.Application) -> list[dict[str, Any]]:
    """Every van HQ knows with the catalogue version it last reported applying (None: still the one it shipped with)."""
    db = app[STORE].db
    await project(db)
    async with db.execute("SELECT node_id, version, applied_at FROM catalog_vans") as cur:
        applied = {str(r[0]): (int(r[1]), float(r[2])) for r in await cur.fetchall()}
    nodes = sorted({n["node_id"] for n in await app[STORE].fleet()} | set(applied))
    return [{"node_id": n, "version": applied[n][0] if n in applied else None, "applied_at": applied[n][1] if n in applied else None}
            for n in nodes]


def parse_upload(raw: bytes) -> dict[str, Any]:
    """An uploaded catalogue: UTF-8 JSON of the published shape, or CatalogError listing what is wrong."""
    if len(raw) > MAX_UPLOAD:
        raise CatalogError(f"Файл завеликий (найбільше {MAX_UPLOAD // 1024} КБ)")
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise CatalogError("Файл не в кодуванні UTF-8") from exc
    except ValueError as exc:
        raise CatalogError(f"Це не JSON: {exc.args[0] if exc.args else exc}") from exc
    errors = catalog_doc.validate(doc)
    if errors:
        raise CatalogError("Каталог не відповідає формату", errors)
    assert isinstance(doc, dict)
    return doc


async def publish(app: web.Application, doc: dict[str, Any], username: str, source: str) -> int:
    """Publish ``doc`` as the next version (signed, retained); returns the version."""
    errors = catalog_doc.validate(doc)
    if errors:
        raise CatalogError("Каталог не відповідає формату", errors)
    db, cfg = app[STORE].db, app[CONFIG]
    async with transaction(db):
        async with db.execute("SELECT MAX(version) FROM catalog_versions") as cur:
            row = await cur.fetchone()
        version = max(int(row[0]) if row and row[0] is not None else 0, int(catalog_doc.packaged()["version"])) + 1
        body = {**doc, "version": version}
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        await db.execute(
            "INSERT INTO catalog_versions(version, published_at, published_by, source, services, packages, doc) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (version, cfg.clock.now(), username, source, len(body["services"]), len(body.get("packages", [])), text),
        )
    try:
        await app[DOWNLINK].catalog(version, body)
    except NotConnected:
        async with transaction(db):
            await db.execute("DELETE FROM catalog_versions WHERE version = ?", (version,))
        raise  # 503 broker_down, rendered by the error middleware
    return version


# -- web ------------------------------------------------------------------------
async def catalog_page(request: web.Request, errors: list[str] | None = None, status: int = 200) -> web.Response:
    s = session(request)
    db = request.app[STORE].db
    cur = await current(db)
    doc = cur["doc"]
    categories = {c["code"]: c["name"] for c in doc["categories"]}
    ctx = {"session": s, "current": cur, "categories": categories, "services": sorted(doc["services"], key=lambda x: (x["category"], x["code"])),
           "packages": doc.get("packages", []), "history": await history(db), "errors": errors or [],
           "published": request.query.get("published"), "vans": await vans(request.app)}
    return await page(request, "catalog.html", ctx, status=status)


async def catalog_get(request: web.Request) -> web.Response:
    return await catalog_page(request)


async def catalog_publish(request: web.Request) -> web.Response:
    s = session(request, "command")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    try:
        if form.get("source") == "upload":
            upload = form.get("catalog")
            raw = upload.file.read(MAX_UPLOAD + 1) if isinstance(upload, web.FileField) else b""
            if not raw:
                raise CatalogError("Оберіть файл каталогу (JSON)")
            doc, source = parse_upload(raw), "upload"
        else:
            doc, source = catalog_doc.packaged(), "packaged"
        version = await publish(request.app, doc, s.username, source)
    except CatalogError as exc:
        return await catalog_page(request, exc.errors, status=422)
    raise web.HTTPSeeOther(f"/catalog?published={version}")


async def catalog_json(request: web.Request) -> web.Response:
    """The newest published catalogue (or the packaged one) and the versions HQ published."""
    session(request)
    db = request.app[STORE].db
    return json_response({**await current(db), "history": await history(db), "vans": await vans(request.app)})


async def republish_newest(app: web.Application) -> bool | None:
    """Publish the newest stored version again, retained (same version: vans that have it ignore it).

    None: HQ never published; False: not connected."""
    async with app[STORE].db.execute("SELECT version, doc FROM catalog_versions ORDER BY version DESC LIMIT 1") as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    try:
        await app[DOWNLINK].catalog(int(row[0]), json.loads(row[1]))
    except NotConnected:
        return False
    return True


async def _schema_ctx(app: web.Application) -> AsyncIterator[None]:
    """Schema; then, each time HQ (re)connects to the broker, the newest catalogue is retained again,
    so a broker that lost its retained messages (restarted without persistence) still serves it to late vans."""
    cfg = app[CONFIG]
    await create_schema(app[STORE].db)

    async def loop() -> None:
        done = 0  # the connection we last re-retained on
        while True:
            worker = app[WORKER]
            session = worker.sessions
            if session != done and worker.connected:
                try:
                    if await republish_newest(app) is not False:
                        done = session
                except Exception:  # tried again next round; logged with its traceback
                    log.exception("re-publishing the catalogue failed")
            await cfg.clock.sleep(cfg.ack_poll_interval)

    async with background(loop, "hq-catalog-retain", app[LOOPS]):
        yield


def add_routes(app: web.Application) -> None:
    """One line in hq/app.py, after the store's and ingest's cleanup contexts."""
    app.cleanup_ctx.append(_schema_ctx)
    app.router.add_get("/catalog", catalog_get)
    app.router.add_post("/catalog", catalog_publish)
    app.router.add_get("/api/v1/catalog", catalog_json)
