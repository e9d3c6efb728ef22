"""The published service catalogue as one JSON document, and its shape check (HQ before publishing, the van before applying).

Shape (what HQ signs and retains on ``mo/v1/all/down/catalog``, version = envelope seq)::

    {"version": N,
     "categories": [{"code", "name"}, ...],
     "services": [{"code", "category", "name", "documents": [str, ...],
                   "term": {"days": int, "days_kind": "working" | "calendar"},        (optional)
                   "fee": {"free": true} | {"amount": "41.00", "recipient", "iban",   (optional; absent = not stated)
                            "recipient_code": ЄДРПОУ, "purpose"},
                   "legal_basis": str,                                              (optional)
                   "form": {"heading", "addressee", "body"}, ...}, ...],             (optional: the заява's template)
     "packages": [{"code", "name", "services": [service code, ...]}, ...]}

Extra keys (``national_id``, ``available_in``, ``note``...) are kept as they are.
Error messages are for people (Ukrainian) and name the place in the document.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from kit import data_path

MAX_SERVICES = 2000
DAYS_KINDS = ("working", "calendar")
MAX_TERM_DAYS = 366
MAX_FEE = Decimal("999999999.99")  # NBU payment QR: up to 12 characters of amount
# The placeholders a заява's template may use; edge/application_form.py fills them.
FORM_FIELDS = frozenset({
    "surname", "given_name", "patronymic", "full_name", "birth_date", "rnokpp", "unzr", "document", "address", "phone", "email",
    "service", "service_code", "number", "date", "centre", "notes",
})
_IBAN_UA = re.compile(r"^UA\d{27}$")
_EDRPOU = re.compile(r"^\d{8}$|^\d{10}$")  # ЄДРПОУ of a body, or a РНОКПП of a person receiving the fee


def iban_ok(iban: str) -> bool:
    """A Ukrainian IBAN: UA, 27 digits, ISO 13616 mod-97 check."""
    if not _IBAN_UA.match(iban):
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def fee_amount(fee: dict[str, Any]) -> Decimal | None:
    """The amount in UAH of a paid fee, or None if it is not a positive amount with at most 2 decimals."""
    try:
        amount = Decimal(str(fee.get("amount")))
    except (InvalidOperation, ValueError):
        return None
    if not amount.is_finite() or amount <= 0 or amount > MAX_FEE or amount.as_tuple().exponent < -2:  # type: ignore[operator]
        return None
    return amount


PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _placeholders(template: str) -> list[str] | None:
    """The {names} a template uses, or None if a brace is left unpaired."""
    if "{" in PLACEHOLDER.sub("", template) or "}" in PLACEHOLDER.sub("", template):
        return None
    return PLACEHOLDER.findall(template)


def fill(template: str, values: dict[str, str]) -> str:
    """Put the values into a template's {names}; plain substitution, never str.format (no attribute access, no padding)."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _service_extras(s: dict[str, Any], where: str) -> list[str]:
    """Term, fee, legal basis, form template: optional, but when present they must be usable on a receipt."""
    errors: list[str] = []
    term = s.get("term")
    if term is not None:
        days = term.get("days") if isinstance(term, dict) else None
        if not isinstance(days, int) or isinstance(days, bool) or not 0 <= days <= MAX_TERM_DAYS or term.get("days_kind") not in DAYS_KINDS:
            errors.append(f"{where}.term: потрібні days (ціле 0–{MAX_TERM_DAYS}; 0 — у день звернення) і days_kind (working або calendar)")
    fee = s.get("fee")
    if fee is not None:
        if not isinstance(fee, dict):
            errors.append(f"{where}.fee: потрібен об'єкт: {{\"free\": true}} або сума з реквізитами")
        elif fee.get("free") is True:
            if len(fee) > 1:
                errors.append(f"{where}.fee: безоплатна послуга не має суми й реквізитів")
        else:
            if fee_amount(fee) is None:
                errors.append(f"{where}.fee.amount: сума в гривнях, більша за нуль, не більше двох знаків після коми (рядком, напр. \"41.00\")")
            recipient = fee.get("recipient")
            if not _text(recipient) or len(str(recipient)) > 70:
                errors.append(f"{where}.fee.recipient: потрібне найменування отримувача (до 70 символів)")
            if not isinstance(fee.get("iban"), str) or not iban_ok(fee["iban"]):
                errors.append(f"{where}.fee.iban: потрібен IBAN України (UA і 27 цифр) з правильними контрольними цифрами")
            if not isinstance(fee.get("recipient_code"), str) or not _EDRPOU.match(fee["recipient_code"]):
                errors.append(f"{where}.fee.recipient_code: потрібен код ЄДРПОУ отримувача (8 цифр)")
            purpose = fee.get("purpose")
            names = _placeholders(purpose) if isinstance(purpose, str) else None
            if not _text(purpose) or len(str(purpose)) > 140 or names is None or set(names) - {"number"}:
                errors.append(f"{where}.fee.purpose: потрібне призначення платежу (до 140 символів; можна вставити {{number}} — номер заяви)")
    if "legal_basis" in s and not _text(s.get("legal_basis")):
        errors.append(f"{where}.legal_basis: потрібен непорожній рядок (до 500 символів)")
    form = s.get("form")
    if form is not None:
        if not isinstance(form, dict) or not all(isinstance(form.get(k), str) and form[k].strip() for k in ("heading", "addressee", "body")):
            errors.append(f"{where}.form: потрібні непорожні рядки heading, addressee, body")
        elif len(form["body"]) > 5000 or len(form["heading"]) > 200 or len(form["addressee"]) > 500:
            errors.append(f"{where}.form: задовгий шаблон (heading до 200, addressee до 500, body до 5000 символів)")
        else:
            for key in ("heading", "addressee", "body"):
                names = _placeholders(form[key])
                unknown = None if names is None else sorted(set(names) - FORM_FIELDS)
                if names is None:
                    errors.append(f"{where}.form.{key}: незакрита фігурна дужка")
                elif unknown:
                    errors.append(f"{where}.form.{key}: невідомі поля {', '.join('{' + u + '}' for u in unknown)}; можна: "
                                  + ", ".join(sorted(FORM_FIELDS)))
    return errors


