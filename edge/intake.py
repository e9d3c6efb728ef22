"""The intake service: one set of checks, limits and errors for the HTML form and the JSON API.

``check_intake`` validates a submission (every problem at once, field by
field, as ``ValidationFailed``), ``save_intake`` stores it; the page
(edge/views.py) and ``POST /api/v1/applications`` (edge/api.py) both call
them, so they refuse the same inputs with the same field errors.  The only
difference is the caller's: the page asks for the consent checkbox (the API
contract never had it), and only the page carries files.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date

from . import i18n
from .catalog import Catalog
from .errors import Locked, ValidationFailed
from .store import SavedApplication, Store
from .validation import (
    FieldError, rnokpp_warnings, unzr_birth_date, validate_birth_date, validate_document, validate_edrpou, validate_name,
    validate_past_date, validate_phone, validate_rnokpp, validate_unzr,
)


# Why an applicant has no РНОКПП (the application then names them by a document or the УНЗР).
RNOKPP_ABSENT_REASONS = ("religious", "not_assigned", "foreigner")
# Who files for the applicant, and the basis each kind must show (a parent shows the child's birth certificate).
REPRESENTATIVE_KINDS = ("proxy", "guardian", "parent")
BUSINESS_KINDS = ("fop", "legal_entity")
BUSINESS_CATEGORY = "business"
# A legal entity being created has no ЄДРПОУ yet.
CREATES_ENTITY = ("BUS-03",)


@dataclass(frozen=True)
class ApplicationInput:
    surname: str
    given_name: str
    rnokpp: str  # "" when absent: then extra holds the reason and the document or УНЗР
    service_codes: tuple[str, ...]
    package_code: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # sealed with the identity: documents, representative, business

    @property
    def service_code(self) -> str:
        return self.service_codes[0]


def _section(data: Mapping[str, object], name: str) -> dict[str, str]:
    """A nested object in the JSON API (``"representative": {...}``) or flat ``representative_*`` fields of the page."""
    nested = data.get(name)
    src: Mapping[str, object] = nested if isinstance(nested, Mapping) else {
        k.removeprefix(name + "_"): v for k, v in data.items() if k.startswith(name + "_")}
    return {k: v.strip() for k, v in src.items() if isinstance(k, str) and isinstance(v, str) and v.strip()}


def parse_application(data: Mapping[str, object], catalog: Catalog, require_consent: bool = False, *,
                      lang: str = i18n.DEFAULT, today: date | None = None) -> ApplicationInput:
    """All fields are checked; every problem is reported at once, field by field (messages in ``lang``).

    Either ``service_code`` or ``package_code`` (a life-situation package: one
    application per service in it) names what the citizen asks for.  The
    applicant is named by a РНОКПП, or by ``rnokpp_absent_reason`` with a
    document or the УНЗР; ``representative`` and ``business`` are optional.
    """
    errors: dict[str, str] = {}
    extra: dict[str, str] = {}
    tr = functools.partial(i18n.translate, lang=lang)

    def get(name: str) -> str:
        v = data.get(name, "")
        return v.strip() if isinstance(v, str) else ""

    absent = get("rnokpp_absent_reason")
    if absent and absent not in RNOKPP_ABSENT_REASONS:
        errors["rnokpp_absent_reason"] = tr("err.rnokpp.absent_reason")
    latin = absent == "foreigner"
    values: dict[str, str] = {}
    for name, what in (("surname", "прізвище"), ("given_name", "ім'я")):
        try:
            values[name] = validate_name(get(name), what, latin=latin)
        except FieldError as exc:
            errors[name] = exc.text(lang)
    rnokpp = ""
    if absent and not get("rnokpp"):
        extra["rnokpp_absent_reason"] = absent
    else:
        try:
            rnokpp = validate_rnokpp(get("rnokpp"))
        except FieldError as exc:
            errors["rnokpp"] = exc.text(lang)
    if get("unzr"):
        try:
            extra["unzr"] = validate_unzr(get("unzr"))
        except FieldError as exc:
            errors["unzr"] = exc.text(lang)
    doc_type, doc_number = get("document_type"), get("document_number")
    if doc_type or doc_number:
        try:
            extra["document_number"] = validate_document(doc_type, doc_number)
            extra["document_type"] = doc_type
        except FieldError as exc:
            errors["document_number"] = exc.text(lang)
    if absent and "rnokpp_absent_reason" in extra and not (doc_number or get("unzr")):
        # the blind index and the returning-citizen search need some identifier
        errors["document_number"] = tr("err.rnokpp.absent_needs_document")

    code = get("service_code").upper()
    package = get("package_code").upper()
    codes: tuple[str, ...] = ()
    if package:
        if package not in catalog.packages or not catalog.packages[package].services:
            errors["package_code"] = tr("err.package.unknown")
        else:
            codes = catalog.packages[package].services
    elif not code:
        errors["service_code"] = tr("err.service.required")
    elif code not in catalog.services:
        errors["service_code"] = tr("err.service.unknown").format(code=code[:20])
    else:
        codes = (code,)
    if require_consent and get("consent") not in ("on", "yes", "true", "1"):
        errors["consent"] = tr("err.consent")

    rep = _section(data, "representative")
    if rep:
        _representative(rep, extra, errors, lang, today)
    biz = _section(data, "business")
    if biz:
        _business(biz, codes, catalog, rnokpp, extra, errors, lang)
    if errors:
        raise ValidationFailed(tr("intake.fix_fields"), fields=errors)
    return ApplicationInput(values["surname"], values["given_name"], rnokpp, codes, package or None, extra)


def _representative(rep: dict[str, str], extra: dict[str, str], errors: dict[str, str], lang: str, today: date | None) -> None:
    """A legal representative or a proxy: who they are, their document, the basis.  Sealed with the applicant."""
    tr = functools.partial(i18n.translate, lang=lang)
    kind = rep.get("kind", "")
    if kind not in REPRESENTATIVE_KINDS:
        errors["representative_kind"] = tr("err.rep.kind")
    else:
        extra["rep_kind"] = kind
    for name, what in (("surname", "прізвище"), ("given_name", "ім'я")):
        try:
            extra[f"rep_{name}"] = validate_name(rep.get(name, ""), what)
        except FieldError as exc:
            errors[f"representative_{name}"] = exc.text(lang)
    if rep.get("rnokpp"):
        try:
            extra["rep_rnokpp"] = validate_rnokpp(rep["rnokpp"])
        except FieldError as exc:
            errors["representative_rnokpp"] = exc.text(lang)
    try:
        extra["rep_document_number"] = validate_document(rep.get("document_type", ""), rep.get("document_number", ""))
        extra["rep_document_type"] = rep.get("document_type", "")
    except FieldError as exc:
        errors["representative_document_number"] = exc.text(lang)
    if kind in ("proxy", "guardian"):
        # a power of attorney (proxy) or the guardianship authority's decision (guardian): its number and date
        number = rep.get("basis_number", "")
        if not number or len(number) > 60:
            errors["representative_basis_number"] = tr(f"err.rep.basis_number.{kind}")
        else:
            extra["rep_basis_number"] = number
        try:
            extra["rep_basis_date"] = validate_past_date(rep.get("basis_date", ""), today).isoformat()
        except FieldError as exc:
            errors["representative_basis_date"] = exc.text(lang)


def _business(biz: dict[str, str], codes: tuple[str, ...], catalog: Catalog, rnokpp: str, extra: dict[str, str],
              errors: dict[str, str], lang: str) -> None:
    """A ФОП (its code is the person's РНОКПП) or a legal entity (ЄДРПОУ, name, the signatory's position)."""
    tr = functools.partial(i18n.translate, lang=lang)
    if codes and any(catalog.services[c].category != BUSINESS_CATEGORY for c in codes):
        errors["business_kind"] = tr("err.business.service")
        return
    kind = biz.get("kind", "")
    if kind not in BUSINESS_KINDS:
        errors["business_kind"] = tr("err.business.kind")
        return
    extra["business_kind"] = kind
    name = biz.get("name", "")
    if len(name) > 200:
        errors["business_name"] = tr("err.business.name")
    elif name:
        extra["business_name"] = name
    if kind == "fop":
        if not rnokpp:
            errors["business_kind"] = tr("err.business.fop_rnokpp")
        return
    if not name:
        errors["business_name"] = tr("err.business.name")
    if biz.get("edrpou") or not (codes and all(c in CREATES_ENTITY for c in codes)):
        try:
            extra["business_edrpou"] = validate_edrpou(biz.get("edrpou", ""))
        except FieldError as exc:
            errors["business_edrpou"] = exc.text(lang)
    position = biz.get("signatory_position", "")
    if not position or len(position) > 100:
        errors["business_signatory_position"] = tr("err.business.signatory")
    else:
        extra["business_signatory_position"] = position


NOTES_MAX = 2000  # characters, after line breaks are made single (a browser sends CR LF for each)
ID_RE = re.compile(r"^[0-9a-f]{32}$")
FIX_FIELDS = "Перевірте поля, позначені червоним"


@dataclass(frozen=True)
class Intake:
    """A checked submission, ready to store."""

    application: ApplicationInput
    applicant_id: str | None
    notes: str


async def check_intake(data: Mapping[str, object], catalog: Catalog, store: Store, *, require_consent: bool = False,
                       lang: str = i18n.DEFAULT, today: date | None = None) -> Intake:
    """Every check of an intake; ``Locked`` while the store is locked, else ``ValidationFailed`` naming each bad field
    (messages in ``lang``: the API keeps Ukrainian, the page asks for the UI's language)."""
    if store.locked:
        raise Locked("Сховище заблоковане: увійдіть знову, щоб приймати заяви")
    errors: dict[str, str] = {}
    inp: ApplicationInput | None = None
    try:
        inp = parse_application(data, catalog, require_consent, lang=lang, today=today)
    except ValidationFailed as exc:
        errors.update(exc.fields)
    notes = data.get("notes") or ""
    if isinstance(notes, str):
        notes = notes.replace("\r\n", "\n").strip()
    if not isinstance(notes, str) or len(notes) > NOTES_MAX:
        # Refused, never cut: what the administrator typed is kept on the form to shorten.
        errors["notes"] = i18n.translate("err.notes", lang).format(n=NOTES_MAX)
    applicant_id = data.get("applicant_id") or None
    if applicant_id is not None and not (isinstance(applicant_id, str) and ID_RE.match(applicant_id) and await store.applicant_exists(applicant_id)):
        errors["applicant_id"] = i18n.translate("err.applicant_id", lang)
    if errors or inp is None:
        raise ValidationFailed(i18n.translate("intake.fix_fields", lang), fields=errors)
    assert isinstance(notes, str) and (applicant_id is None or isinstance(applicant_id, str))
    return Intake(inp, applicant_id, notes)


async def save_intake(store: Store, intake: Intake, actor: str,
                      then: Callable[[sqlite3.Connection, list[SavedApplication]], None] | None = None,
                      first_id: str | None = None, documents_received: list[str] | None = None) -> list[SavedApplication]:
    """Store a checked intake: one application per service, in one transaction (``then`` adds to it: the page's files,
    sealed beforehand for ``first_id``, the first application's id; ``documents_received``: the inventory, sealed)."""
    a = intake.application
    return await store.create_applications(a.surname, a.given_name, a.rnokpp, list(a.service_codes), actor, intake.applicant_id,
                                           a.package_code, notes=intake.notes, then=then, first_id=first_id, extra=a.extra,
                                           documents_received=documents_received)


CATEGORIES = ("age80", "disability1", "disability", "incapacitated", "idp", "veteran", "attack", "none")


@dataclass(frozen=True)
class ApplicantInput:
    """A validated applicant; every value is already normalised."""

    fields: dict[str, str]  # sensitive: sealed before storage
    warnings: tuple[str, ...]


def parse_applicant(data: Mapping[str, object], today: date, lang: str = i18n.DEFAULT) -> ApplicantInput:
    """Required: surname, given_name, and РНОКПП or a reason it is absent.  The rest optional."""
    errors: dict[str, str] = {}
    out: dict[str, str] = {}

    def get(name: str) -> str:
        v = data.get(name, "")
        return v.strip() if isinstance(v, str) else ""

    def check(name: str, fn: Callable[[str], str], optional: bool = False) -> None:
        raw = get(name)
        if optional and not raw:
            return
        try:
            out[name] = fn(raw)
        except FieldError as exc:
            errors[name] = exc.text(lang)

    latin = get("rnokpp_absent_reason") == "foreigner"
    check("surname", lambda v: validate_name(v, "прізвище", latin))
    check("given_name", lambda v: validate_name(v, "ім'я", latin))
    check("patronymic", lambda v: validate_name(v, "по батькові", latin), optional=True)
    birth: date | None = None
    if get("birth_date"):
        try:
            birth = validate_birth_date(get("birth_date"), today)
            out["birth_date"] = birth.isoformat()
        except FieldError as exc:
            errors["birth_date"] = exc.text(lang)
    absent = get("rnokpp_absent_reason")
    if absent and not get("rnokpp"):
        out["rnokpp_absent_reason"] = absent[:200]
    else:
        check("rnokpp", validate_rnokpp)
    check("unzr", validate_unzr, optional=True)
    doc_type, doc_number = get("document_type"), get("document_number")
    if doc_type or doc_number:
        try:
            out["document_number"] = validate_document(doc_type, doc_number)
            out["document_type"] = doc_type
        except FieldError as exc:
            errors["document_number"] = exc.text(lang)
    check("phone", validate_phone, optional=True)
    if get("sms_consent") in ("on", "yes", "true", "1"):
        if "phone" in out or "phone" in errors:
            out["sms_consent"] = "yes"  # sealed with the card: HQ may text this phone when an application is ready
        else:
            errors["sms_consent"] = i18n.translate("err.sms_consent", lang)
    email = get("email")
    if email:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email) or len(email) > 254:
            errors["email"] = i18n.translate("err.email", lang)
        else:
            out["email"] = email
    address = get("address")
    if address:
        out["address"] = address[:300]
    cats = data.get("categories", [])
    if isinstance(cats, str):
        cats = [c for c in cats.split(",") if c]
    if not isinstance(cats, list) or any(c not in CATEGORIES for c in cats):
        errors["categories"] = i18n.translate("err.categories", lang)
    elif cats:
        out["categories"] = ",".join(sorted(set(str(c) for c in cats)))
    if errors:
        raise ValidationFailed(i18n.translate("intake.fix_fields", lang), fields=errors)
    warnings: list[str] = []
    if "rnokpp" in out:
        warnings += rnokpp_warnings(out["rnokpp"], birth, None)
    if "unzr" in out and birth is not None and unzr_birth_date(out["unzr"]) != birth:
        warnings.append("Дата народження не збігається з УНЗР: перевірте документи")
    return ApplicantInput(out, tuple(warnings))
