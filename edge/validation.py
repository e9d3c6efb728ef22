"""Server-side validation of intake fields, with messages for people in Ukrainian and English.

Each checker returns the normalised value or raises FieldError, which names
its message by an edge/i18n.py key (``.message`` is the Ukrainian text, the
JSON API's; ``.text(lang)`` the page's).  ``warnings``
are returned separately: a real РНОКПП may disagree with the birth date or
sex recorded elsewhere, which is worth a warning and never a refusal.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from . import i18n

RNOKPP_WEIGHTS = (-1, 5, 7, 9, 4, 6, 10, 5, 7)
RNOKPP_EPOCH = date(1899, 12, 31)
NAME_RE = re.compile(r"^[А-ЩЬЮЯҐЄІЇа-щьюяґєії'’ʼ\- ]{1,60}$")


class FieldError(ValueError):
    def __init__(self, key: str, **params: str) -> None:
        self.key, self.params = key, params
        self.message = self.text(i18n.DEFAULT)
        super().__init__(self.message)

    def text(self, lang: str) -> str:
        # a parameter that is itself a catalogue key (a field's name) is translated too
        args = {k: i18n.translate(v, lang) if v in i18n.CATALOGUE else v for k, v in self.params.items()}
        return i18n.translate(self.key, lang).format(**args)


def rnokpp_check_digit(digits: str) -> int:
    s = sum(w * int(d) for w, d in zip(RNOKPP_WEIGHTS, digits[:9], strict=False))
    return (s % 11) % 10  # Python's % is already non-negative


def rnokpp_birth_date(value: str) -> date:
    return RNOKPP_EPOCH + timedelta(days=int(value[:5]))


def validate_rnokpp(raw: str) -> str:
    value = re.sub(r"\s+", "", raw or "")
    if not value:
        raise FieldError("err.rnokpp.required")
    if not value.isdigit() or len(value) != 10:
        raise FieldError("err.rnokpp.digits")
    if rnokpp_check_digit(value) != int(value[9]):
        raise FieldError("err.rnokpp.check")
    return value


# A field's name in messages: the catalogue key of the word (both languages).
NAME_WHAT = {"прізвище": "what.surname", "ім'я": "what.given_name", "по батькові": "what.patronymic"}
# A foreigner's or a stateless person's name is written as in their passport.
LATIN_NAME_RE = re.compile(r"^[A-Za-zÀ-ÖØ-öø-ÿ'’ʼ\- .]{1,60}$")


def validate_name(raw: str, what: str, latin: bool = False) -> str:
    value = " ".join((raw or "").split())
    value = value.replace("’", "'").replace("ʼ", "'")
    if not value:
        raise FieldError("err.name.required", what=NAME_WHAT.get(what, what))
    if not (NAME_RE.match(value) or (latin and LATIN_NAME_RE.match(value))):
        raise FieldError("err.name.latin" if latin else "err.name.letters", what=NAME_WHAT.get(what, what))
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
        raise FieldError("err.unzr.format")
    birth, rest = m.group(1), m.group(2)
    try:
        date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))
    except ValueError as exc:
        raise FieldError("err.unzr.date") from exc
    if rest[:4] == "0000":
        raise FieldError("err.unzr.zero")
    if unzr_check_digit(birth + rest[:4]) != int(rest[4]):
        raise FieldError("err.unzr.check")
    return f"{birth}-{rest}"


def unzr_birth_date(value: str) -> date:
    return date(int(value[:4]), int(value[4:6]), int(value[6:8]))


# -- identity documents ----------------------------------------------------------

# Latin letters that look like Cyrillic ones, typed by mistake on a Latin layout.
LOOKALIKES = str.maketrans({"A": "А", "B": "В", "C": "С", "E": "Е", "H": "Н", "I": "І", "K": "К", "M": "М",
                            "O": "О", "P": "Р", "T": "Т", "X": "Х", "Y": "У"})
PASSPORT_BOOK_RE = re.compile(r"^[А-ЩЬЮЯҐЄІЇ]{2}\d{6}$")
ID_CARD_RE = re.compile(r"^\d{9}$")
# The seeds' services need more than the two passports: a child's birth certificate (єМалятко, CIV-01), the IDP
# certificate (SOC-08), a veteran's certificate (VET-01), and a foreigner's passport or residence permit.
DOCUMENT_TYPES = ("id_card", "passport_book", "birth_certificate", "idp_certificate", "veteran_certificate",
                  "foreign_passport", "residence_permit")
# Birth certificate: a Roman-numeral series part, a hyphen, 2 Cyrillic letters, 6 digits ("І-КГ 123456").
BIRTH_CERT_RE = re.compile(r"^([IVXІХ]{1,5})-?([A-ZА-ЩЬЮЯҐЄІЇ]{2})(\d{6})$")
ROMAN_RE = re.compile(r"^(?=[IVX])X{0,3}(IX|IV|V?I{0,3})$")
VETERAN_RE = re.compile(r"^[А-ЩЬЮЯҐЄІЇ]{2,3}\d{6}$")
FOREIGN_PASSPORT_RE = re.compile(r"^[A-Z0-9]{5,15}$")
# Cyrillic letters that look like Latin ones, in a foreign passport's number typed on a Ukrainian layout.
TO_LATIN = str.maketrans({v: k for k, v in {"A": "А", "B": "В", "C": "С", "E": "Е", "H": "Н", "I": "І", "K": "К", "M": "М",
                                            "O": "О", "P": "Р", "T": "Т", "X": "Х", "Y": "У"}.items()})


def validate_document(doc_type: str, raw: str) -> str:
    compact = re.sub(r"[\s№]+", "", raw or "").upper()
    value = compact.replace("-", "")
    if doc_type == "id_card":
        if not ID_CARD_RE.match(value):
            raise FieldError("err.doc.id_card")
        return value
    if doc_type == "passport_book":
        value = value.translate(LOOKALIKES)
        if not PASSPORT_BOOK_RE.match(value):
            raise FieldError("err.doc.passport_book")
        return value
    if doc_type == "birth_certificate":
        m = BIRTH_CERT_RE.match(compact)
        roman = m.group(1).translate(TO_LATIN) if m else ""
        letters = m.group(2).translate(LOOKALIKES) if m else ""
        if not m or not ROMAN_RE.match(roman) or not re.fullmatch(r"[А-ЩЬЮЯҐЄІЇ]{2}", letters):
            raise FieldError("err.doc.birth_certificate")
        return f"{roman}-{letters}{m.group(3)}"
    if doc_type == "idp_certificate":
        if not re.fullmatch(r"\d{14}", value):
            raise FieldError("err.doc.idp_certificate")
        return f"{value[:4]}-{value[4:]}"
    if doc_type == "veteran_certificate":
        value = value.translate(LOOKALIKES)
        if not VETERAN_RE.match(value):
            raise FieldError("err.doc.veteran_certificate")
        return value
    if doc_type == "foreign_passport":
        value = value.translate(TO_LATIN)
        if not FOREIGN_PASSPORT_RE.match(value):
            raise FieldError("err.doc.foreign_passport")
        return value
    if doc_type == "residence_permit":
        if not ID_CARD_RE.match(value):
            raise FieldError("err.doc.residence_permit")
        return value
    raise FieldError("err.doc.type")


# -- ЄДРПОУ (a legal entity's code in the state register) -----------------------------

def edrpou_check_digit(digits: str) -> int:
    """The official algorithm: weights 1..7, or 7,1..6 for codes between 30000000 and 60000000; a remainder of 10
    gives a second pass with every weight +2; a second 10 counts as 0."""
    seven = [int(d) for d in digits[:7]]
    n = int(digits[:8].ljust(8, "0"))
    weights = [7, 1, 2, 3, 4, 5, 6] if 30000000 < n < 60000000 else [1, 2, 3, 4, 5, 6, 7]
    r = sum(w * d for w, d in zip(weights, seven, strict=True)) % 11
    if r == 10:
        r = sum((w + 2) * d for w, d in zip(weights, seven, strict=True)) % 11
    return 0 if r == 10 else r


def validate_edrpou(raw: str) -> str:
    value = re.sub(r"\s+", "", raw or "")
    if not re.fullmatch(r"\d{8}", value):
        raise FieldError("err.edrpou.digits")
    if edrpou_check_digit(value) != int(value[7]):
        raise FieldError("err.edrpou.check")
    return value


# -- phone -----------------------------------------------------------------------

def validate_phone(raw: str) -> str:
    digits = re.sub(r"[\s()\-]+", "", raw or "")
    if re.fullmatch(r"0\d{9}", digits):
        digits = "+38" + digits
    elif re.fullmatch(r"380\d{9}", digits):
        digits = "+" + digits
    if not re.fullmatch(r"\+380\d{9}", digits):
        raise FieldError("err.phone")
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
        raise FieldError("err.birth_date.format") from exc
    if d > today:
        raise FieldError("err.birth_date.future")
    if d.year < 1900:
        raise FieldError("err.birth_date.old")
    return d


def validate_past_date(raw: str, today: date | None) -> date:
    """A document's date (a power of attorney, a decision): ДД.ММ.РРРР or ISO, not in the future."""
    value = (raw or "").strip()
    try:
        if re.fullmatch(r"\d{2}\.\d{2}\.\d{4}", value):
            d = date(int(value[6:]), int(value[3:5]), int(value[:2]))
        else:
            d = date.fromisoformat(value)
    except ValueError as exc:
        raise FieldError("err.date.format") from exc
    if (today is not None and d > today) or d.year < 1900:
        raise FieldError("err.date.range")
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
