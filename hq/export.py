"""Export to the back office: selected or filtered records as CSV or JSON, schema ``mo.records.v1`` (docs/hq.md: Export).

One export is one audit row in ``vault_exports`` (who, when, why, the filter
without the identifier, how many records, which format) plus one
``vault_audit`` row per record ("export: reason"), committed before anything
is decrypted, the same rule as opening a record.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timezone
from typing import Any

from .db import transaction
from .errors import HQError
from .store import HQStore
from .vault import RecordFilter, VaultKeys, read_record, search

SCHEMA = "mo.records.v1"
NUMBER = re.compile(r"[0-9 ]+")
FORMATS = ("json", "csv")
# CSV columns before the record's own fields (application.*, applicant.*, sorted); same names as the JSON keys.
META_COLUMNS = ("schema", "id", "number", "node_id", "service_code", "package", "created", "received", "acked", "status", "closed_at",
                "shredded", "applicant_state")


class ExportError(HQError):
    """The export cannot be made as asked (too many records, bad format)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(float(ts), timezone.utc).isoformat().replace("+00:00", "Z")


async def _history(store: HQStore, record_id: str) -> list[dict[str, Any]]:
    async with store.db.execute(
        "SELECT old_status, status, at, username, acked_at FROM status_edits WHERE record_id = ? ORDER BY at, hlc", (record_id,)
    ) as cur:
        return [{"from": r[0], "status": r[1], "at": iso(r[2]), "by": r[3], "van_confirmed_at": iso(r[4])} async for r in cur]


def _entry(rec: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    closed = [h["at"] for h in history if h["status"] in ("issued", "refused")]
    return {"id": rec["id"], "number": rec["number"], "node_id": rec["node_id"], "service_code": rec["service_code"],
            "package": rec["package"], "created": iso(rec["created"]), "received": iso(rec["received"]), "acked": iso(rec["acked"]),
            "status": rec["status"], "closed_at": closed[-1] if closed else None, "shredded": rec["shredded"],
            "applicant_state": rec["applicant_state"], "status_history": history,
            "application": rec["application"], "applicant": rec["applicant"]}


async def export(store: HQStore, keys: VaultKeys, f: RecordFilter, ids: list[str] | None, username: str, reason: str,
                 fmt: str, max_records: int) -> dict[str, Any]:
    """The export document (JSON shape); audited before decryption.  ``ids``: only these (a selection), still within the filter."""
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}", "bad_format")
    recs, total = await search(store, f, keys, limit=max_records, offset=0, ids=ids, cap=max_records)
    if total > max_records:
        raise ExportError(f"{total} records match; one export holds at most {max_records}: narrow the filter", "too_many")
    now = store.clock.now()
    described = f.described()
    if ids is not None:
        described["selected"] = str(len(ids))
    async with transaction(store.db):
        await store.db.execute(
            "INSERT INTO vault_exports(at, username, reason, filter, count, format) VALUES (?, ?, ?, ?, ?, ?)",
            (now, username, reason, json.dumps(described, ensure_ascii=False, sort_keys=True), len(recs), fmt))
        await store.db.executemany("INSERT INTO vault_audit(at, username, record_id, reason) VALUES (?, ?, ?, ?)",
                                   [(now, username, r["id"], f"export: {reason}") for r in recs])
    out = [_entry(await read_record(store, keys.seal, r["id"]), await _history(store, r["id"])) for r in recs]
    return {"schema": SCHEMA, "exported_at": iso(now), "exported_by": username, "reason": reason, "filter": described,
            "count": len(out), "records": out}


def _cell(value: Any) -> str:
    text = "" if value is None else ("true" if value is True else "false" if value is False else str(value))
    # A spreadsheet must not run a formula a free-text field happens to start with (CSV injection); a phone number stays as is.
    formula = text[:1] in ("=", "@", "\t", "\r") or (text[:1] in ("+", "-") and not NUMBER.fullmatch(text[1:]))
    return "'" + text if formula else text


def to_csv(doc: dict[str, Any]) -> str:
    """One row per record: the meta columns, then ``application.<field>`` and ``applicant.<field>`` (the union, sorted)."""
    app_keys = sorted({k for r in doc["records"] for k in r["application"]})
    card_keys = sorted({k for r in doc["records"] for k in r["applicant"]})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([*META_COLUMNS, *(f"application.{k}" for k in app_keys), *(f"applicant.{k}" for k in card_keys)])
    for r in doc["records"]:
        row = {**r, "schema": doc["schema"]}
        w.writerow([_cell(row.get(c)) for c in META_COLUMNS] + [_cell(r["application"].get(k)) for k in app_keys]
                   + [_cell(r["applicant"].get(k)) for k in card_keys])
    return buf.getvalue()


async def exports(store: HQStore, limit: int = 50) -> list[dict[str, Any]]:
    async with store.db.execute(
        "SELECT at, username, reason, filter, count, format FROM vault_exports ORDER BY id DESC LIMIT ?", (limit,)
    ) as cur:
        return [{"at": r[0], "username": r[1], "reason": r[2], "filter": json.loads(r[3]), "count": int(r[4]), "format": r[5]}
                async for r in cur]
