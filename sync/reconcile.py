"""Reconciliation of a record edited at both ends: field ownership + HLC last-writer-wins.

Each field has an owner: the van owns what it captures (documents, notes,
the applicant's sealed fields), HQ owns the processing status.  An edit by
a non-owner is ignored by both ends.  Among the owner's edits the one with
the greater (hlc, origin) wins; (hlc, origin) is a total order, so the
merge is commutative, associative and idempotent: whatever order edits
arrive in, and however often, both ends end at the same state.

``documents`` is a set that only grows (the van adds, never removes), so it
merges by union, with no winner to pick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NODE = "node"
HQ = "hq"

# field -> owner
OWNERSHIP: dict[str, str] = {
    "status": HQ,  # accepted / in_progress / ready / issued / refused
    "status_note": HQ,
    "service_code": NODE,
    "fields": NODE,
    "notes": NODE,
}
GROW_ONLY = frozenset({"documents"})
STATUSES = ("accepted", "in_progress", "ready", "issued", "refused")


@dataclass(frozen=True)
class Edit:
    record_id: str
    field: str
    value: Any
    hlc: int
    origin: str  # NODE or HQ (or a node id: compared as text for ties)


@dataclass
class Version:
    value: Any
    hlc: int
    origin: str


@dataclass
class RecordState:
    fields: dict[str, Version] = field(default_factory=dict)
    documents: frozenset[str] = frozenset()

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v.value for k, v in sorted(self.fields.items())}
        out["documents"] = sorted(self.documents)
        return out


def allowed(edit: Edit) -> bool:
    if edit.field in GROW_ONLY:
        return edit.origin != HQ
    owner = OWNERSHIP.get(edit.field)
    if owner is None:
        return False
    return edit.origin == owner or (owner == NODE and edit.origin != HQ)


def apply(state: RecordState, edit: Edit) -> bool:
    """Merge one edit; True if the state changed.  Deterministic at both ends."""
    if not allowed(edit):
        return False
    if edit.field in GROW_ONLY:
        new = state.documents | {str(edit.value)}
        changed = new != state.documents
        state.documents = new
        return changed
    cur = state.fields.get(edit.field)
    # repr(value) breaks the (impossible in practice) tie of one origin reusing an HLC value.
    if cur is not None and (cur.hlc, cur.origin, repr(cur.value)) >= (edit.hlc, edit.origin, repr(edit.value)):
        return False
    state.fields[edit.field] = Version(edit.value, edit.hlc, edit.origin)
    return True


# -- on the wire -------------------------------------------------------------
# An HQ edit travels on the signed ``recon`` downlink (one item per edit).  The
# downlink layer applies each ``id`` at most once; the HLC order here makes a
# late or replayed older edit harmless even under a new id.

def to_wire(edit: Edit, edit_id: str) -> dict[str, Any]:
    return {"id": edit_id, "record_id": edit.record_id, "field": edit.field, "value": edit.value, "hlc": edit.hlc, "origin": edit.origin}


def from_wire(doc: dict[str, Any]) -> Edit:
    """The edit a downlink item carries; ValueError if it is not one this end can merge."""
    try:
        edit = Edit(str(doc["record_id"]), str(doc["field"]), doc["value"], int(doc["hlc"]), str(doc["origin"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed edit: {type(exc).__name__}") from exc
    if not edit.record_id or edit.hlc <= 0:
        raise ValueError("edit without a record or an HLC")
    if edit.field == "status" and edit.value not in STATUSES:
        raise ValueError(f"unknown status {str(edit.value)[:20]!r}")
    return edit
