"""The record vault: records open only with HQ's private key, for authorised users, each opening audited."""

from __future__ import annotations

import base64
import json
from typing import Any


from sync.crypto import OpeningKeys, SealedRecord, open_with_hq_key
from .db import transaction
from sync.errors import CryptoError

from .errors import HQError
from .store import HQStore


class VaultError(HQError):
    """A record is missing or does not open."""


async def list_records(store: HQStore, limit: int = 200) -> list[dict[str, Any]]:
    """What anyone at HQ may see of a record: no personal data."""
    async with store.db.execute(
        "SELECT record_id, number, node_id, service_code, created, package_code, time_trusted FROM records ORDER BY created DESC LIMIT ?",
        (limit,),
    ) as cur:
        # time_trusted False: the van's clock was not yet confirmed and no time fix of its boot has come (hq/timefix.py)
        return [{"id": r[0], "number": r[1], "node_id": r[2], "service_code": r[3], "created": r[4], "package": r[5],
                 "time_trusted": r[6] is None or bool(r[6])} async for r in cur]


async def open_record(store: HQStore, key: OpeningKeys, record_id: str, username: str, reason: str) -> dict[str, Any]:
    """Decrypt one application; the opening is written to HQ's audit table first."""
    async with store.db.execute("SELECT sealed, number, node_id, service_code, created FROM records WHERE record_id = ?", (record_id,)) as cur:
        row = await cur.fetchone()
    if row is None:
        raise VaultError(f"no record {record_id}")
    doc = json.loads(row[0])
    async with transaction(store.db):
        await store.db.execute(
            "INSERT INTO vault_audit(at, username, record_id, reason) VALUES (?, ?, ?, ?)", (store.clock.now(), username, record_id, reason)
        )
    sealed = SealedRecord(
        "applications", str(doc["id"]), int(doc["version"]), {k: base64.b64decode(v) for k, v in doc["fields"].items()},
        base64.b64decode(doc["wrap_hq"]), None,
    )
    try:
        fields = open_with_hq_key(sealed, key)
    except CryptoError as exc:
        raise VaultError(f"record {record_id} does not open with HQ's key") from exc
    return {"id": record_id, "number": row[1], "node_id": row[2], "service_code": row[3], "created": row[4], **fields}


async def openings(store: HQStore, record_id: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT at, username, record_id, reason FROM vault_audit" + (" WHERE record_id = ?" if record_id else "") + " ORDER BY id"
    async with store.db.execute(sql, (record_id,) if record_id else ()) as cur:
        return [{"at": r[0], "username": r[1], "record_id": r[2], "reason": r[3]} async for r in cur]
