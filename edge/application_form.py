"""The application itself (заява) as a ЦНАП files it: the catalogue's template filled from the card and the intake (issue 18 item 9).

The template per service (``form``: heading, addressee, body with {placeholders}; sync/catalog_doc.py
FORM_FIELDS) comes with the catalogue HQ publishes.  What the card or the intake does not hold is
left as a blank line for the pen.  The inventory lists the service's documents the administrator
ticked as received (sealed with the record at intake).  The PDF is A4, fpdf2 + DejaVu like the receipt.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiosqlite
from fpdf import FPDF

from sync.catalog_doc import fill

from .catalog import Catalog, FormTemplate, Service
from .errors import ValidationFailed
from .receipt_pdf import BOLD, REGULAR, font_dir

BLANK = "____________________"
DEFAULT_FORM = FormTemplate(
    "ЗАЯВА", "Центр надання адміністративних послуг",
    "Я, {full_name}, дата народження {birth_date}, РНОКПП {rnokpp}, документ, що посвідчує особу: {document},\n"
    "адреса: {address}, контактний телефон: {phone},\nпрошу надати адміністративну послугу «{service}».\n{notes}",
)
# edge/validation.py DOCUMENT_TYPES; a type this table does not know is printed as its code
DOCUMENT_NAMES = {"id_card": "ID-картка", "passport_book": "паспорт громадянина України (книжечка)"}


def parse_documents_received(raw: object, catalog: Catalog, codes: tuple[str, ...]) -> list[str] | None:
    """The documents ticked at intake: each must be one the chosen service(s) list.  None when not given at all."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(d, str) for d in raw) or len(raw) > 100:
        raise ValidationFailed("Перевірте поля, позначені червоним", fields={"documents_received": "перелік назв документів (рядків)"})
    allowed: list[str] = []
    for code in codes:
        svc = catalog.services.get(code)
        allowed += [d for d in (svc.documents if svc else ()) if d not in allowed]
    unknown = [d for d in raw if d not in allowed]
    if unknown:
        raise ValidationFailed("Перевірте поля, позначені червоним", fields={
            "documents_received": f"документа «{unknown[0][:80]}» немає в переліку документів послуги"})
    return [d for d in allowed if d in raw]  # the catalogue's order, each once


async def applicant_of(db: aiosqlite.Connection, app_id: str) -> str | None:
    async with db.execute("SELECT applicant_id FROM applications WHERE id = ?", (app_id,)) as cur:
        row = await cur.fetchone()
    return None if row is None or row[0] is None else str(row[0])


def received(rec: Mapping[str, str]) -> list[str] | None:
    """The sealed inventory of an application, or None if it was made before inventories (or through an old client)."""
    raw = rec.get("documents_received")
    if not raw:
        return None
    try:
        docs = json.loads(raw)
    except ValueError:
        return None
    return [str(d) for d in docs] if isinstance(docs, list) else None


def _dmy(iso: str) -> str:
    """The card keeps ISO dates; a Ukrainian form writes ДД.ММ.РРРР."""
    parts = iso.split("-")
    return f"{parts[2]}.{parts[1]}.{parts[0]}" if len(parts) == 3 and len(parts[0]) == 4 else iso


def values(rec: Mapping[str, str], card: Mapping[str, str] | None, service: Service | None, date: str, centre: str) -> dict[str, str]:
    """What the placeholders stand for; the card (when the application was filed for one) fills the rest."""
    c = dict(card or {})
    surname = rec.get("surname") or c.get("surname", "")
    given = rec.get("given_name") or c.get("given_name", "")
    patronymic = c.get("patronymic", "")
    doc = ""
    if c.get("document_number"):
        doc = f"{DOCUMENT_NAMES.get(c.get('document_type', ''), c.get('document_type', ''))} {c['document_number']}".strip()
    out = {
        "surname": surname, "given_name": given, "patronymic": patronymic,
        "full_name": " ".join(x for x in (surname, given, patronymic) if x),
        "birth_date": _dmy(c.get("birth_date", "")), "rnokpp": rec.get("rnokpp") or c.get("rnokpp", ""), "unzr": c.get("unzr", ""),
        "document": doc, "address": c.get("address", ""), "phone": c.get("phone", ""), "email": c.get("email", ""),
        "service": service.name if service else rec.get("service_code", ""), "service_code": rec.get("service_code", ""),
        "number": rec.get("number", ""), "date": date, "centre": centre, "notes": rec.get("notes", ""),
    }
    return {k: (v if v or k == "notes" else BLANK) for k, v in out.items()}


@dataclass(frozen=True)
class FormText:
    heading: str
    addressee: str
    body: str
    number_label: str
    number: str
    inventory_label: str
    inventory: list[str]
    inventory_none: str
    date_label: str
    date: str
    signature_label: str
    centre: str
    signature_png: bytes | None = None  # the citizen's signature from the tablet, when given
    extra: list[str] = field(default_factory=list)


def text(service: Service | None, vals: dict[str, str]) -> tuple[str, str, str]:
    form = service.form if service is not None and service.form is not None else DEFAULT_FORM
    return fill(form.heading, vals), fill(form.addressee, vals), fill(form.body, vals).strip()


def render(d: FormText) -> bytes:
    fonts = font_dir()
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_title(f"{d.heading} {d.number}")
    pdf.set_creator(d.centre)
    pdf.add_font("DejaVu", "", str(fonts / REGULAR))
    pdf.add_font("DejaVu", "B", str(fonts / BOLD))
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin
    pdf.set_font("DejaVu", "", 11)
    pdf.set_x(pdf.l_margin + width / 2)
    pdf.multi_cell(width / 2, 6, d.addressee, align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(8)
    pdf.set_font("DejaVu", "B", 16)
    pdf.cell(width, 10, d.heading, align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 10)
    pdf.cell(width, 6, f"{d.number_label}: {d.number}", align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    pdf.set_font("DejaVu", "", 12)
    pdf.multi_cell(width, 7, d.body, align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    pdf.set_font("DejaVu", "B", 11)
    pdf.cell(width, 7, d.inventory_label, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 11)
    lines = [f"{i}. {x}" for i, x in enumerate(d.inventory, 1)] or [d.inventory_none]
    pdf.multi_cell(width, 6, "\n".join(lines), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(10)
    pdf.cell(width / 2, 7, f"{d.date_label}: {d.date}")
    top = pdf.get_y()
    if d.signature_png:
        pdf.image(io.BytesIO(d.signature_png), x=pdf.l_margin + width / 2 + 10, y=top - 14, w=60, h=20)
    pdf.cell(width / 2, 7, f"{d.signature_label}: ______________", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("DejaVu", "", 8)
    pdf.multi_cell(width, 4, d.centre, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
