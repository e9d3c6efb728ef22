"""Planning at HQ: home visits assigned to a van's case administrators, sealed to that van."""

from __future__ import annotations

import json
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from sync.crypto import wrap_to_public

from .appkeys import CONFIG, DOWNLINK, STORE
from .errors import HQError
from .trips import record_visit_plan


class PlanningError(HQError):
    """An assignment that cannot be made; the message is for people."""


def sealed_assignment(node_seal: X25519PublicKey, node_id: str, details: dict[str, Any], planned_date: str | None,
                      assigned_to: str | None, visit_id: str | None = None) -> dict[str, Any]:
    """The downlink item: who and where is sealed to the van; the date and the administrator are not personal data."""
    vid = visit_id or uuid.uuid4().hex
    blob = wrap_to_public(json.dumps(details, ensure_ascii=False).encode(), node_seal, f"assign|{node_id}|{vid}".encode())
    return {"id": vid, "kind": "home_visit", "planned_date": planned_date, "assigned_to": assigned_to, "sealed": blob.hex()}


async def assign_home_visit(app: Any, node_id: str, details: dict[str, Any], planned_date: str | None, assigned_to: str | None) -> str:
    cfg = app[CONFIG]
    seal = cfg.keys.node_seal_keys().get(node_id)
    if seal is None:
        raise PlanningError("Фургон не має ключа для запечатаних призначень: видайте йому новий пакет реєстрації")
    item = sealed_assignment(seal, node_id, details, planned_date, assigned_to)
    await app[DOWNLINK].send(node_id, "assign", [item], "призначення не надіслано")
    # categories (no name, no address) for the home-visit reports
    await record_visit_plan(app[STORE].db, str(item["id"]), node_id, planned_date, assigned_to, list(details.get("categories") or []), cfg.clock.now())
    return str(item["id"])