def packaged() -> dict[str, Any]:
    """The catalogue shipped with the software: catalog.json with packages.json folded in."""
    doc: dict[str, Any] = json.loads(data_path("catalog.json").read_text(encoding="utf-8"))
    pdoc = json.loads(data_path("packages.json").read_text(encoding="utf-8"))
    doc["packages"] = pdoc["packages"]
    return doc


def _text(v: object) -> bool:
    return isinstance(v, str) and bool(v.strip()) and len(v) <= 500


def validate(doc: object) -> list[str]:
    """Everything wrong with a catalogue document, in Ukrainian; empty when it can be published/applied."""
    if not isinstance(doc, dict):
        return ["Каталог має бути JSON-об'єктом з полями categories, services, packages"]
    errors: list[str] = []
    cats = doc.get("categories")
    cat_codes: set[str] = set()
    if not isinstance(cats, list) or not cats:
        errors.append("categories: потрібен непорожній список категорій")
    else:
        for i, c in enumerate(cats):
            if not isinstance(c, dict) or not _text(c.get("code")) or not _text(c.get("name")):
                errors.append(f"categories[{i}]: потрібні непорожні рядки code і name")
            elif c["code"] in cat_codes:
                errors.append(f"categories[{i}]: код категорії «{c['code']}» повторюється")
            else:
                cat_codes.add(c["code"])
    services = doc.get("services")
    codes: set[str] = set()
    if not isinstance(services, list) or not services:
        errors.append("services: потрібен непорожній список послуг")
    elif len(services) > MAX_SERVICES:
        errors.append(f"services: забагато послуг (найбільше {MAX_SERVICES})")
    else:
        for i, s in enumerate(services):
            where = f"services[{i}]"
            if not isinstance(s, dict):
                errors.append(f"{where}: послуга має бути об'єктом")
                continue
            if not _text(s.get("code")):
                errors.append(f"{where}.code: потрібен непорожній рядок")
            elif s["code"] in codes:
                errors.append(f"{where}.code: код послуги «{s['code']}» повторюється")
            else:
                codes.add(s["code"])
            if not _text(s.get("name")):
                errors.append(f"{where}.name: потрібна назва послуги")
            if not isinstance(s.get("category"), str) or s["category"] not in cat_codes:
                errors.append(f"{where}.category: категорії «{s.get('category')}» немає в categories")
            docs = s.get("documents", [])
            if not isinstance(docs, list) or not all(_text(d) for d in docs):
                errors.append(f"{where}.documents: потрібен список назв документів (рядків)")
            errors += _service_extras(s, where)
    packages = doc.get("packages", [])
    pcodes: set[str] = set()
    if not isinstance(packages, list):
        errors.append("packages: потрібен список пакетів послуг")
    else:
        for i, p in enumerate(packages):
            where = f"packages[{i}]"
            if not isinstance(p, dict) or not _text(p.get("code")) or not _text(p.get("name")):
                errors.append(f"{where}: потрібні непорожні рядки code і name")
                continue
            if p["code"] in pcodes:
                errors.append(f"{where}.code: код пакета «{p['code']}» повторюється")
            pcodes.add(p["code"])
            members = p.get("services")
            # An empty package is allowed (offered at the Centre only); the van does not offer it.
            if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
                errors.append(f"{where}.services: потрібен список кодів послуг")
            elif codes:
                missing = [m for m in members if m not in codes]
                if missing:
                    errors.append(f"{where}.services: послуг {', '.join(map(str, missing))} немає в каталозі")
    return errors
