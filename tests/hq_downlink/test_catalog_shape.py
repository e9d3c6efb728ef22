"""The catalogue's shape check (HQ before publishing, the van before applying) and the van's in-place swap."""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from edge import catalog as edge_catalog
from sync.catalog_doc import packaged, validate
from sync import outbox
from sync.errors import EnvelopeError


def test_the_packaged_catalogue_is_publishable() -> None:
    assert validate(packaged()) == []


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("services"), "services: потрібен непорожній список послуг"),
    (lambda d: d["services"].append(dict(d["services"][0])), "код послуги «RES-01» повторюється"),
    (lambda d: d["services"][1].update(name=""), "services[1].name: потрібна назва послуги"),
    (lambda d: d["services"][2].update(documents="Паспорт"), "services[2].documents: потрібен список назв документів"),
    (lambda d: d["categories"].append({"code": "residence", "name": "ще раз"}), "код категорії «residence» повторюється"),
    (lambda d: d["packages"][0].update(services=["RES-01", "NOPE"]), "packages[0].services: послуг NOPE немає в каталозі"),
])
def test_each_problem_is_named_in_ukrainian(change, message) -> None:  # type: ignore[no-untyped-def]
    doc = copy.deepcopy(packaged())
    change(doc)
    errors = validate(doc)
    assert any(message in e for e in errors), errors
    assert validate([1, 2]) == ["Каталог має бути JSON-об'єктом з полями categories, services, packages"]


async def test_van_handler_saves_and_swaps_only_a_valid_newer_catalogue(tmp_path: Path) -> None:
    db = await aiosqlite.connect(tmp_path / "node.db")
    try:
        await outbox.create_schema(db)
        await edge_catalog.create_schema(db)
        cat = edge_catalog.Catalog.load()
        kicks: list[int] = []
        apply = edge_catalog.handler(db, cat, lambda: 1000.0, lambda: kicks.append(1))
        doc = packaged()
        doc["services"].append({"code": "NEW-01", "category": "residence", "name": "Нова послуга", "documents": []})
        await apply({**doc, "version": 5})
        assert cat.version == 5 and "NEW-01" in cat.services
        with pytest.raises(EnvelopeError):
            await apply({**doc, "services": [], "version": 6})  # signed but malformed: refused, nothing changes
        await apply({**packaged(), "version": 4})  # older (only if sync let it through): neither saved nor swapped in
        assert cat.version == 5 and "NEW-01" in cat.services
        async with db.execute("SELECT payload FROM outbox WHERE stream = 'evt'") as cur:
            events = [json.loads(r[0]) for r in await cur.fetchall()]
        # One "applied" event for the one saved (none for the older one), and the uplink was woken for it.
        assert [(e["type"], e["version"]) for e in events] == [("catalog", 5)] and kicks == [1]
        saved = await edge_catalog.load_saved(db)
        assert saved is not None and saved.version == 5 and "NEW-01" in saved.services
    finally:
        await db.close()
    version, stored = sqlite3.connect(tmp_path / "node.db").execute("SELECT version, doc FROM catalog_current").fetchone()
    assert version == 5 and "NEW-01" in json.loads(stored)["services"][-1]["code"]
