"""The record vault: records open only with HQ's private key, for authorised users, each opening audited.

* Search: by number, date range, van, service and status on the plain
  metadata; by РНОКПП, УНЗР or document number through HQ's keyed index
  (``vault_index``: HMAC-SHA256 under a key derived from HQ's first sealing
  key, computed from the opened record by a supervised loop and on demand, so
  HQ's database never holds an identifier in plaintext).  Results come in
  pages (limit/offset) with the total.
* Opening: the reason is written to ``vault_audit`` before anything is
  decrypted; the application, its applicant card and whatever fields they
  carry (the van adds fields over time: they are shown generically), the
  status history and the delivery times.
* Export (hq/export.py) uses the same search and the same opening.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sync.crypto import OpeningKeys, SealedRecord, open_with_hq_key
from sync.errors import CryptoError

from .db import migrate, transaction
from .errors import HQError
from .store import HQStore

MIGRATIONS = [
    """
CREATE TABLE vault_index (
    doc_table TEXT NOT NULL, doc_id TEXT NOT NULL, kind TEXT NOT NULL, mac {BLOB} NOT NULL,
    PRIMARY KEY (doc_table, doc_id, kind)
);
CREATE INDEX vault_index_mac ON vault_index(mac);
CREATE TABLE vault_indexed (doc_table TEXT NOT NULL, doc_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, PRIMARY KEY (doc_table, doc_id));
CREATE TABLE vault_link (record_id TEXT PRIMARY KEY, applicant_id TEXT NOT NULL);
CREATE INDEX vault_link_applicant ON vault_link(applicant_id);
CREATE TABLE vault_exports (
    id {ID}, at DOUBLE PRECISION NOT NULL, username TEXT NOT NULL, reason TEXT NOT NULL, filter TEXT NOT NULL, count BIGINT NOT NULL,
    format TEXT NOT NULL
)
""",
]

# The statuses that close a case (retention counts from them, hq/retention.py).
CLOSED = ("issued", "refused")
# Identifier kinds the index holds, and the fields they come from.
ID_KINDS = ("rnokpp", "unzr", "document")
PAGE_MAX = 500
INDEX_BATCH = 200


class VaultError(HQError):
    """A record is missing or does not open."""


def index_key(first_seal: X25519PrivateKey) -> bytes:
    """The keyed index's key: derived from HQ's first sealing key, which stays after rotations (so the index stays valid)."""
    raw = first_seal.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"mo/v1|hq-vault-index").derive(raw)


@dataclass(frozen=True)
class VaultKeys:
    """HQ's sealing key(s), to open, and the index key, to MAC identifiers."""
    seal: OpeningKeys  # HQ's ring of sealing keys, newest first (sync.crypto.open_with_hq_key picks the one a wrap names)
    index: bytes

    @classmethod
    def of(cls, ring: X25519PrivateKey | Sequence[X25519PrivateKey]) -> VaultKeys:
        keys = [ring] if isinstance(ring, X25519PrivateKey) else list(ring)
        return cls(ring, index_key(keys[-1]))  # the ring is newest first: the last is HQ's first key


def normalise(value: str) -> str:
    """One spelling per identifier: no spaces or dashes, upper case (\"АА 123456\" = \"аа123456\", 19900101-01234 = 1990010101234)."""
    return re.sub(r"[\s\-–]", "", value).upper()


def mac(key: bytes, kind: str, value: str) -> bytes:
    return hmac.new(key, f"{kind}|{normalise(value)}".encode(), hashlib.sha256).digest()


def identifiers(fields: dict[str, str]) -> dict[str, str]:
    """The identifiers of an opened record the index covers."""
    out = {k: fields[k] for k in ("rnokpp", "unzr") if fields.get(k)}
    if fields.get("document_number"):
        out["document"] = fields["document_number"]
    return out


@dataclass
class RecordFilter:
    number: str = ""
    date_from: str = ""  # YYYY-MM-DD, local day
    date_to: str = ""
    node_id: str = ""
    service_code: str = ""
    status: str = ""
    identifier: str = ""  # РНОКПП, УНЗР or document number: searched through the keyed index only

    @classmethod
    def from_mapping(cls, q: Any) -> RecordFilter:
        return cls(**{k: str(q.get(k, "")).strip()[:60] for k in ("number", "date_from", "date_to", "node_id", "service_code", "status",
                                                                  "identifier")})

    def described(self) -> dict[str, str]:
        """The filter as audited: never the identifier itself (it is personal data), only that one was given."""
        d = {k: v for k, v in asdict(self).items() if v and k != "identifier"}
        if self.identifier:
            d["identifier"] = "(given)"
        return d


def _day_start(text: str) -> float:
    try:
        return datetime.combine(date.fromisoformat(text), datetime.min.time()).astimezone().timestamp()
    except ValueError as exc:
        raise VaultError(f"bad date {text!r}: expected YYYY-MM-DD") from exc


