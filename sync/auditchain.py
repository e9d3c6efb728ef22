"""The audit hash chain's format, shared by the van (which writes it) and HQ (which checks it).

``hash_n = SHA-256(hash_{n-1} || canonical JSON of entry n)``, genesis = 32
zero bytes.  An edited, removed or inserted entry breaks the chain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from . import safejson

GENESIS = bytes(32)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    action: str  # create, read, update, search, shred, login
    entity: str  # table name
    entity_id: str
    reason: str
    prev: bytes
    hash: bytes
    # Was ``at`` trusted, the node's monotonic time and boot id (kit.timesource.Stamp.wire); hashed with the
    # rest.  Absent in entries written before trusted time existed, so their hashes still verify.
    clock: dict[str, object] | None = None

    def body(self) -> dict[str, object]:
        out: dict[str, object] = {"seq": self.seq, "at": self.at, "actor": self.actor, "action": self.action, "entity": self.entity,
                                  "id": self.entity_id, "reason": self.reason}
        if self.clock is not None:
            out["clock"] = self.clock
        return out

    def wire(self) -> bytes:
        doc = {**self.body(), "prev": self.prev.hex(), "hash": self.hash.hex()}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def entry_hash(prev: bytes, body: dict[str, object]) -> bytes:
    return hashlib.sha256(prev + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).digest()


def parse_wire(item: bytes) -> AuditEntry:
    doc = safejson.loads(item)
    return AuditEntry(int(doc["seq"]), float(doc["at"]), str(doc["actor"]), str(doc["action"]), str(doc["entity"]), str(doc["id"]),
                      str(doc["reason"]), bytes.fromhex(doc["prev"]), bytes.fromhex(doc["hash"]),
                      doc["clock"] if isinstance(doc.get("clock"), dict) else None)


def verify_link(prev_hash: bytes, entry: AuditEntry) -> str | None:
    """None if the entry follows prev_hash correctly, else what is wrong."""
    if entry.prev != prev_hash:
        return f"entry {entry.seq} does not follow the previous entry (chain broken)"
    if entry_hash(entry.prev, entry.body()) != entry.hash:
        return f"entry {entry.seq} was altered (hash mismatch)"
    return None
