"""The receipt as an A4 PDF, made on the node itself (no browser, no network).

fpdf2 writes the PDF; the Cyrillic text needs a TrueType font with Ukrainian
letters, taken from Debian's ``fonts-dejavu-core`` (bin/setup installs it) and
embedded (subset) in the file.  The QR code is drawn as vector squares from
segno's matrix, so no image library is involved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import segno
from fpdf import FPDF

from . import payqr

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
REGULAR, BOLD = "DejaVuSans.ttf", "DejaVuSans-Bold.ttf"


class FontMissing(RuntimeError):
    """No font with Cyrillic letters is installed (fonts-dejavu-core)."""


def font_dir() -> Path:
    for d in FONT_DIRS:
        if (d / REGULAR).exists() and (d / BOLD).exists():
            return d
    raise FontMissing("DejaVu fonts not found: apt-get install fonts-dejavu-core")


@dataclass(frozen=True)
class ReceiptData:
    title: str
    number_label: str
    number: str
    applicant_label: str
    applicant: str
    services_label: str
    services: list[str]  # "VAN-01-...-0001 — RES-01 · name"
    date_label: str
    date: str
    term_label: str
    term: str
    documents_label: str
    documents: list[str]
    notes_label: str
    notes: str
    qr_caption: str
    centre: str
    parties: list[tuple[str, str]] = field(default_factory=list)  # (label, value): the representative, the basis, the business
    # issue 18: fee and where to pay it (an NBU payment QR for a paid service), legal basis, delivery to HQ
    fee_label: str = ""
    fee: str = ""
    legal_basis_label: str = ""
    legal_basis: str = ""
    payment: list[str] = field(default_factory=list)
    payment_url: str = ""
    payment_caption: str = ""
    delivery_label: str = ""
    delivery: str = ""
    refusal_label: str = ""
    refusal: str = ""  # HQ's written reason for a refusal (issue 18 item 6)


def _qr(pdf: FPDF, text: str, x: float, y: float, size: float, payment: bool = False) -> None:
    """``payment``: the NBU's symbol (edge/payqr.py: its version bounds, and the hryvnia sign in a white circle at the centre)."""
    # segno picks a Micro QR for short text: phones and banking apps cannot read those
    qr = payqr.symbol(text) if payment else segno.make(text, error="m", micro=False)
    matrix = [list(row) for row in qr.matrix]
    n = len(matrix) + 8  # 4-module quiet zone on each side
    cell = size / n
    pdf.set_fill_color(0, 0, 0)
    for r, row in enumerate(matrix):
        c = 0
        while c < len(row):
            if not row[c]:
                c += 1
                continue
            start = c
            while c < len(row) and row[c]:
                c += 1
            # one rectangle per run of dark modules: a payment QR has thousands of modules
            pdf.rect(x + (start + 4) * cell, y + (r + 4) * cell, (c - start) * cell, cell, style="F")
    if payment:
        d = payqr.MARK * len(matrix) * cell
        left, top = x + (size - d) / 2, y + (size - d) / 2
        pdf.set_fill_color(255, 255, 255)
        pdf.ellipse(left, top, d, d, style="F")
        pdf.set_font("DejaVu", "B", d * 0.75 * 72 / 25.4)  # mm to pt
        pdf.set_xy(left, top)
        pdf.cell(d, d, "\u20b4", align="C")


def a4_document(title: str, creator: str) -> tuple[FPDF, float]:
    """An A4 page with DejaVu (Cyrillic) and 20 mm margins, and the width between them: receipts and application forms."""
    fonts = font_dir()
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_title(title)
    pdf.set_creator(creator)
    pdf.add_font("DejaVu", "", str(fonts / REGULAR))
    pdf.add_font("DejaVu", "B", str(fonts / BOLD))
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    return pdf, pdf.w - pdf.l_margin - pdf.r_margin


def render(d: ReceiptData) -> bytes:
    pdf, width = a4_document(f"{d.title} {d.number}", d.centre)
    pdf.set_font("DejaVu", "", 10)
    pdf.cell(width, 6, d.centre, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "B", 16)
    pdf.multi_cell(width - 50, 8, d.title, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("DejaVu", "", 12)
    pdf.cell(width - 50, 7, f"{d.number_label}:", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "B", 14)
    pdf.cell(width - 50, 8, d.number, new_x="LMARGIN", new_y="NEXT")
    _qr(pdf, d.number, pdf.w - pdf.r_margin - 45, 20, 45)

    def row(label: str, value: str) -> None:
        pdf.set_font("DejaVu", "B", 11)
        pdf.cell(width, 7, label, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("DejaVu", "", 11)
        pdf.multi_cell(width, 6, value, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)

    pdf.set_y(max(pdf.get_y(), 70) + 4)
    row(d.applicant_label, d.applicant)
    for label, value in d.parties:
        row(label, value)
    row(d.services_label, "\n".join(d.services))
    row(d.date_label, d.date)
    row(d.term_label, d.term)
    if d.fee:
        row(d.fee_label, d.fee)
    if d.payment_url:
        # The payment QR beside its details; a banking app reads the NBU format (edge/payqr.py).
        top = pdf.get_y()
        if top + 50 > pdf.h - pdf.b_margin:
            pdf.add_page()
            top = pdf.get_y()
        _qr(pdf, d.payment_url, pdf.l_margin, top, 48, payment=True)
        pdf.set_xy(pdf.l_margin + 52, top + 4)
        pdf.set_font("DejaVu", "", 9)
        pdf.multi_cell(width - 52, 5, "\n".join([*d.payment, d.payment_caption]), new_x="LMARGIN", new_y="NEXT")
        pdf.set_y(max(pdf.get_y(), top + 50))
    if d.legal_basis:
        row(d.legal_basis_label, d.legal_basis)
    if d.documents:
        row(d.documents_label, "\n".join(f"• {x}" for x in d.documents))
    if d.notes:
        row(d.notes_label, d.notes)
    if d.refusal:
        row(d.refusal_label, d.refusal)
    if d.delivery:
        row(d.delivery_label, d.delivery)
    pdf.ln(4)
    pdf.set_font("DejaVu", "", 9)
    pdf.multi_cell(width, 5, d.qr_caption, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
