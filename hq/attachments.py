"""Attachments at HQ: the photos and scans the vans send on the ``blob`` stream.

Ingest stores every blob item as it stores any item (``items``, exactly once
per node/stream/seq); this module reads them.  A small index table (its own
migration component) is filled lazily from items not yet indexed, so a
listing never rescans what it has seen.  Opening a file needs HQ's private
key and the ``open_records`` permission, and is written to ``vault_audit``
before anything is decrypted, like a record opening (hq/vault.py).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from kit.sessions import Session
from kit.web import HttpProblem, json_response
from sync import crypto
from sync.blob import TABLE, aad_id, open_chunks, parse_blob_item
from .db import transaction
from sync.errors import CryptoError
from .db import migrate

from . import users
from .appkeys import CONFIG, SESSIONS, STORE, TOKEN_SESSION
from .errors import HQError
from .store import HQStore
from .pages import opening_reason

MIGRATIONS = [
    """
CREATE TABLE attachment_index (
    node_id TEXT NOT NULL, seq BIGINT NOT NULL, attachment_id TEXT NOT NULL, application_id TEXT NOT NULL,
    idx BIGINT NOT NULL, count BIGINT NOT NULL, PRIMARY KEY (node_id, seq)
);
CREATE INDEX attachment_index_app ON attachment_index(application_id);
CREATE INDEX attachment_index_att ON attachment_index(attachment_id);
CREATE TABLE attachment_index_state (node_id TEXT PRIMARY KEY, seq BIGINT NOT NULL)
""",
]


class AttachmentMissing(HQError):
    """Unknown, incomplete or not opening with HQ's key."""


async def create_schema(store: HQStore) -> None:
    await migrate(store.db, "hq_attachments", MIGRATIONS)


async def _refresh(store: HQStore) -> None:
    """Index blob items that arrived since the last call (per node, by seq)."""
    async with store.db.execute(
        "SELECT i.node_id, i.seq, i.payload FROM items i LEFT JOIN attachment_index_state s ON s.node_id = i.node_id"
        " WHERE i.stream = ? AND i.seq > COALESCE(s.seq, 0) ORDER BY i.node_id, i.seq", ("blob",)
    ) as cur:
        rows = await cur.fetchall()
    if not rows:
        return
    newest: dict[str, int] = {}
    entries = []
    for node_id, seq, payload in rows:
        newest[node_id] = max(newest.get(node_id, 0), int(seq))
        try:
            h, _ = parse_blob_item(bytes(payload))
            index, count = h["index"], h["count"]
            if not isinstance(index, int) or not isinstance(count, int):
                raise TypeError("chunk index and count are integers")
            entries.append((node_id, int(seq), str(h["id"]), str(h["application_id"]), index, count))
        except (ValueError, KeyError, TypeError):
            continue  # not an attachment chunk: nothing to index
    async with transaction(store.db):
        await store.db.executemany(
            "INSERT INTO attachment_index(node_id, seq, attachment_id, application_id, idx, count) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (node_id, seq) DO NOTHING", entries)
        await store.db.executemany(
            "INSERT INTO attachment_index_state(node_id, seq) VALUES (?, ?) ON CONFLICT (node_id) DO UPDATE SET seq = excluded.seq"
            " WHERE excluded.seq > attachment_index_state.seq", list(newest.items()))


async def list_for_record(store: HQStore, application_id: str) -> list[dict[str, Any]]:
    """No personal data: id, how many chunks arrived of how many, the type and size from chunk 0's header."""
    await _refresh(store)
    async with store.db.execute(
        "SELECT a.attachment_id, a.node_id, COUNT(*), MAX(a.count) FROM attachment_index a WHERE a.application_id = ?"
        " GROUP BY a.attachment_id, a.node_id ORDER BY MIN(a.seq)", (application_id,)
    ) as cur:
        groups = await cur.fetchall()
    out = []
    for att_id, node_id, have, count in groups:
        head = await _chunk0(store, str(node_id), str(att_id))
        out.append({"id": att_id, "node_id": node_id, "complete": int(have) == int(count), "chunks": int(count),
                    "content_type": head.get("content_type") if head else None, "size": head.get("size") if head else None})
    return out


async def _chunk0(store: HQStore, node_id: str, att_id: str) -> dict[str, Any] | None:
    async with store.db.execute(
        "SELECT i.payload FROM attachment_index a JOIN items i ON i.node_id = a.node_id AND i.stream = ? AND i.seq = a.seq"
        " WHERE a.node_id = ? AND a.attachment_id = ? AND a.idx = 0", ("blob", node_id, att_id)
    ) as cur:
        row = await cur.fetchone()
    return None if row is None else parse_blob_item(bytes(row[0]))[0]


