"""Server-rendered pages of the van UI.  The core flow works with JavaScript off.

Strings come from edge/i18n.py; pages follow post/redirect/get so that a
reload never submits an application twice.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
import uuid
from datetime import date, datetime
from collections.abc import Callable
from typing import Any

from urllib.parse import quote

import aiohttp_jinja2
import segno
from aiohttp import web

from kit.web import PageText

from . import app_status, application_form, delivery, handover, i18n, passwords, payqr
from .appkeys import ATTACHMENTS, CATALOG, CONFIG, DESK, PREREG, SESSIONS, STORE, VISITS
from .attachments import AttachmentError, Upload
from .forms import read_form
from . import receipt_pdf as receipt_pdf_mod
from . import roles
from .auth import COOKIE, Session, set_cookie
from .errors import CryptoError, HttpError, Locked, StoreLocked, ValidationFailed
from .intake import BUSINESS_KINDS, REPRESENTATIVE_KINDS, RNOKPP_ABSENT_REASONS, check_intake, parse_applicant, save_intake
from .validation import DOCUMENT_TYPES, FieldError, validate_birth_date, validate_document
from .service_desk import DeskError
from .prereg import PreregError
from .service_terms import fee_text, term_text
from .store import SavedApplication
from .visits import VisitError
from .status import node_status

ID_RE = re.compile(r"^[0-9a-f]{32}$")


def language(request: web.Request) -> str:
    lang = request.cookies.get(i18n.COOKIE, i18n.DEFAULT)
    return lang if lang in i18n.LANGUAGES else i18n.DEFAULT


def error_page_text(request: web.Request, message: str) -> PageText:
    """kit.web's error pages in the UI's language (the JSON API keeps the Ukrainian message)."""
    lang = language(request)
    t = i18n.translator(lang)
    return PageText(lang=lang, title=t("error.title"), message=i18n.translate_message(message, lang), code=t("error.code"), home=t("error.home"))


async def ui_context(request: web.Request) -> dict[str, Any]:
    """Jinja context processor: translator and language on every page."""
    lang = language(request)
    config = request.app[CONFIG]
    return {"t": i18n.translator(lang), "lang": lang, "allowed": roles.allowed,
            "photo_max_side": config.photo_max_side, "photo_quality": config.photo_quality}


@functools.lru_cache(maxsize=256)
def qr_svg(text: str, scale: int) -> str:
    """A receipt's QR codes never change, and drawing one costs ~6 ms on a small CPU: keep the recent ones."""
    return str(segno.make(text, error="m", micro=False).svg_inline(scale=scale, title=text))  # never a Micro QR: phones cannot read those


@functools.lru_cache(maxsize=256)
def payment_qr_svg(url: str, scale: int) -> str:
    """The payment QR as the NBU draws it (edge/payqr.py): its symbol, and the hryvnia sign in a white circle at the centre."""
    qr = payqr.symbol(url)
    side = qr.symbol_size(scale=scale)[0]
    d = payqr.MARK * qr.symbol_size(scale=scale, border=0)[0]
    mark = (f'<circle cx="{side / 2:g}" cy="{side / 2:g}" r="{d / 2:g}" fill="#fff"/>'
            f'<text x="{side / 2:g}" y="{side / 2:g}" text-anchor="middle" dominant-baseline="central" font-size="{d * 0.75:g}"'
            ' font-weight="bold" font-family="DejaVu Sans, sans-serif">\u20b4</text>')
    svg = str(qr.svg_inline(scale=scale, title=url))
    return svg.replace("</svg>", mark + "</svg>")


