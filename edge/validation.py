"""Server-side validation of intake fields, with Ukrainian messages for people.

Each checker returns the normalised value or raises FieldError.  ``warnings``
are returned separately: a real РНОКПП may disagree with the birth date or
sex recorded elsewhere, which is worth a warning and never a refusal.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

RNOKPP_WEIGHTS = (-1, 5, 7, 9, 4, 6, 10, 5, 7)
RNOKPP_EPOCH = date(1899, 12, 31)
NAME_RE = re.compile(r"^[А-ЩЬЮЯҐЄІЇа-щьюяґєії'’ʼ\- ]{1,60}$")


class FieldError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def rnokpp_check_digit(digits: str) -> int:
    s = sum(w * int(d) for w, d in zip(RNOKPP_WEIGHTS, digits[:9]))
    return (s % 11) % 10  # Python's % is already non-negative


def rnokpp_birth_date(value: str) -> date:
    return RNOKPP_EPOCH + timedelta(days=int(value[:5]))


def validate_rnokpp(raw: str) -> str:
    value = re.sub(r"\s+", "", raw or "")
    if not value:
        raise FieldError("Вкажіть РНОКПП (10 цифр) або позначте, що його немає")
    if not value.isdigit() or len(value) != 10:
        raise FieldError("РНОКПП має складатися з 10 цифр")
    if rnokpp_check_digit(value) != int(value[9]):
        raise FieldError("РНОКПП має неправильну контрольну цифру: перевірте, чи не пропущено або не переставлено цифру")
    return value


def validate_name(raw: str, what: str) -> str:
    value = " ".join((raw or "").split())
    value = value.replace("’", "'").replace("ʼ", "'")
    if not value:
        raise FieldError(f"Вкажіть {what}")
    if not NAME_RE.match(value):
        raise FieldError(f"{what.capitalize()}: лише українські літери, апостроф, дефіс (до 60 символів)")
    return value
