"""The enrolment bundle's secrets on the SD card after the first start.

The bundle arrives with the node key wrapped under every administrator's
one-time password (``keyslots.json``) and the node's sealing key wrapped
under the node key (``node.json``).  Once the node's database holds them,
the card's copies would only help an attacker: a removed administrator's
password, or the paper sheet, would still unwrap the node key from the
bundle.  So the files are rewritten with HQ's recovery slot only
(``keyslots.json``) and without the sealing key (``node.json``), and the old
content is zeroed where it lay.  After a node key rotation the recovery slot on the card is
replaced by the database's, which wraps the new key.

Overwriting in place is what a file system offers; a flash card's wear
levelling may keep the old blocks (docs/security.md says what that leaves).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from pathlib import Path
from typing import Any

from kit.files import write_atomic

from .store import Store

log = logging.getLogger(__name__)


def _overwrite(path: Path, data: bytes) -> None:
    """Replace the file atomically, then zero the old content where it lies.

    The old file stays open across the rename, so its blocks are zeroed through it after the new
    file is in place: at every moment the path holds a whole, valid file (a power cut here must
    never leave a van that cannot start).
    """
    with open(path, "r+b") as old:
        size = os.fstat(old.fileno()).st_size
        write_atomic(path, data, 0o600)
        old.seek(0)
        old.write(b"\0" * size)
        old.flush()
        os.fsync(old.fileno())


def _strip(bundle_dir: Path, hq_slot: dict[str, Any] | None, drop_seal: bool) -> list[str]:
    changed = []
    slots_path = bundle_dir / "keyslots.json"
    if slots_path.exists():
        slots = json.loads(slots_path.read_text(encoding="utf-8"))
        keep = [hq_slot] if hq_slot is not None else [s for s in slots if s.get("kind") == "hq"]
        if keep != slots:
            _overwrite(slots_path, (json.dumps(keep, ensure_ascii=False, indent=2) + "\n").encode())
            changed.append("keyslots.json")
    node_path = bundle_dir / "node.json"
    if drop_seal and node_path.exists():
        doc = json.loads(node_path.read_text(encoding="utf-8"))
        if doc.pop("node_seal_wrapped", None) is not None:
            _overwrite(node_path, (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode())
            changed.append("node.json")
    return changed


async def _hq_slot(store: Store) -> dict[str, Any] | None:
    async with store.db.execute("SELECT n, wrapped FROM keyslots WHERE kind = 'hq' LIMIT 1") as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    return {"kind": "hq", "username": None, "role": None, "salt": "", "n": int(row[0]), "wrapped": base64.b64encode(bytes(row[1])).decode(),
            "v": 1, "must_change": False}


async def destroy_bundle_secrets(store: Store, bundle_dir: Path) -> list[str]:
    """Once the database holds the administrators' slots (and the sealing key), remove them from the card; idempotent."""
    if not await store.has_admin_slots():
        log.error("no administrator keyslot in the database: nobody can unlock this node; HQ must re-enrol it")
        return []
    await store.adopt_node_seal()
    drop_seal = await store.holds_node_seal()
    hq_slot = await _hq_slot(store)
    changed = await asyncio.get_running_loop().run_in_executor(None, _strip, bundle_dir, hq_slot, drop_seal)
    if changed:
        log.warning("enrolment bundle: administrators' keyslots removed from the card (%s); HQ's recovery slot stays", ", ".join(changed))
    return changed