def hhmm(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(float(ts)).strftime("%H:%M")


def install_filters(env: Any) -> None:
    env.filters["hhmm"] = hhmm


async def _page(request: web.Request, template: str, ctx: dict[str, Any], status: int = 200) -> web.Response:
    if "status" not in ctx:  # (setdefault would run the queries even when the handler already has it)
        ctx["status"] = await node_status(request.app)
    ctx.setdefault("session", request.app[SESSIONS].get(request))
    return aiohttp_jinja2.render_template(template, request, ctx, status=status)


def _session_or_redirect(request: web.Request) -> Session:
    s = request.app[SESSIONS].get(request)
    if s is None:
        expired = "?expired=1" if request.cookies.get(COOKIE) else ""
        raise web.HTTPSeeOther("/login" + expired)
    return s


async def login_form(request: web.Request) -> web.Response:
    return await _page(request, "login.html", {"error": None, "username": "", "expired": "expired" in request.query})


async def login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    account = await request.app[STORE].unlock(username, password) if username and password else None
    if account is None:
        ctx = {"error": i18n.translate("login.failed", language(request)), "username": username, "expired": False}
        return await _page(request, "login.html", ctx, status=401)
    session = passwords.new_session(request, account.username, account.role, account.must_change)
    resp = web.HTTPSeeOther("/password" if account.must_change else roles.home(account.role))
    set_cookie(resp, session, request.app[CONFIG].secure_cookies)
    raise resp


async def logout(request: web.Request) -> web.Response:
    s = _session_or_redirect(request)
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    request.app[SESSIONS].drop(s)
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


def local_path(target: str) -> str:
    """Only a path on this node: browsers drop tabs, newlines and spaces and read a backslash as a slash, so /<tab>/evil is //evil."""
    cleaned = "".join(ch for ch in target if ch.isprintable() and not ch.isspace())
    if not cleaned.startswith("/") or cleaned.startswith("//") or "\\" in cleaned or cleaned != target:
        return "/"
    return cleaned


async def set_language(request: web.Request) -> web.Response:
    lang = request.match_info["lang"]
    if lang not in i18n.LANGUAGES:
        raise HttpError("Невідома мова", code="unknown_language", status=404)
    resp = web.HTTPSeeOther(local_path(request.query.get("next", "/")))
    resp.set_cookie(i18n.COOKIE, lang, max_age=365 * 24 * 3600, samesite="Strict", path="/")
    raise resp


def _intake_ctx(request: web.Request, s: Session, values: dict[str, str], errors: dict[str, str], message: str | None = None) -> dict[str, Any]:
    catalog = request.app[CATALOG]
    docs = {code: list(svc.documents) for code, svc in catalog.services.items()}
    chosen = catalog.services.get(values.get("service_code", ""))
    return {
        "session": s, "catalog": catalog, "values": values, "errors": errors, "message": message, "packages": catalog.packages,
        "documents": docs, "chosen": chosen, "absent_reasons": RNOKPP_ABSENT_REASONS, "document_types": DOCUMENT_TYPES,
        "rep_kinds": REPRESENTATIVE_KINDS, "business_kinds": BUSINESS_KINDS,
        "ticked": set(values.get("documents_received", "").split("\n")),
    }


async def intake_form(request: web.Request) -> web.Response:
    s = _session_or_redirect(request)
    values: dict[str, str] = {}
    applicant_id = request.query.get("applicant", "")
    if applicant_id and ID_RE.match(applicant_id) and not request.app[STORE].locked:
        try:
            a = await request.app[STORE].read_applicant(applicant_id, s.username, "new application")
            values = {k: a.get(k, "") for k in ("surname", "given_name", "rnokpp", "unzr", "document_type", "document_number")}
            values["applicant_id"] = applicant_id
            if a.get("rnokpp_absent_reason") in RNOKPP_ABSENT_REASONS:
                values["rnokpp_absent_reason"] = a["rnokpp_absent_reason"]
        except (KeyError, CryptoError):
            pass  # unknown or shredded: an empty form is the right answer
    return await _page(request, "intake.html", _intake_ctx(request, s, values, {}))


async def today(request: web.Request) -> web.Response:
    s = _session_or_redirect(request)
    tickets, preregs, bar = await asyncio.gather(request.app[DESK].today(), request.app[PREREG].today(s.username), node_status(request.app))
    issued = request.query.get("issued", "")
    return await _page(request, "today.html", {"session": s, "tickets": tickets, "issued": issued[:8], "preregs": preregs, "status": bar,
                                               "catalog": request.app[CATALOG]})


async def prereg_arrived(request: web.Request) -> web.Response:
    """A pre-registered citizen came: their ticket (П-…) is called before walk-ins."""
    s = _session_or_redirect(request)
    roles.require(s, "queue")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    try:
        label = await request.app[PREREG].arrived(request.match_info["id"], s.username)
    except PreregError as exc:
        raise HttpError(str(exc), code="not_found", status=404) from exc
    raise web.HTTPSeeOther(f"/?issued={label}")


async def queue_action(request: web.Request) -> web.Response:
    s = _session_or_redirect(request)
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    desk = request.app[DESK]
    action = request.match_info["action"]
    try:
        if action == "issue":
            t = await desk.issue_ticket(preregistered=form.get("prereg") == "1")
            raise web.HTTPSeeOther(f"/?issued={t.label}")
        if action == "call":
            await desk.call_next(s.username)
        elif action in ("served", "no_show"):
            await desk.finish(str(form.get("ticket", "")), action == "served", s.username)
        else:
            raise HttpError("Невідома дія з чергою", code="unknown_action", status=404)
    except DeskError as exc:
        raise HttpError(str(exc), code="queue_conflict", status=409) from exc
    raise web.HTTPSeeOther("/")


INTAKE_FIELDS = ("surname", "given_name", "rnokpp", "rnokpp_absent_reason", "document_type", "document_number", "unzr",
                 "service_code", "package_code", "consent", "applicant_id", "notes",
                 "representative_kind", "representative_surname", "representative_given_name", "representative_rnokpp",
                 "representative_document_type", "representative_document_number", "representative_basis_number",
                 "representative_basis_date", "business_kind", "business_edrpou", "business_name", "business_signatory_position")


async def intake_submit(request: web.Request) -> web.Response:
    s = _session_or_redirect(request)
    roles.require(s, "intake")
    form, uploads, upload_error = await read_form(request)
    request.app[SESSIONS].check_csrf(s, form.get("csrf", ""))
    values = {k: form.get(k, "") for k in INTAKE_FIELDS}
    values["documents_received"] = "\n".join(v for k, v in sorted(form.items()) if k.startswith("doc_received_"))
    store = request.app[STORE]
    errors: dict[str, str] = {}
    # ticked documents arrive as doc_received_<i> = name (one field each: the multipart reader keeps one value per name)
    ticked = [v for k, v in sorted(form.items()) if k.startswith("doc_received_")]
    received: list[str] | None = None
    try:
        intake = await check_intake(values, request.app[CATALOG], store, require_consent=True, lang=language(request),
                                    today=date.fromtimestamp(request.app[CONFIG].clock.now()))
        received = application_form.parse_documents_received(ticked, request.app[CATALOG], intake.application.service_codes)
    except ValidationFailed as exc:
        errors.update(exc.fields)
    if upload_error:
        errors["attachments"] = i18n.translate_message(upload_error, language(request)) + ". " + i18n.translate("attach.choose_again", language(request))
    elif errors and uploads:
        errors["attachments"] = i18n.translate("attach.choose_again", language(request))
    if errors:
        msg = i18n.translate("intake.fix_fields", language(request))
        return await _page(request, "intake.html", _intake_ctx(request, s, values, errors, msg), status=422)
    att = request.app[ATTACHMENTS]
    first_id = uuid.uuid4().hex  # known before sealing: the photos' associated data names their application
    prepared = await att.prepare(uploads, first_id) if uploads else []

    def attach(conn: sqlite3.Connection, saved: list[SavedApplication]) -> None:
        # Same transaction as the records: the photos are saved with the application or not at all.
        att.insert_sync(conn, saved[0].id, prepared, s.username)

    saved = await save_intake(store, intake, s.username, then=attach if prepared else None, first_id=first_id, documents_received=received)
    raise web.HTTPSeeOther(f"/applications/{saved[0].id}/receipt?saved=1")


def parties(rec: dict[str, str], t: Any) -> list[tuple[str, str]]:
    """The receipt's lines naming who filed for the applicant and the business (page and PDF alike)."""
    rows: list[tuple[str, str]] = []
    kind = rec.get("rep_kind", "")
    if kind:
        doc = f"{t('doc.' + rec.get('rep_document_type', ''))} {rec.get('rep_document_number', '')}".strip()
        rows.append((t("receipt.representative"), f"{rec.get('rep_surname', '')} {rec.get('rep_given_name', '')} — {t('rep.' + kind)}, {doc}"))
        basis_date = rec.get("rep_basis_date", "")
        shown_date = date.fromisoformat(basis_date).strftime("%d.%m.%Y") if basis_date else ""
        rows.append((t("receipt.basis"), t("rep.basis." + kind).format(number=rec.get("rep_basis_number", ""), date=shown_date)))
    biz = rec.get("business_kind", "")
    if biz:
        parts = [t("biz." + biz), rec.get("business_name", ""), rec.get("business_edrpou", "")]
        if rec.get("business_signatory_position"):
            parts.append(f"{t('biz.signatory_position')}: {rec['business_signatory_position']}")
        rows.append((t("receipt.business"), " · ".join(p for p in parts if p)))
    return rows


async def receipt(request: web.Request) -> web.Response:
    s = _session_or_redirect(request)
    app_id = request.match_info["id"]
    if not ID_RE.match(app_id):
        raise HttpError("Заяву не знайдено", code="not_found", status=404)
    store = request.app[STORE]
    if store.locked:
        raise Locked("Сховище заблоковане: увійдіть знову")
    try:
        rec = await store.read_application(app_id, s.username, "receipt")
    except KeyError as exc:
        raise HttpError("Заяву не знайдено", code="not_found", status=404) from exc
    except CryptoError as exc:
        raise HttpError("Заяву вже передано до ЦНАП, а її копію на фургоні знищено за строком зберігання", code="shredded", status=410) from exc
    catalog = request.app[CATALOG]
    service = catalog.services.get(rec["service_code"])
    qr = qr_svg(rec["number"], 4)
    # Independent reads, sent together: one wait for SQLite's thread instead of one per read (the status bar's too).
    token, sibling_rows, attachments, status, bar = await asyncio.gather(
        request.app[DESK].rating_token(app_id), store.package_siblings(app_id), request.app[ATTACHMENTS].list(app_id),
        app_status.lookup(request.app, app_id), node_status(request.app))
    rate_url = f"{request.scheme}://{request.host}/rate/{token}"
    siblings = [(n, catalog.services.get(c)) for n, c in sibling_rows]
    ctx = {
        "rec": rec, "service": service, "qr": qr, "just_saved": "saved" in request.query, "parties": parties(rec, i18n.translator(language(request))),
        "rate_path": f"/rate/{token}", "rate_qr": qr_svg(rate_url, 3),
        "siblings": siblings, "package": catalog.packages.get(rec.get("package_code", "")),
        "paper": "receipt80" if request.query.get("paper") == "80" else "a4",
        # made without trusted time: no date at all rather than a wrong one that looks true
        "received": datetime.fromtimestamp(float(rec["created"])).strftime("%d.%m.%Y %H:%M") if rec.get("created_trusted") != "0"
        else i18n.translator(language(request))("receipt.date_pending"),
        "attachments": attachments, "app_id": app_id,
        "attach_error": i18n.translate_message(str(s.data.pop("attach_error", "")), language(request)), "attached": request.query.get("attached", "")[:3],
        "status": bar,
    }
    ctx["app_status"] = status  # set at HQ (edge/app_status.py)
    ctx.update(await _terms_ctx(request, service, rec["number"], app_id))
    ctx["refusal_reason"] = await handover.refusal_reason(store, app_id)  # HQ's written reason, sealed to this van
    ctx["handed_over"] = await handover.of(store, app_id, s.username)
    return await _page(request, "receipt.html", ctx)


def _when(ts: object) -> str:
    return "" if ts is None else datetime.fromtimestamp(float(str(ts))).strftime("%d.%m.%Y %H:%M")


async def _terms_ctx(request: web.Request, service: Any, number: str, app_id: str) -> dict[str, Any]:
    """Term, fee (with the NBU payment QR for a paid service), legal basis, and where the application is on its way to HQ."""
    lang = language(request)
    pay_url = payqr.url(service.fee, number) if service is not None and service.fee is not None else ""
    return {
        "term": term_text(service, lang), "fee": fee_text(service, lang), "pay_url": pay_url,
        "pay_purpose": payqr.purpose(service.fee, number) if pay_url else "",
        "pay_qr": payment_qr_svg(pay_url, 3) if pay_url else "",
        "delivery": await delivery.one(request.app[STORE].db, app_id), "when": _when,
    }


async def receipt_pdf(request: web.Request) -> web.Response:
    """The same receipt as an A4 PDF (fpdf2 with an embedded DejaVu font; made in an executor)."""
    s = _unlocked(request)
    app_id = request.match_info["id"]
    if not ID_RE.match(app_id):
        raise HttpError("Заяву не знайдено", code="not_found", status=404)
    try:
        rec = await request.app[STORE].read_application(app_id, s.username, "receipt pdf")
    except KeyError as exc:
        raise HttpError("Заяву не знайдено", code="not_found", status=404) from exc
    except CryptoError as exc:
        raise HttpError("Заяву вже передано до ЦНАП, а її копію на фургоні знищено за строком зберігання", code="shredded", status=410) from exc
    catalog = request.app[CATALOG]
    t = i18n.translator(language(request))

    def line(number: str, code: str) -> str:
        svc = catalog.services.get(code)
        return f"{number} — {code} · {svc.name}" if svc else f"{number} — {code}"

    siblings = await request.app[STORE].package_siblings(app_id)
    service = catalog.services.get(rec["service_code"])
    docs: list[str] = []
    for _n, code in siblings or [(rec["number"], rec["service_code"])]:
        svc = catalog.services.get(code)
        docs += [d for d in (svc.documents if svc else ()) if d not in docs]
    data = receipt_pdf_mod.ReceiptData(
        title=t("receipt.title"), number_label=t("saved.number"), number=rec["number"],
        applicant_label=t("receipt.applicant"), applicant=f"{rec.get('surname', '')} {rec.get('given_name', '')}".strip(),
        services_label=t("receipt.service"),
        services=[line(n, c) for n, c in siblings] if len(siblings) > 1 else [line(rec["number"], rec["service_code"])],
        date_label=t("receipt.date"), date=datetime.fromtimestamp(float(rec["created"])).strftime("%d.%m.%Y %H:%M")
        if rec.get("created_trusted") != "0" else t("receipt.date_pending"),
        term_label=t("receipt.term"), term=term_text(service, language(request)), documents_label=t("receipt.documents"),
        documents=docs if service or siblings else [], notes_label=t("notes.label"), notes=rec.get("notes", ""),
        qr_caption=t("receipt.qr"), centre=f"{t('app.centre')} · {t('app.title')} · {request.app[CONFIG].node_id}",
        parties=parties(rec, t),
        fee_label=t("receipt.fee"), fee=fee_text(service, language(request)),
        legal_basis_label=t("receipt.legal_basis"), legal_basis=service.legal_basis if service else "",
        payment=_payment_lines(t, service, rec["number"]),
        payment_url=payqr.url(service.fee, rec["number"]) if service is not None and service.fee is not None else "",
        payment_caption=t("fee.qr"),
        delivery_label=t("ledger.label"), delivery=_delivery_text(t, await delivery.one(request.app[STORE].db, app_id)),
        refusal_label=t("handover.reason"), refusal=await handover.refusal_reason(request.app[STORE], app_id) or "",
    )
    try:
        body = await asyncio.get_running_loop().run_in_executor(None, receipt_pdf_mod.render, data)
    except receipt_pdf_mod.FontMissing as exc:
        raise HttpError("PDF недоступний: на вузлі не встановлено шрифт DejaVu (fonts-dejavu-core)", code="pdf_unavailable", status=503) from exc
    return web.Response(body=body, content_type="application/pdf", headers={
        "Content-Disposition": f'inline; filename="receipt-{rec["number"]}.pdf"', "Cache-Control": "no-store"})


def _payment_lines(t: Callable[[str], str], service: Any, number: str) -> list[str]:
    if service is None or service.fee is None:
        return []
    f = service.fee
    return [f"{t('fee.recipient')}: {f.recipient}", f"{t('fee.iban')}: {f.iban}", f"{t('fee.code')}: {f.recipient_code}",
            f"{t('fee.purpose')}: {payqr.purpose(f, number)}"]


def _delivery_text(t: Callable[[str], str], d: dict[str, Any] | None) -> str:
    if d is None:
        return ""
    state = d["delivery"]["state"]
    text = t("ledger." + state)
    if state == "acknowledged" and d["delivery"]["acknowledged"]:
        text += f" {t('ledger.at')} {_when(d['delivery']['acknowledged'])}"
    elif state == "quarantined":
        text += f": {d['delivery']['quarantine']['reason']}"
    return text


SIGNATURE_NAME = "zayava-signature.png"  # the citizen's signature from the tablet: an attachment under this (sealed) name


async def _form_data(request: web.Request, s: Session, app_id: str, reason: str) -> tuple[dict[str, Any], bytes | None]:
    """The заява's context: the record, the card (if any), the filled template, the inventory, the signature."""
    if not ID_RE.match(app_id):
        raise HttpError("Заяву не знайдено", code="not_found", status=404)
    store = request.app[STORE]
    try:
        rec = await store.read_application(app_id, s.username, reason)
    except KeyError as exc:
        raise HttpError("Заяву не знайдено", code="not_found", status=404) from exc
    except CryptoError as exc:
        raise HttpError("Заяву вже передано до ЦНАП, а її копію на фургоні знищено за строком зберігання", code="shredded", status=410) from exc
    card: dict[str, str] | None = None
    applicant_id = await application_form.applicant_of(store.db, app_id)
    if applicant_id:
        try:
            card = await store.read_applicant(applicant_id, s.username, reason)
        except (KeyError, CryptoError):
            card = None  # shredded card: the form leaves its lines blank
    t = i18n.translator(language(request))
    service = request.app[CATALOG].services.get(rec["service_code"])
    date_text = datetime.fromtimestamp(float(rec["created"])).strftime("%d.%m.%Y") if rec.get("created_trusted") != "0" else ""
    centre = f"{t('app.centre')} · {t('app.title')} · {request.app[CONFIG].node_id}"
    heading, addressee, body = application_form.text(service, application_form.values(rec, card, service, date_text, centre))
    signature = None
    att = request.app[ATTACHMENTS]
    for a in reversed(await att.list(app_id)):
        if a.content_type == "image/png" and not a.shredded:
            _info, name, data = await att.read(a.id, s.username, reason)
            if name == SIGNATURE_NAME:
                signature = data
                break
    ctx = {"rec": rec, "service": service, "heading": heading, "addressee": addressee, "body": body, "date": date_text,
           "inventory": application_form.received(rec), "signed": signature is not None, "app_id": app_id, "centre": centre}
    return ctx, signature


async def application_page(request: web.Request) -> web.Response:
    """The заява on A4 for the citizen's signature (printed from the browser), with the tablet's signature pad."""
    s = _unlocked(request)
    ctx, _sig = await _form_data(request, s, request.match_info["id"], "application form")
    ctx.update(session=s, signature_saved="signed" in request.query)
    return await _page(request, "application.html", ctx)


async def application_pdf(request: web.Request) -> web.Response:
    s = _unlocked(request)
    ctx, signature = await _form_data(request, s, request.match_info["id"], "application form pdf")
    t = i18n.translator(language(request))
    inventory = ctx["inventory"]
    data = application_form.FormText(
        heading=ctx["heading"], addressee=ctx["addressee"], body=ctx["body"], number_label=t("saved.number"), number=ctx["rec"]["number"],
        inventory_label=t("form.inventory"), inventory=inventory or [], inventory_none=t("form.inventory_none" if inventory == [] else "form.inventory_unknown"),
        date_label=t("form.date"), date=ctx["date"] or "____________", signature_label=t("form.signature"), centre=ctx["centre"],
        signature_png=signature,
    )
    try:
        body = await asyncio.get_running_loop().run_in_executor(None, application_form.render, data)
    except receipt_pdf_mod.FontMissing as exc:
        raise HttpError("PDF недоступний: на вузлі не встановлено шрифт DejaVu (fonts-dejavu-core)", code="pdf_unavailable", status=503) from exc
    return web.Response(body=body, content_type="application/pdf", headers={
        "Content-Disposition": f'inline; filename="application-{ctx["rec"]["number"]}.pdf"', "Cache-Control": "no-store"})


async def _upload_to_application(request: web.Request) -> tuple[Session, str, list[Upload], str | None]:
    """What a file upload to a saved application checks first: the intake role, the application's id, the form's CSRF token."""
    s = _unlocked(request)
    roles.require(s, "intake")
    app_id = request.match_info["id"]
    if not ID_RE.match(app_id):
        raise HttpError("Заяву не знайдено", code="not_found", status=404)
    form, uploads, upload_error = await read_form(request)
    request.app[SESSIONS].check_csrf(s, form.get("csrf", ""))
    return s, app_id, uploads, upload_error


async def signature_add(request: web.Request) -> web.Response:
    """The citizen signed on the tablet (edge/static/signature.js): a PNG kept sealed with the record, like a photo."""
    s, app_id, uploads, upload_error = await _upload_to_application(request)
    if upload_error or len(uploads) != 1 or uploads[0].content_type != "image/png":
        raise HttpError("Підпис має надійти одним зображенням PNG", code="bad_signature", status=422)
    try:
        await request.app[ATTACHMENTS].add(app_id, [Upload(SIGNATURE_NAME, "image/png", uploads[0].data)], s.username)
    except KeyError as exc:
        raise HttpError("Заяву не знайдено", code="not_found", status=404) from exc
    except AttachmentError as exc:
        raise HttpError(str(exc), code="bad_signature", status=422) from exc
    raise web.HTTPSeeOther(f"/applications/{app_id}/application?signed=1")


async def applications_page(request: web.Request) -> web.Response:
    """The van's applications with where each is on its way to HQ (the sync ledger) and HQ's status; no personal data."""
    s = _session_or_redirect(request)
    db = request.app[STORE].db
    return await _page(request, "applications.html", {
        "session": s, "apps": await delivery.recent(db), "waiting": await delivery.waiting(db), "catalog": request.app[CATALOG], "when": _when,
        "ready": await delivery.recent(db, 500, "ready"), "refused": await delivery.recent(db, 50, "refused"),
        "handed": request.query.get("handed", "")[:40],
    })


async def handover_form(request: web.Request, error: str | None = None, values: dict[str, str] | None = None) -> web.Response:
    s = _unlocked(request)
    roles.require(s, "intake")
    app_id = request.match_info["id"]
    found = await delivery.one(request.app[STORE].db, app_id) if ID_RE.match(app_id) else None
    if found is None:
        raise HttpError("Заяву не знайдено", code="not_found", status=404)
    ctx = {"session": s, "app": found, "service": request.app[CATALOG].services.get(found["service_code"]), "error": error,
           "values": values or {}}
    return await _page(request, "handover.html", ctx, status=422 if error else 200)


async def handover_submit(request: web.Request) -> web.Response:
    """The result was handed over at the van: who received it and their document, sealed; HQ gets "issued"."""
    s = _unlocked(request)
    roles.require(s, "intake")
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    app_id = request.match_info["id"]
    values = {k: str(form.get(k, "")) for k in ("receiver", "receiver_document", "relation")}
    found = await delivery.one(request.app[STORE].db, app_id) if ID_RE.match(app_id) else None
    if found is None:
        raise HttpError("Заяву не знайдено", code="not_found", status=404)
    try:
        await handover.record(request.app[STORE], app_id, values["receiver"], values["receiver_document"], values["relation"], s.username)
    except handover.HandoverError as exc:
        return await handover_form(request, str(exc), values)
    raise web.HTTPSeeOther(f"/applications?handed={found['number']}")


async def attachments_add(request: web.Request) -> web.Response:
    """Add photos or scans to a saved application (multipart; the camera of the tablet or a file)."""
    s, app_id, uploads, upload_error = await _upload_to_application(request)
    back = f"/applications/{app_id}/receipt"
    if upload_error or not uploads:
        # A flash in the session, not the URL: a file name may carry a citizen's name.
        s.data["attach_error"] = upload_error or i18n.translate("attach.none_chosen", language(request))
        raise web.HTTPSeeOther(back)
    att = request.app[ATTACHMENTS]
    try:
        ids = await att.add(app_id, uploads, s.username)
    except KeyError as exc:
        raise HttpError("Заяву не знайдено", code="not_found", status=404) from exc
    except AttachmentError as exc:
        s.data["attach_error"] = str(exc)
        raise web.HTTPSeeOther(back) from exc
    raise web.HTTPSeeOther(back + f"?attached={len(ids)}")


async def attachment_view(request: web.Request) -> web.StreamResponse:
    """The administrator checks a photo on the van: an audited read, served inline, never sniffed."""
    s = _unlocked(request)
    app_id, att_id = request.match_info["id"], request.match_info["att"]
    if not (ID_RE.match(app_id) and ID_RE.match(att_id)):
        raise HttpError("Файл не знайдено", code="not_found", status=404)
    try:
        info, name, data = await request.app[ATTACHMENTS].read(att_id, s.username)
    except KeyError as exc:
        raise HttpError("Файл не знайдено", code="not_found", status=404) from exc
    except CryptoError as exc:
        raise HttpError("Файл уже передано до ЦНАП, а його копію на фургоні знищено за строком зберігання", code="shredded", status=410) from exc
    if info.application_id != app_id:
        raise HttpError("Файл не знайдено", code="not_found", status=404)
    return web.Response(body=data, content_type=info.content_type, headers={
        # Photos open in the tab; a PDF downloads (a sandboxed document cannot run the browser's PDF viewer).
        "Content-Disposition": f"{'inline' if info.content_type.startswith('image/') else 'attachment'}; filename*=UTF-8''{quote(name)}",
        "Cache-Control": "no-store",
        "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'",
    })


APPLICANT_FIELDS = ("surname", "given_name", "patronymic", "birth_date", "rnokpp", "rnokpp_absent_reason", "unzr",
                    "document_type", "document_number", "phone", "email", "address", "sms_consent")


CARD_CHOICES: dict[str, Any] = {"absent_reasons": RNOKPP_ABSENT_REASONS, "document_types": DOCUMENT_TYPES}


def _unlocked(request: web.Request) -> Session:
    s = _session_or_redirect(request)
    if request.app[STORE].locked:
        raise Locked("Сховище заблоковане: увійдіть знову, щоб працювати з даними громадян")
    return s


async def applicants_page(request: web.Request) -> web.Response:
    s = _unlocked(request)
    return await _page(request, "applicants.html", {"session": s, "query": {}, "searched": False, "found": [], **CARD_CHOICES})


async def applicants_search(request: web.Request) -> web.Response:
    """POST, never GET: identifiers stay out of URLs, logs and browser history."""
    s = _unlocked(request)
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    q = {k: str(form.get(k, "")).strip() for k in ("rnokpp", "unzr", "surname", "birth_date", "document_type", "document_number")}
    birth = q["birth_date"]
    if birth:
        try:
            birth = validate_birth_date(birth, date.fromtimestamp(request.app[CONFIG].clock.now())).isoformat()
        except FieldError as exc:
            ctx = {"session": s, "query": q, "searched": False, "found": [], "message": exc.text(language(request)), **CARD_CHOICES}
            return await _page(request, "applicants.html", ctx, status=422)
    document = None
    if q["document_type"] and q["document_number"]:
        try:  # the card stores the normalised number: probe with the same
            document = (q["document_type"], validate_document(q["document_type"], q["document_number"]))
        except FieldError as exc:
            ctx = {"session": s, "query": q, "searched": False, "found": [], "message": exc.text(language(request)), **CARD_CHOICES}
            return await _page(request, "applicants.html", ctx, status=422)
    found = await request.app[STORE].find_applicants(s.username, rnokpp=q["rnokpp"] or None, unzr=q["unzr"] or None, document=document,
                                                     surname=q["surname"] or None, birth_date=birth or None)
    return await _page(request, "applicants.html", {"session": s, "query": q, "searched": True, "found": found, **CARD_CHOICES})


async def applicant_new(request: web.Request) -> web.Response:
    s = _unlocked(request)
    return await _page(request, "applicant_new.html", {"session": s, "values": {}, "errors": {}, **CARD_CHOICES})


async def applicant_create(request: web.Request) -> web.Response:
    s = _unlocked(request)
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    values = {k: str(form.get(k, "")) for k in APPLICANT_FIELDS}
    try:
        inp = parse_applicant(values, date.fromtimestamp(request.app[CONFIG].clock.now()), language(request))
    except ValidationFailed as exc:
        msg = i18n.translate("intake.fix_fields", language(request))
        return await _page(request, "applicant_new.html", {"session": s, "values": values, "errors": exc.fields, "message": msg, **CARD_CHOICES}, 422)
    applicant_id = await request.app[STORE].create_applicant(inp.fields, s.username)
    raise web.HTTPSeeOther(f"/applications/new?applicant={applicant_id}")


async def visits_page(request: web.Request) -> web.Response:
    s = _unlocked(request)
    try:
        visits = await request.app[VISITS].list(s.username, s.role)
    except StoreLocked as exc:
        raise Locked(str(exc)) from exc
    return await _page(request, "visits.html", {"session": s, "visits": visits})


async def visit_action(request: web.Request) -> web.Response:
    s = _unlocked(request)
    form = await request.post()
    request.app[SESSIONS].check_csrf(s, str(form.get("csrf", "")))
    vid, action = request.match_info["id"], request.match_info["action"]
    if not await request.app[VISITS].visible(vid, s.username, s.role):
        raise HttpError("Візит не знайдено", code="not_found", status=404)
    try:
        if action == "start":
            await request.app[VISITS].start(vid, s.username)
        elif action == "finish":
            await request.app[VISITS].finish(vid, s.username)
        else:
            raise HttpError("Невідома дія", code="unknown_action", status=404)
    except VisitError as exc:
        raise HttpError(str(exc), code="visit_conflict", status=409) from exc
    raise web.HTTPSeeOther("/visits")


async def rate_form(request: web.Request) -> web.Response:
    """Public: a citizen rates one service event; sees nothing else and needs no login."""
    token = request.match_info["token"]
    try:
        open_ = await request.app[DESK].rating_open(token)
    except DeskError as exc:
        raise HttpError(str(exc), code="not_found", status=404) from exc
    return aiohttp_jinja2.render_template("rate.html", request, {"token": token, "done": not open_, "thanks": False, "error": None})


async def rate_submit(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    form = await request.post()
    try:
        score = int(str(form.get("score", "0")))
    except ValueError:
        score = 0
    try:
        await request.app[DESK].rate(token, score, str(form.get("comment", "")))
    except DeskError as exc:
        ctx = {"token": token, "done": "оцінено" in str(exc), "thanks": False, "error": i18n.translate_message(str(exc), language(request))}
        return aiohttp_jinja2.render_template("rate.html", request, ctx, status=422)
    return aiohttp_jinja2.render_template("rate.html", request, {"token": token, "done": True, "thanks": True, "error": None})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
    app.router.add_get("/lang/{lang}", set_language)
    app.router.add_get("/", today)
    app.router.add_post("/queue/{action}", queue_action)
    app.router.add_post("/prereg/{id}/arrived", prereg_arrived)
    app.router.add_get("/applications/new", intake_form)
    app.router.add_get("/applications", applications_page)
    app.router.add_get("/applicants", applicants_page)
    app.router.add_get("/visits", visits_page)
    app.router.add_post("/visits/{id}/{action}", visit_action)
    app.router.add_post("/applicants/search", applicants_search)
    app.router.add_get("/applicants/new", applicant_new)
    app.router.add_post("/applicants", applicant_create)
    app.router.add_post("/applications", intake_submit)
    app.router.add_get("/rate/{token}", rate_form)
    app.router.add_post("/rate/{token}", rate_submit)
    app.router.add_get("/applications/{id}/receipt", receipt)
    app.router.add_get("/applications/{id}/receipt.pdf", receipt_pdf)
    app.router.add_get("/applications/{id}/application", application_page)
    app.router.add_get("/applications/{id}/application.pdf", application_pdf)
    app.router.add_post("/applications/{id}/signature", signature_add)
    app.router.add_get("/applications/{id}/handover", handover_form)
    app.router.add_post("/applications/{id}/handover", handover_submit)
    app.router.add_post("/applications/{id}/attachments", attachments_add)
    app.router.add_get("/applications/{id}/attachments/{att}", attachment_view)
