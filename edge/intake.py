"""The intake service: one set of checks, limits and errors for the HTML form and the JSON API.

``check_intake`` validates a submission (every problem at once, field by
field, as ``ValidationFailed``), ``save_intake`` stores it; the page
(edge/views.py) and ``POST /api/v1/applications`` (edge/api.py) both call
them, so they refuse the same inputs with the same field errors.  The only
difference is the caller's: the page asks for the consent checkbox (the API
contract never had it), and only the page carries files.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date

from .catalog import Catalog
from .errors import Locked, ValidationFailed
from .store import SavedApplication, Store
from .validation import (
    FieldError, rnokpp_warnings, unzr_birth_date, validate_birth_date, validate_document, validate_name, validate_phone,
    validate_rnokpp, validate_unzr,
)


@dataclass(frozen=True)
class ApplicationInput:
    surname: str
    given_name: str
    rnokpp: str
    service_codes: tuple[str, ...]
    package_code: str | None = None

    @property
    def service_code(self) -> str:
        return self.service_codes[0]


def parse_application(data: Mapping[str, object], catalog: Catalog, require_consent: bool = False) -> ApplicationInput:
    """All fields are checked; every problem is reported at once, field by field.

    Either ``service_code`` or ``package_code`` (a life-situation package: one
    application per service in it) names what the citizen asks for.
    """
    errors: dict[str, str] = {}
    values: dict[str, str] = {}

    def get(name: str) -> str:
        v = data.get(name, "")
        return v if isinstance(v, str) else ""

    checks = {
        "surname": lambda v: validate_name(v, "прізвище"),
        "given_name": lambda v: validate_name(v, "ім'я"),
        "rnokpp": validate_rnokpp,
    }
    for name, check in checks.items():
        try:
            values[name] = check(get(name))
        except FieldError as exc:
            errors[name] = exc.message
    code = get("service_code").strip().upper()
    package = get("package_code").strip().upper()
    codes: tuple[str, ...] = ()
    if package:
        if package not in catalog.packages or not catalog.packages[package].services:
            errors["package_code"] = "Такого пакета послуг немає в переліку"
        else:
            codes = catalog.packages[package].services
    elif not code:
        errors["service_code"] = "Оберіть послугу з переліку або пакет послуг"
    elif code not in catalog.services:
        errors["service_code"] = f"Послуги з кодом «{code[:20]}» немає в переліку"
    else:
        codes = (code,)
    if require_consent and get("consent") not in ("on", "yes", "true", "1"):
        errors["consent"] = "Без згоди заявника на обробку персональних даних заяву прийняти не можна"
    if errors:
        raise ValidationFailed("Перевірте поля, позначені червоним", fields=errors)
    return ApplicationInput(values["surname"], values["given_name"], values["rnokpp"], codes, package or None)


NOTES_MAX = 2000  # characters, after line breaks are made single (a browser sends CR LF for each)
ID_RE = re.compile(r"^[0-9a-f]{32}$")
FIX_FIELDS = "Перевірте поля, позначені червоним"


@dataclass(frozen=True)
class Intake:
    """A checked submission, ready to store."""

    application: ApplicationInput
    applicant_id: str | None
    notes: str


async def check_intake(data: Mapping[str, object], catalog: Catalog, store: Store, *, require_consent: bool = False) -> Intake:
    """Every check of an intake; ``Locked`` while the store is locked, else ``ValidationFailed`` naming each bad field."""
    if store.locked:
        raise Locked("Сховище заблоковане: увійдіть знову, щоб приймати заяви")
    errors: dict[str, str] = {}
    inp: ApplicationInput | None = None
    try:
        inp = parse_application(data, catalog, require_consent)
    except ValidationFailed as exc:
        errors.update(exc.fields)
    notes = data.get("notes") or ""
    if isinstance(notes, str):
        notes = notes.replace("\r\n", "\n").strip()
    if not isinstance(notes, str) or len(notes) > NOTES_MAX:
        # Refused, never cut: what the administrator typed is kept on the form to shorten.
        errors["notes"] = f"Примітки: текст до {NOTES_MAX} символів"
    applicant_id = data.get("applicant_id") or None
    if applicant_id is not None and not (isinstance(applicant_id, str) and ID_RE.match(applicant_id) and await store.applicant_exists(applicant_id)):
        errors["applicant_id"] = "має бути ідентифікатором заявника"
    if errors or inp is None:
        raise ValidationFailed(FIX_FIELDS, fields=errors)
    assert isinstance(notes, str) and (applicant_id is None or isinstance(applicant_id, str))
    return Intake(inp, applicant_id, notes)


async def save_intake(store: Store, intake: Intake, actor: str,
                      then: Callable[[sqlite3.Connection, list[SavedApplication]], None] | None = None,
                      first_id: str | None = None, documents_received: list[str] | None = None) -> list[SavedApplication]:
    """Store a checked intake: one application per service, in one transaction (``then`` adds to it: the page's files,
    sealed beforehand for ``first_id``, the first application's id; ``documents_received``: the inventory, sealed)."""
    a = intake.application
    return await store.create_applications(a.surname, a.given_name, a.rnokpp, list(a.service_codes), actor, intake.applicant_id,
                                           a.package_code, notes=intake.notes, then=then, first_id=first_id,
                                           documents_received=documents_received)


CATEGORIES = ("age80", "disability1", "disability", "incapacitated", "idp", "veteran", "attack", "none")


@dataclass(frozen=True)
class ApplicantInput:
    """A validated applicant; every value is already normalised."""

    fields: dict[str, str]  # sensitive: sealed before storage
    warnings: tuple[str, ...]


def parse_applicant(data: Mapping[str, object], today: date) -> ApplicantInput:
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
            errors[name] = exc.message

    check("surname", lambda v: validate_name(v, "прізвище"))
    check("given_name", lambda v: validate_name(v, "ім'я"))
    check("patronymic", lambda v: validate_name(v, "по батькові"), optional=True)
    birth: date | None = None
    if get("birth_date"):
        try:
            birth = validate_birth_date(get("birth_date"), today)
            out["birth_date"] = birth.isoformat()
        except FieldError as exc:
            errors["birth_date"] = exc.message
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
            errors["document_number"] = exc.message
    check("phone", validate_phone, optional=True)
    if get("sms_consent") in ("on", "yes", "true", "1"):
        if "phone" in out or "phone" in errors:
            out["sms_consent"] = "yes"  # sealed with the card: HQ may text this phone when an application is ready
        else:
            errors["sms_consent"] = "Для SMS-повідомлень вкажіть номер телефону"
    email = get("email")
    if email:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email) or len(email) > 254:
            errors["email"] = "Електронна пошта має вигляд name@example.com"
        else:
            out["email"] = email
    address = get("address")
    if address:
        out["address"] = address[:300]
    cats = data.get("categories", [])
    if isinstance(cats, str):
        cats = [c for c in cats.split(",") if c]
    if not isinstance(cats, list) or any(c not in CATEGORIES for c in cats):
        errors["categories"] = "Невідома категорія заявника"
    elif cats:
        out["categories"] = ",".join(sorted(set(str(c) for c in cats)))
    if errors:
        raise ValidationFailed("Перевірте поля, позначені червоним", fields=errors)
    warnings: list[str] = []
    if "rnokpp" in out:
        warnings += rnokpp_warnings(out["rnokpp"], birth, None)
    if "unzr" in out and birth is not None and unzr_birth_date(out["unzr"]) != birth:
        warnings.append("Дата народження не збігається з УНЗР: перевірте документи")
    return ApplicantInput(out, tuple(warnings))