async def open_attachment(store: HQStore, key: crypto.OpeningKeys, att_id: str, username: str, reason: str) -> tuple[dict[str, Any], str, bytes]:
    """(chunk-0 header, original name, content); the opening is audited before decryption."""
    await _refresh(store)
    async with store.db.execute(
        "SELECT i.payload, a.idx, a.count FROM attachment_index a JOIN items i ON i.node_id = a.node_id AND i.stream = ? AND i.seq = a.seq"
        " WHERE a.attachment_id = ? ORDER BY a.idx", ("blob", att_id)
    ) as cur:
        rows = list(await cur.fetchall())
    if not rows or len(rows) != int(rows[0][2]) or [int(r[1]) for r in rows] != list(range(len(rows))):
        raise AttachmentMissing(f"attachment {att_id} is unknown or not complete yet")
    parts = [parse_blob_item(bytes(r[0])) for r in rows]
    head = parts[0][0]
    async with transaction(store.db):
        await store.db.execute("INSERT INTO vault_audit(at, username, record_id, reason) VALUES (?, ?, ?, ?)",
                               (store.clock.now(), username, att_id, f"attachment: {reason}"))
    version = head.get("version", 1)
    if not isinstance(version, int):
        raise AttachmentMissing(f"attachment {att_id} has a malformed header")
    try:
        app_id = str(head.get("application_id", ""))
        dk = crypto.unwrap_with_private(base64.b64decode(str(head["wrap_hq"])), key, crypto.record_aad(TABLE, aad_id(att_id, version, app_id), version))
        name, data = open_chunks(att_id, version, dk, [c for _, c in parts], base64.b64decode(str(head["meta"])), app_id)
    except (CryptoError, KeyError, ValueError) as exc:
        raise AttachmentMissing(f"attachment {att_id} does not open with HQ's key") from exc
    return head, name, data


def _session(request: web.Request, permission: str | None = None) -> Session:
    s = request.get(TOKEN_SESSION) or request.app[SESSIONS].get(request)  # a machine token (hq/auth.py) or a login
    if s is None:
        raise HttpProblem("Увійдіть, щоб продовжити", code="login_required", status=401)
    if permission is not None and not users.allowed(s.role, permission):
        raise HttpProblem("Ваша роль не дає доступу до цієї дії", code="forbidden", status=403)
    return s


async def list_handler(request: web.Request) -> web.Response:
    _session(request)
    return json_response(await list_for_record(request.app[STORE], request.match_info["id"]))


async def page_handler(request: web.Request) -> web.Response:
    """The list of a record's files for HQ staff; opening one is a POST with a reason."""
    s = request.app[SESSIONS].get(request)
    if s is None:
        raise web.HTTPSeeOther("/login")
    store = request.app[STORE]
    record_id = request.match_info["id"]
    async with store.db.execute("SELECT number FROM records WHERE record_id = ?", (record_id,)) as cur:
        row = await cur.fetchone()
    ctx = {"session": s, "record_id": record_id, "number": row[0] if row else None,
           "attachments": await list_for_record(store, record_id), "can": lambda perm: users.allowed(s.role, perm)}
    return aiohttp_jinja2.render_template("attachments.html", request, ctx)


async def open_handler(request: web.Request) -> web.Response:
    """POST with csrf and a reason (like opening a record); answers with the file itself."""
    s = _session(request, "open_records")
    reason = await opening_reason(request, s)
    try:
        head, name, data = await open_attachment(request.app[STORE], request.app[CONFIG].keys.seal_ring, request.match_info["att"], s.username,
                                                 reason)
    except AttachmentMissing as exc:
        raise HttpProblem("Файл не знайдено, він ще не надійшов повністю або не відкривається ключем ЦНАП", code="not_found",
                          status=404) from exc
    if str(head.get("application_id")) != request.match_info["id"]:
        raise HttpProblem("Файл не знайдено", code="not_found", status=404)
    ctype = str(head.get("content_type", "application/octet-stream"))
    return web.Response(body=data, content_type=ctype if "/" in ctype else "application/octet-stream", headers={
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}", "Cache-Control": "no-store"})


async def _on_startup(app: web.Application) -> None:
    # on_startup handlers added here run after the cleanup contexts have opened the store
    await create_schema(app[STORE])


def add_routes(app: web.Application) -> None:
    app.on_startup.append(_on_startup)
    app.router.add_get("/api/v1/records/{id}/attachments", list_handler)
    app.router.add_get("/records/{id}/attachments", page_handler)
    app.router.add_post("/records/{id}/attachments/{att}", open_handler)


refresh = _refresh  # the retention round indexes new chunks before it shreds (hq/retention.py)

__all__ = ["add_routes", "list_for_record", "open_attachment", "refresh"]
