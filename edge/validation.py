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
    s = sum(w * int(d) for w, d in zip(RNOKPP_WEIGHTS, digits[:9], strict=False))
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


# -- УНЗР: YYYYMMDD-NNNNC ------------------------------------------------------

UNZR_RE = re.compile(r"^(\d{8})-?(\d{5})$")
UNZR_WEIGHTS = (7, 3, 1)


def unzr_check_digit(twelve_digits: str) -> int:
    return sum(UNZR_WEIGHTS[i % 3] * int(d) for i, d in enumerate(twelve_digits)) % 10


def validate_unzr(raw: str) -> str:
    value = re.sub(r"\s+", "", raw or "")
    m = UNZR_RE.match(value)
    if not m:
        raise FieldError("УНЗР має формат РРРРММДД-NNNNC, наприклад 19550212-01110")
    birth, rest = m.group(1), m.group(2)
    try:
        date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))
    except ValueError as exc:
        raise FieldError("УНЗР: перші 8 цифр мають бути датою народження (РРРРММДД)") from exc
    if rest[:4] == "0000":
        raise FieldError("УНЗР: номер запису не може бути 0000")
    if unzr_check_digit(birth + rest[:4]) != int(rest[4]):
        raise FieldError("УНЗР має неправильну контрольну цифру")
    return f"{birth}-{rest}"


def unzr_birth_date(value: str) -> date:
    return date(int(value[:4]), int(value[4:6]), int(value[6:8]))


# -- identity documents ----------------------------------------------------------

# Latin letters that look like Cyrillic ones, typed by mistake on a Latin layout.
LOOKALIKES = str.maketrans({"A": "А", "B": "В", "C": "С", "E": "Е", "H": "Н", "I": "І", "K": "К", "M": "М",
                            "O": "О", "P": "Р", "T": "Т", "X": "Х", "Y": "У"})
PASSPORT_BOOK_RE = re.compile(r"^[А-ЩЬЮЯҐЄІЇ]{2}\d{6}$")
ID_CARD_RE = re.compile(r"^\d{9}$")
DOCUMENT_TYPES = ("id_card", "passport_book")


def validate_document(doc_type: str, raw: str) -> str:
    value = re.sub(r"[\s-]+", "", raw or "").upper()
    if doc_type == "id_card":
        if not ID_CARD_RE.match(value):
            raise FieldError("Номер ID-картки: 9 цифр")
        return value
    if doc_type == "passport_book":
        value = value.translate(LOOKALIKES)
        if not PASSPORT_BOOK_RE.match(value):
            raise FieldError("Паспорт-книжечка: 2 українські літери й 6 цифр, наприклад КВ123456")
        return value
    raise FieldError("Оберіть тип документа: ID-картка або паспорт-книжечка")


# -- phone -----------------------------------------------------------------------

def validate_phone(raw: str) -> str:
    digits = re.sub(r"[\s()\-]+", "", raw or "")
    if re.fullmatch(r"0\d{9}", digits):
        digits = "+38" + digits
    elif re.fullmatch(r"380\d{9}", digits):
        digits = "+" + digits
    if not re.fullmatch(r"\+380\d{9}", digits):
        raise FieldError("Телефон: +380 і 9 цифр, наприклад +380671234567 або 0671234567")
    return digits


# -- dates -------------------------------------------------------------------------

def validate_birth_date(raw: str, today: date) -> date:
    value = (raw or "").strip()
    try:
        if re.fullmatch(r"\d{2}\.\d{2}\.\d{4}", value):
            d = date(int(value[6:]), int(value[3:5]), int(value[:2]))
        else:
            d = date.fromisoformat(value)
    except ValueError as exc:
        raise FieldError("Дата народження: ДД.ММ.РРРР, наприклад 28.02.1948") from exc
    if d > today:
        raise FieldError("Дата народження не може бути в майбутньому")
    if d.year < 1900:
        raise FieldError("Дата народження: рік не раніше 1900")
    return d


def rnokpp_warnings(rnokpp: str, birth_date: date | None, sex: str | None) -> list[str]:
    """Disagreements worth a look; never a reason to refuse (real numbers have exceptions)."""
    out = []
    if birth_date is not None and rnokpp_birth_date(rnokpp) != birth_date:
        out.append("Дата народження не збігається з закодованою в РНОКПП: перевірте документи (буває, це правильно)")
    if sex in ("m", "f"):
        male = int(rnokpp[8]) % 2 == 1
        if male != (sex == "m"):
            out.append("Стать не збігається з закодованою в РНОКПП: перевірте документи (буває, це правильно)")
    return out