def _where(f: RecordFilter, key: bytes | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if f.number:
        clauses.append("r.number LIKE ?")
        params.append(f.number.upper().replace("%", "").replace("_", "") + "%")
    if f.date_from:
        clauses.append("r.created >= ?")
        params.append(_day_start(f.date_from))
    if f.date_to:
        clauses.append("r.created < ?")
        params.append(_day_start(f.date_to) + 86400.0)
    if f.node_id:
        clauses.append("r.node_id = ?")
        params.append(f.node_id)
    if f.service_code:
        clauses.append("r.service_code = ?")
        params.append(f.service_code)
    if f.status:
        clauses.append("COALESCE(s.status, 'accepted') = ?")
        params.append(f.status)
    if f.identifier:
        if key is None:
            raise VaultError("searching by identifier needs HQ's key")
        macs = [mac(key, kind, f.identifier) for kind in ID_KINDS]
        marks = ", ".join("?" * len(macs))
        clauses.append(
            f"(r.record_id IN (SELECT doc_id FROM vault_index WHERE doc_table = 'applications' AND mac IN ({marks}))"
            f" OR r.record_id IN (SELECT l.record_id FROM vault_link l JOIN vault_index v ON v.doc_table = 'applicants'"
            f" AND v.doc_id = l.applicant_id WHERE v.mac IN ({marks})))")
        params += macs + macs
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


async def create_schema(store: HQStore) -> None:
    await migrate(store.db, "hq_vault", MIGRATIONS)


async def search(store: HQStore, f: RecordFilter, keys: VaultKeys | None = None, limit: int = 50, offset: int = 0,
                 ids: list[str] | None = None, cap: int = PAGE_MAX) -> tuple[list[dict[str, Any]], int]:
    """One page of what anyone at HQ may see of the matching records (no personal data) and how many match in all."""
    if f.identifier and keys is not None:
        await refresh_index(store, keys)  # whatever arrived since the loop's last round is searchable at once
    where, params = _where(f, None if keys is None else keys.index)
    if ids is not None:
        ids = ids[:cap] or [""]
        where += (" AND " if where else " WHERE ") + f"r.record_id IN ({', '.join('?' * len(ids))})"
        params += ids
    base = " FROM records r LEFT JOIN app_status s ON s.record_id = r.record_id" + where
    async with store.db.execute("SELECT COUNT(*)" + base, tuple(params)) as cur:
        row = await cur.fetchone()
    total = int(row[0]) if row else 0
    limit = max(1, min(int(limit), cap))
    async with store.db.execute(
        "SELECT r.record_id, r.number, r.node_id, r.service_code, r.created, r.package_code, r.time_trusted, COALESCE(s.status, 'accepted')"
        + base + " ORDER BY r.created DESC, r.record_id LIMIT ? OFFSET ?", (*params, limit, max(0, int(offset)))
    ) as cur:
        # time_trusted False: the van's clock was not yet confirmed and no time fix of its boot has come (hq/timefix.py)
        recs = [{"id": r[0], "number": r[1], "node_id": r[2], "service_code": r[3], "created": r[4], "package": r[5],
                 "time_trusted": r[6] is None or bool(r[6]), "status": r[7]} async for r in cur]
    return recs, total


async def list_records(store: HQStore, limit: int = 200) -> list[dict[str, Any]]:
    """The newest records, no personal data (kept for callers of the first version)."""
    return (await search(store, RecordFilter(), limit=limit))[0]


def _sealed(doc: dict[str, Any], table: str) -> SealedRecord | None:
    if not doc.get("wrap_hq"):
        return None  # shredded at the end of its retention period (hq/retention.py)
    return SealedRecord(table, str(doc["id"]), int(doc["version"]), {k: base64.b64decode(v) for k, v in doc["fields"].items()},
                        base64.b64decode(doc["wrap_hq"]), None)


def open_doc(doc: dict[str, Any], table: str, key: OpeningKeys) -> dict[str, str] | None:
    """The fields of a sealed record; None once shredded."""
    sealed = _sealed(doc, table)
    return None if sealed is None else open_with_hq_key(sealed, key)


async def audit_opening(store: HQStore, username: str, record_ids: list[str], reason: str) -> None:
    """Who opened what and why, committed before anything is decrypted."""
    now = store.clock.now()
    async with transaction(store.db):
        await store.db.executemany("INSERT INTO vault_audit(at, username, record_id, reason) VALUES (?, ?, ?, ?)",
                                   [(now, username, rid, reason) for rid in record_ids])


async def _delivery(store: HQStore, node_id: str, seq: int) -> dict[str, Any]:
    async with store.db.execute("SELECT received FROM items WHERE node_id = ? AND stream = 'rec' AND seq = ?", (node_id, seq)) as cur:
        row = await cur.fetchone()
    async with store.db.execute("SELECT contiguous FROM stream_state WHERE node_id = ? AND stream = 'rec'", (node_id,)) as cur:
        state = await cur.fetchone()
    received = None if row is None else float(row[0])
    # HQ acks cumulatively right after the commit that stored the item (sync/ingest.py): covered = acked at reception.
    acked = received if state is not None and int(state[0]) >= seq else None
    return {"received": received, "acked": acked}


async def read_record(store: HQStore, key: OpeningKeys, record_id: str) -> dict[str, Any]:
    """The whole record, decrypted (the caller audits first: ``open_record``, or the export's one audit row)."""
    async with store.db.execute(
        "SELECT sealed, number, node_id, service_code, created, seq, package_code FROM records WHERE record_id = ?", (record_id,)
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        raise VaultError(f"no record {record_id}")
    doc = json.loads(row[0])
    try:
        fields = open_doc(doc, "applications", key)
    except CryptoError as exc:
        raise VaultError(f"record {record_id} does not open with HQ's key") from exc
    applicant: dict[str, str] | None = None
    applicant_state = "none"
    if doc.get("applicant"):
        async with store.db.execute("SELECT sealed FROM applicants WHERE record_id = ?", (str(doc["applicant"]),)) as cur:
            arow = await cur.fetchone()
        applicant_state = "pending"  # the van sent the application before its card: it comes later
        if arow is not None:
            try:
                applicant = open_doc(json.loads(arow[0]), "applicants", key)
                applicant_state = "open" if applicant is not None else "shredded"
            except CryptoError:
                applicant_state = "unreadable"
    async with store.db.execute("SELECT status FROM app_status WHERE record_id = ?", (record_id,)) as cur:
        srow = await cur.fetchone()
    rec: dict[str, Any] = {
        "id": record_id, "number": row[1], "node_id": row[2], "service_code": row[3], "created": row[4], "package": row[6],
        "status": "accepted" if srow is None else str(srow[0]), "shredded": fields is None,
        "application": fields or {}, "applicant": applicant or {}, "applicant_state": applicant_state,
        **await _delivery(store, str(row[2]), int(row[5])),
    }
    rec.update(fields or {})  # the first version's flat keys (surname, given_name, rnokpp) stay for its callers
    return rec


async def open_record(store: HQStore, key: OpeningKeys, record_id: str, username: str, reason: str) -> dict[str, Any]:
    """Decrypt one application with its applicant card; the opening is written to HQ's audit table first."""
    async with store.db.execute("SELECT 1 FROM records WHERE record_id = ?", (record_id,)) as cur:
        if await cur.fetchone() is None:
            raise VaultError(f"no record {record_id}")
    await audit_opening(store, username, [record_id], reason)
    return await read_record(store, key, record_id)


async def openings(store: HQStore, record_id: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT at, username, record_id, reason FROM vault_audit" + (" WHERE record_id = ?" if record_id else "") + " ORDER BY id"
    async with store.db.execute(sql, (record_id,) if record_id else ()) as cur:
        return [{"at": r[0], "username": r[1], "record_id": r[2], "reason": r[3]} async for r in cur]


async def refresh_index(store: HQStore, keys: VaultKeys) -> int:
    """Index the identifiers of records and applicant cards not indexed yet; returns how many documents were done.

    Only HMACs are stored.  A document that does not open (or is shredded) is marked done with no entries.
    """
    seal, ikey = keys.seal, keys.index
    done = 0
    for table, sql in (("applications", "SELECT r.record_id, r.sealed FROM records r LEFT JOIN vault_indexed v"
                                        " ON v.doc_table = 'applications' AND v.doc_id = r.record_id WHERE v.doc_id IS NULL LIMIT ?"),
                       ("applicants", "SELECT a.record_id, a.sealed FROM applicants a LEFT JOIN vault_indexed v"
                                      " ON v.doc_table = 'applicants' AND v.doc_id = a.record_id WHERE v.doc_id IS NULL LIMIT ?")):
        while True:
            async with store.db.execute(sql, (INDEX_BATCH,)) as cur:
                rows = list(await cur.fetchall())
            if not rows:
                break
            entries, links, marks = [], [], []
            for doc_id, sealed in rows:
                doc = json.loads(sealed)
                try:
                    fields = open_doc(doc, table, seal) or {}
                except (CryptoError, KeyError, ValueError, TypeError):
                    fields = {}  # does not open: nothing to index (the vault says so when it is opened)
                entries += [(table, str(doc_id), kind, mac(ikey, kind, value)) for kind, value in identifiers(fields).items()]
                if table == "applications" and doc.get("applicant"):
                    links.append((str(doc_id), str(doc["applicant"])))
                marks.append((table, str(doc_id), store.clock.now()))
            async with transaction(store.db):
                await store.db.executemany("INSERT INTO vault_index(doc_table, doc_id, kind, mac) VALUES (?, ?, ?, ?)"
                                           " ON CONFLICT (doc_table, doc_id, kind) DO NOTHING", entries)
                await store.db.executemany("INSERT INTO vault_link(record_id, applicant_id) VALUES (?, ?) ON CONFLICT (record_id) DO NOTHING",
                                           links)
                await store.db.executemany("INSERT INTO vault_indexed(doc_table, doc_id, at) VALUES (?, ?, ?)"
                                           " ON CONFLICT (doc_table, doc_id) DO NOTHING", marks)
            done += len(rows)
            if len(rows) < INDEX_BATCH:
                break
    return done
