"""The supervisor's pages: the whole day's work (no personal data) and the administrators' accounts.

Both are refused on the server to other roles (edge/roles.py).  Accounts are
keyslots of the store: adding one wraps the node key under the new password
(so the store must be unlocked), removing one deletes its slot and ends every
session of that username at once; a reset gives a new one-time password
(shown once, changed at the next login); replacing the node key rewraps
everything under a new one.  All are audited by the store.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from . import cardkeys, figures, i18n, passwords, roles
from .appkeys import CATALOG, CONFIG, SESSIONS, STORE
from .errors import HttpError
from .views import _page, _unlocked, language

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,31}$")


async def day_report(db: Any, now: float) -> dict[str, Any]:
    """Today's figures (UTC day, like the queue): from metadata that is never sealed."""
    start = now - now % 86400
    end = start + 86400
    day = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%d")

    async def rows(sql: str, *args: object) -> list[tuple[Any, ...]]:
        async with db.execute(sql, args) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    out: dict[str, Any] = {
        "by_service": await rows("SELECT service_code, COUNT(*) FROM applications WHERE created >= ? AND created < ? GROUP BY service_code"
                                 " ORDER BY COUNT(*) DESC, service_code", start, end),
        "by_admin": await rows("SELECT created_by, COUNT(*) FROM applications WHERE created >= ? AND created < ? GROUP BY created_by"
                               " ORDER BY created_by", start, end),
        "queue": dict(await rows("SELECT status, COUNT(*) FROM queue_tickets WHERE day = ? GROUP BY status", day)),
        "visits": await rows("SELECT COALESCE(assigned_to, '—'), status, COUNT(*) FROM visits GROUP BY assigned_to, status"
                             " ORDER BY assigned_to, status"),
        "ratings": (await rows("SELECT COUNT(*), AVG(score) FROM ratings WHERE rated_at >= ? AND rated_at < ?", start, end))[0],
    }
    try:
        out["attachments"] = (await rows("SELECT COUNT(*) FROM attachments WHERE created >= ? AND created < ?", start, end))[0][0]
    except sqlite3.OperationalError:
        out["attachments"] = 0
    out["applications"] = sum(n for _, n in out["by_service"])
    # The department's figures for the day, defined as in the CLI report and at HQ (sync/figures.py).
    today = datetime.fromtimestamp(now, timezone.utc).date()
    out["figures"] = await figures.report(figures.aiosqlite_fetch(db), today, today)
    return out


async def report_page(request: web.Request) -> web.Response:
    s = _unlocked(request)
    roles.require(s, "report")
    store = request.app[STORE]
    rep = await day_report(store.db, store.clock.now())
    return await _page(request, "report.html", {"session": s, "report": rep, "catalog": request.app[CATALOG]})


async def _admins_page(request: web.Request, s: Any, errors: dict[str, str], values: dict[str, str], message: str = "",
                       status: int = 200) -> web.Response:
    accounts = await request.app[STORE].accounts()
    ctx = {"session": s, "accounts": accounts, "errors": errors, "values": values, "message": message, "roles": roles.ROLES}
    return await _page(request, "admins.html", ctx, status)


async def admins_page(request: web.Request) -> web.Response:
    s = _unlocked(request)
    roles.require(s, "manage_admins")
    msg = {"added": "admins.added", "removed": "admins.removed"}.get(request.query.get("done", ""), "")
    return await _admins_page(request, s, {}, {}, i18n.translate(msg, language(request)) if msg else "")


async def admins_add(request: web.Request) -> web.Response:
    s = _unlocked(request)
    roles.require(s, "manage_admins")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    values = {k: str(form.get(k, "")).strip() for k in ("username", "role")}
    password = str(form.get("password", ""))
    errors: dict[str, str] = {}
    if not USERNAME_RE.match(values["username"]):
        errors["username"] = "Ім'я користувача: 2–32 малі латинські літери, цифри, «.», «_» або «-»"
    elif any(a.username == values["username"] for a in await request.app[STORE].accounts()):
        errors["username"] = "Такий адміністратор уже є"
    rule = passwords.problem(password, values["username"], request.app[CONFIG].password_min_length, language(request))
    if rule:
        errors["password"] = rule
    if values["role"] not in roles.ROLES:
        errors["role"] = "Оберіть роль зі списку"
    if errors:
        return await _admins_page(request, s, errors, values, i18n.translate("intake.fix_fields", language(request)), 422)
    await request.app[STORE].add_admin(values["username"], password, values["role"], s.username)
    raise web.HTTPSeeOther("/admins?done=added")


async def admins_remove(request: web.Request) -> web.Response:
    s = _unlocked(request)
    roles.require(s, "manage_admins")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    username = request.match_info["username"]
    if username == s.username:
        raise HttpError("Не можна видалити власний обліковий запис", code="cannot_remove_self", status=409)
    try:
        removed = await request.app[STORE].remove_admin(username, s.username)
    except ValueError as exc:
        raise HttpError("Останнього адміністратора видалити не можна", code="last_admin", status=409) from exc
    if not removed:
        raise HttpError("Такого адміністратора немає", code="not_found", status=404)
    request.app[SESSIONS].drop_user(username)  # a removed administrator's open browser gets 401 on its next request
    raise web.HTTPSeeOther("/admins?done=removed")


async def admins_reset(request: web.Request) -> web.Response:
    """A new one-time password for another administrator: shown once on this page, never in a URL or a log."""
    s = _unlocked(request)
    roles.require(s, "manage_admins")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    username = request.match_info["username"]
    if username == s.username:
        raise HttpError("Свій пароль змініть на сторінці «Змінити пароль»", code="cannot_reset_self", status=409)
    password = passwords.one_time()
    try:
        await request.app[STORE].change_password(username, password, actor=s.username, must_change=True)
    except KeyError as exc:
        raise HttpError("Такого адміністратора немає", code="not_found", status=404) from exc
    request.app[SESSIONS].drop_user(username)
    lang = language(request)
    return await _admins_page(request, s, {}, {}, i18n.translate("admins.one_time", lang).format(user=username, password=password))


async def admins_rotate_key(request: web.Request) -> web.Response:
    """Replace the node key (after removing someone who may have learnt it); the supervisor confirms with their password."""
    s = _unlocked(request)
    roles.require(s, "manage_admins")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    store, lang = request.app[STORE], language(request)
    password = str(form.get("password", ""))
    if not password or not await store.check_password(s.username, password):
        return await _admins_page(request, s, {"rotate_password": i18n.translate("password.wrong_old", lang)}, {},
                                  i18n.translate("intake.fix_fields", lang), 422)
    others = await store.rotate_node_key(s.username, password, passwords.one_time)
    for username in others:
        request.app[SESSIONS].drop_user(username)
    bundle = request.app[CONFIG].bundle_dir
    if bundle is not None:
        await cardkeys.destroy_bundle_secrets(store, bundle)  # the card's recovery slot now wraps the new key
    lines = [i18n.translate("admins.rotated", lang)] + [i18n.translate("admins.one_time", lang).format(user=u, password=p)
                                                         for u, p in sorted(others.items())]
    return await _admins_page(request, s, {}, {}, " ".join(lines))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/report", report_page)
    app.router.add_get("/admins", admins_page)
    app.router.add_post("/admins", admins_add)
    app.router.add_post("/admins/{username}/remove", admins_remove)
    app.router.add_post("/admins/{username}/reset", admins_reset)
    app.router.add_post("/admins/rotate-key", admins_rotate_key)
