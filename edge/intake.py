"""Validation of an intake submission, shared by the JSON API and the HTML form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .catalog import Catalog
from .errors import ValidationFailed
from .validation import FieldError, validate_name, validate_rnokpp


@dataclass(frozen=True)
class ApplicationInput:
    surname: str
    given_name: str
    rnokpp: str
    service_code: str


def parse_application(data: Mapping[str, object], catalog: Catalog) -> ApplicationInput:
    """All fields are checked; every problem is reported at once, field by field."""
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
    if not code:
        errors["service_code"] = "Оберіть послугу з переліку"
    elif code not in catalog.services:
        errors["service_code"] = f"Послуги з кодом «{code[:20]}» немає в переліку"
    if errors:
        raise ValidationFailed("Перевірте поля, позначені червоним", fields=errors)
    return ApplicationInput(values["surname"], values["given_name"], values["rnokpp"], code)
