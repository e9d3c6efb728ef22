"""The service catalogue the van offers (HQ publishes new versions; the bundled one seeds it).

A newer catalogue from HQ (signed, retained, ``sync.downlink.apply_catalog``)
is validated, saved in the node's database (component ``edge_catalog``: it
is not personal data, so it is kept in the clear) and replaces the one in
memory in place, so every page sees it at once; after a restart the saved
one is loaded over the bundled one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from kit import data_path
from sync.catalog_doc import validate
from sync import outbox
from sync.db import transaction
from sync.downlink import Handler
from sync.errors import EnvelopeError
from sync.migrate import migrate

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE catalog_current (one INTEGER PRIMARY KEY CHECK (one = 1), version INTEGER NOT NULL, doc TEXT NOT NULL, received REAL NOT NULL);
    """,
]


@dataclass(frozen=True)
class Fee:
    """A paid service's administrative fee and where to pay it (the van prints it; it never handles money)."""

    amount: str  # UAH, as published ("302.80")
    recipient: str
    iban: str
    recipient_code: str  # ЄДРПОУ
    purpose: str  # may hold {number}


@dataclass(frozen=True)
class FormTemplate:
    """The заява's template (sync/catalog_doc.py FORM_FIELDS are its placeholders)."""

    heading: str
    addressee: str
    body: str


@dataclass(frozen=True)
class Service:
    code: str
    category: str
    name: str
    documents: tuple[str, ...]
    term_days: int | None = None  # None: the catalogue does not state it
    term_kind: str = "working"  # or "calendar"
    free: bool | None = None  # None: not stated; False: see fee
    fee: Fee | None = None
    legal_basis: str = ""
    form: FormTemplate | None = None

    @classmethod
    def from_doc(cls, s: dict[str, Any]) -> Service:
        term = s.get("term") or {}
        fee_doc = s.get("fee")
        fee = None
        if isinstance(fee_doc, dict) and fee_doc.get("free") is not True:
            fee = Fee(str(fee_doc["amount"]), fee_doc["recipient"], fee_doc["iban"], fee_doc["recipient_code"], fee_doc["purpose"])
        form = s.get("form")
        return cls(
            s["code"], s["category"], s["name"], tuple(s.get("documents", ())),
            term_days=term.get("days"), term_kind=term.get("days_kind", "working"),
            free=None if fee_doc is None else fee is None, fee=fee, legal_basis=s.get("legal_basis", ""),
            form=FormTemplate(form["heading"], form["addressee"], form["body"]) if isinstance(form, dict) else None,
        )


@dataclass(frozen=True)
class Package:
    code: str
    name: str
    services: tuple[str, ...]


@dataclass
class Catalog:
    version: int
    categories: dict[str, str]
    services: dict[str, Service]
    packages: dict[str, Package]

    @classmethod
    def load(cls, path: Path | None = None, packages_path: Path | None = None) -> Catalog:
        doc = json.loads((path or data_path("catalog.json")).read_text(encoding="utf-8"))
        services = {s["code"]: Service.from_doc(s) for s in doc["services"]}
        pdoc = json.loads((packages_path or data_path("packages.json")).read_text(encoding="utf-8"))
        # A package may only name services this catalogue has (HQ publishes both; stay consistent).
        packages = {
            p["code"]: Package(p["code"], p["name"], tuple(c for c in p["services"] if c in services)) for p in pdoc["packages"]
        }
        return cls(int(doc["version"]), {c["code"]: c["name"] for c in doc["categories"]}, services, packages)

    @classmethod
    def from_doc(cls, doc: dict[str, Any], version: int) -> Catalog:
        """A published catalogue (sync/catalog_doc.py shape); raises ValueError if it does not fit."""
        errors = validate(doc)
        if errors:
            raise ValueError("; ".join(errors[:5]))
        services = {s["code"]: Service.from_doc(s) for s in doc["services"]}
        packages = {p["code"]: Package(p["code"], p["name"], tuple(p["services"])) for p in doc.get("packages", [])}
        return cls(version, {c["code"]: c["name"] for c in doc["categories"]}, services, packages)

    def replace_with(self, other: Catalog) -> None:
        """Swap the contents in place: ``app[CATALOG]`` is one object the pages read per request."""
        self.version, self.categories, self.services, self.packages = other.version, other.categories, other.services, other.packages

    def grouped(self) -> list[tuple[str, list[Service]]]:
        groups: dict[str, list[Service]] = {}
        for s in self.services.values():
            groups.setdefault(s.category, []).append(s)
        return [(self.categories.get(c, c), sorted(v, key=lambda s: s.code)) for c, v in groups.items()]


async def create_schema(db: aiosqlite.Connection) -> None:
    await migrate(db, "edge_catalog", MIGRATIONS)


async def load_saved(db: aiosqlite.Connection) -> Catalog | None:
    """The newest catalogue HQ published that this van applied, if any."""
    async with db.execute("SELECT version, doc FROM catalog_current WHERE one = 1") as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    try:
        return Catalog.from_doc(json.loads(row[1]), int(row[0]))
    except ValueError as exc:  # a later release checks more strictly: serve the bundled one rather than not start
        log.warning("saved catalogue version %s no longer fits its shape, using the bundled one: %s", row[0], exc)
        return None


def handler(db: aiosqlite.Connection, catalog: Catalog, now: Callable[[], float], notify: Callable[[], None] | None = None) -> Handler:
    """The ``catalog`` downlink callback: validate, save, swap in.  A bad document is refused like a forged one.

    Saving also enqueues ``{"type": "catalog", "event": "applied", "version", "services", "at"}`` on ``evt``
    (same transaction), so HQ sees which version each van runs.  After a crash before sync records the
    version this runs again and HQ hears it twice: harmless, HQ keeps the highest.
    """

    async def apply(doc: dict[str, Any]) -> None:
        try:
            version = int(doc["version"])
            new = Catalog.from_doc(doc, version)
        except (KeyError, TypeError, ValueError) as exc:
            raise EnvelopeError(f"catalogue does not fit its shape: {exc}") from exc
        async with transaction(db):
            async with db.execute("SELECT version FROM catalog_current WHERE one = 1") as cur:
                row = await cur.fetchone()
            if row is not None and int(row[0]) > version:
                return  # older than the one kept (sync lets only newer ones through; stay right on our own too)
            await db.execute(
                "INSERT INTO catalog_current(one, version, doc, received) VALUES (1, ?, ?, ?)"
                " ON CONFLICT(one) DO UPDATE SET version = excluded.version, doc = excluded.doc, received = excluded.received",
                (version, json.dumps(doc, ensure_ascii=False, separators=(",", ":")), now()),
            )
            event = {"type": "catalog", "event": "applied", "version": version, "services": len(new.services), "at": now()}
            await outbox.enqueue(db, "evt", json.dumps(event, separators=(",", ":")).encode(), now())
        catalog.replace_with(new)
        if notify is not None:
            notify()

    return apply
