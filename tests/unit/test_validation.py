"""Identifier rules from the domain notes, with properties over generated inputs."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.validation import (
    FieldError, rnokpp_birth_date, rnokpp_check_digit, rnokpp_warnings, unzr_check_digit, validate_birth_date,
    validate_document, validate_name, validate_phone, validate_rnokpp, validate_unzr,
)


@pytest.mark.parametrize("value,born", [("1759013776", date(1948, 2, 28)), ("3184710691", date(1987, 3, 12))])
def test_known_rnokpp_are_valid_and_encode_birth_date(value: str, born: date) -> None:
    assert validate_rnokpp(value) == value
    assert rnokpp_birth_date(value) == born


@given(st.text(alphabet="0123456789", min_size=9, max_size=9))
def test_exactly_one_check_digit_is_accepted(nine: str) -> None:
    accepted = []
    for d in "0123456789":
        try:
            validate_rnokpp(nine + d)
            accepted.append(d)
        except FieldError:
            pass
    assert accepted == [str(rnokpp_check_digit(nine))]


@given(st.text(min_size=0, max_size=30))
def test_rnokpp_validator_never_crashes(raw: str) -> None:
    try:
        assert len(validate_rnokpp(raw)) == 10
    except FieldError as exc:
        assert exc.message


def test_rnokpp_mismatch_warns_but_does_not_refuse() -> None:
    assert rnokpp_warnings("1759013776", date(1948, 2, 28), "m") == []
    warnings = rnokpp_warnings("1759013776", date(1950, 1, 1), "f")
    assert len(warnings) == 2


def test_unzr_example_and_check_digit() -> None:
    assert validate_unzr("19550212-01110") == "19550212-01110"
    assert validate_unzr("1955021201110") == "19550212-01110"
    with pytest.raises(FieldError, match="контрольну"):
        validate_unzr("19550212-01111")
    with pytest.raises(FieldError, match="дат"):
        validate_unzr("19551312-01110")


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31)), st.integers(1, 9999))
def test_generated_unzr_round_trip(born: date, n: int) -> None:
    twelve = born.strftime("%Y%m%d") + f"{n:04d}"
    value = f"{twelve[:8]}-{twelve[8:]}{unzr_check_digit(twelve)}"
    assert validate_unzr(value) == value


def test_documents() -> None:
    assert validate_document("id_card", "000 123 456") == "000123456"
    assert validate_document("passport_book", "kb123456".upper()) == "КВ123456"  # Latin look-alikes become Cyrillic
    assert validate_document("passport_book", "КВ 123456") == "КВ123456"
    with pytest.raises(FieldError):
        validate_document("id_card", "12345678")
    with pytest.raises(FieldError):
        validate_document("passport_book", "QQ123456")


@pytest.mark.parametrize("raw", ["+380671234567", "0671234567", "380671234567", "+38 (067) 123-45-67"])
def test_phone_normalised(raw: str) -> None:
    assert validate_phone(raw) == "+380671234567"


@pytest.mark.parametrize("raw", ["", "12345", "+48123456789", "067123456"])
def test_bad_phone(raw: str) -> None:
    with pytest.raises(FieldError):
        validate_phone(raw)


def test_birth_date_formats_and_future() -> None:
    today = date(2026, 11, 22)
    assert validate_birth_date("28.02.1948", today) == date(1948, 2, 28)
    assert validate_birth_date("1948-02-28", today) == date(1948, 2, 28)
    with pytest.raises(FieldError, match="майбутньому"):
        validate_birth_date((today + timedelta(days=1)).isoformat(), today)


def test_names() -> None:
    assert validate_name("  Д’Артаньян-Коваль ", "прізвище") == "Д'Артаньян-Коваль"
    with pytest.raises(FieldError):
        validate_name("Smith", "прізвище")
