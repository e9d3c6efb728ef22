"""The payment request printed on a paid service's receipt, in the National Bank of Ukraine's QR format.

Format 002 of the NBU rules for QR codes of credit transfers (the citizen scans it with any
Ukrainian banking app, which fills in the transfer; the van never handles money).  The data
are 13 elements, one per line (LF), in this order:

    1 service tag "BCD"        5 BIC (reserved: empty)      9  recipient code (ЄДРПОУ)    13 display (empty)
    2 format version "002"     6 recipient (up to 70)       10 purpose code (empty)
    3 encoding "1" (UTF-8)     7 IBAN (UA + 27 digits)      11 reference (empty)
    4 function "UCT"           8 amount "UAH" + 302.80      12 purpose of payment (up to 140)

Format 002 encodes those bytes in Base64URL and prefixes ``https://bank.gov.ua/qr/`` so a
phone camera opens a bank app too.  The symbol follows the rules in force since 1 November 2025
(NBU resolution No. 97): QR version 10 to 20, error correction M (L when the data would need a
version above 20 at M), and the hryvnia sign in a white circle at the centre, which format 002
requires (``MARK``: both the page and the PDF draw it).  See docs/api.md ("Payment QR code").
"""

from __future__ import annotations

import base64
from decimal import Decimal

import segno

from sync.catalog_doc import fill

from .catalog import Fee

PREFIX = "https://bank.gov.ua/qr/"
PURPOSE_MAX = 140
MIN_VERSION, MAX_VERSION = 10, 20
# The hryvnia sign's white circle: its diameter as a share of the symbol's width (quiet zone not counted).
# Small enough that error correction restores the modules under it, at M and at L (the tests decode both).
MARK = 0.16


def amount_text(amount: str) -> str:
    """"UAH302.80": the currency code, then the amount with a dot and at most 2 decimals."""
    return f"UAH{Decimal(amount).quantize(Decimal('0.01'))}"


def purpose(fee: Fee, number: str) -> str:
    return fill(fee.purpose, {"number": number})[:PURPOSE_MAX]


def payload(fee: Fee, number: str) -> str:
    """The 13 lines of format 002 (without the URL and Base64URL wrapping)."""
    lines = ["BCD", "002", "1", "UCT", "", fee.recipient[:70], fee.iban, amount_text(fee.amount), fee.recipient_code, "", "",
             purpose(fee, number), ""]
    return "\n".join(lines)


def url(fee: Fee, number: str) -> str:
    """What the QR code holds: https://bank.gov.ua/qr/ + Base64URL(UTF-8 payload), RFC 4648 §5 with its padding."""
    return PREFIX + base64.urlsafe_b64encode(payload(fee, number).encode("utf-8")).decode("ascii")


def symbol(text: str) -> segno.QRCode:
    """The QR symbol for a payment URL, within the NBU's bounds (version 10..20, error correction M, else L)."""
    for error in ("m", "l"):
        qr = segno.make(text, error=error, micro=False, boost_error=False)
        if qr.version > MAX_VERSION:  # type: ignore[operator]
            continue
        if qr.version < MIN_VERSION:  # type: ignore[operator]
            qr = segno.make(text, error=error, version=MIN_VERSION, micro=False, boost_error=False)
        return qr
    raise ValueError("payment details too long for a QR code of version 20")
