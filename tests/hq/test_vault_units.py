"""The vault at HQ in-process, on real SQLite files and real crypto: search and paging, the keyed identifier index,
the whole record behind an audited opening, exports read back, retention's crypto-shredding."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hq import appstatus, export, planning, prereg_admin, retention, trips, users, vault
from hq.db import transaction
from hq.i18n import E as CATALOGUE
from hq.store import HQStore
from kit.clock import ManualClock
from provisioning.keys import HQKeys
from sync import crypto
from sync.blob import blob_item, parse_blob_item

DAY = 86400.0
RNOKPP, UNZR, DOC = "3184710691", "19900101-01234", "АА123456"
SEQ = iter(range(1, 10_000))


async def put(store: HQStore, keys: HQKeys, rid: str, *, node: str = "van-01", service: str = "RES-01", created: float = 0.0,
              fields: dict[str, str] | None = None, card: dict[str, str] | None = None, applicant_id: str | None = None) -> str:
    """A record (and its applicant card) stored as ingest stores them: the item and its projection, then acked."""
    node_key = crypto.random_key()
    created = created or store.clock.now()
    app_doc: dict[str, Any] = {"type": "application", "id": rid, "number": f"{node.upper()}-20260101-{rid[:4]}", "service_code": service,
                               "created": created, "version": 1}
    sealed = crypto.seal("applications", rid, 1, fields or {"surname": "Косач", "given_name": "Лариса"}, keys.seal_public, node_key)
    app_doc |= {"fields": {k: base64.b64encode(v).decode() for k, v in sealed.fields.items()},
                "wrap_hq": base64.b64encode(sealed.wrap_hq).decode()}
    items: list[bytes] = []
    if card is not None:
        aid = applicant_id or "a" + rid[1:]
        c = crypto.seal("applicants", aid, 1, card, keys.seal_public, node_key)
        items.append(json.dumps({"type": "applicant", "id": aid, "created": created, "version": 1,
                                 "fields": {k: base64.b64encode(v).decode() for k, v in c.fields.items()},
                                 "wrap_hq": base64.b64encode(c.wrap_hq).decode()}).encode())
        app_doc["applicant"] = aid
    elif applicant_id:
        app_doc["applicant"] = applicant_id
    items.append(json.dumps(app_doc).encode())
    async with transaction(store.db):
        for item in items:
            seq = next(SEQ)
            await store.db.execute("INSERT INTO items(node_id, stream, seq, payload, hlc, via, received) VALUES (?, 'rec', ?, ?, 0, 'mqtt', ?)",
                                   (node, seq, item, store.clock.now()))
            assert await store._apply(store.db, node, "rec", seq, item) is None
            await store.db.execute("INSERT INTO stream_state(node_id, stream, contiguous) VALUES (?, 'rec', ?)"
                                   " ON CONFLICT (node_id, stream) DO UPDATE SET contiguous = excluded.contiguous", (node, seq))
    return str(app_doc["number"])


@pytest.fixture(params=["sqlite", "postgresql"])
async def hq(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HQStore]:
    # HQ's SQL is written once for both engines (docs/scaling.md): the vault's too.
    target = str(request.getfixturevalue("pg_url")) if request.param == "postgresql" else tmp_path / "hq.db"
    store = await HQStore.open(target, ManualClock())
    await users.create_schema(store.db)
    await retention.create_schema(store)  # appstatus, vault, attachments and its own
    yield store
    await store.close()


def ids(recs: list[dict[str, Any]]) -> list[str]:
    return sorted(r["id"] for r in recs)


async def test_search_by_metadata_and_pages(hq: HQStore, hq_keys: HQKeys) -> None:
    clock = hq.clock
    assert isinstance(clock, ManualClock)
    made = []
    for i in range(7):
        rid = f"{i}" * 32
        await put(hq, hq_keys, rid, node="van-01" if i % 2 == 0 else "van-02", service="RES-01" if i < 4 else "PAS-02")
        made.append(rid)
        clock.advance(DAY)
    await appstatus.set_status(hq, made[1], "in_progress", "olena", 1, notify_sms=False)
    keys = vault.VaultKeys.of(hq_keys.seal)

    page1, total = await vault.search(hq, vault.RecordFilter(), keys, limit=3, offset=0)
    page3, _ = await vault.search(hq, vault.RecordFilter(), keys, limit=3, offset=6)
    assert total == 7 and [r["id"] for r in page1] == [made[6], made[5], made[4]] and [r["id"] for r in page3] == [made[0]]
    assert ids((await vault.search(hq, vault.RecordFilter(node_id="van-02")))[0]) == [made[1], made[3], made[5]]
    assert ids((await vault.search(hq, vault.RecordFilter(service_code="PAS-02")))[0]) == made[4:]
    assert ids((await vault.search(hq, vault.RecordFilter(status="in_progress")))[0]) == [made[1]]
    assert len((await vault.search(hq, vault.RecordFilter(status="accepted")))[0]) == 6
    assert ids((await vault.search(hq, vault.RecordFilter(number="van-01-20260101-2222")))[0]) == [made[2]]
    from datetime import datetime
    day = lambda ts: datetime.fromtimestamp(ts).date().isoformat()  # noqa: E731 - local days, as the page's date fields
    start = ManualClock().now()
    found, _ = await vault.search(hq, vault.RecordFilter(date_from=day(start + 2 * DAY), date_to=day(start + 3 * DAY)))
    assert ids(found) == [made[2], made[3]]
    with pytest.raises(vault.VaultError):
        await vault.search(hq, vault.RecordFilter(date_from="30.11.2026"))


async def test_identifier_search_through_keyed_index_holds_no_plaintext(hq: HQStore, hq_keys: HQKeys, tmp_path: Path) -> None:
    card = {"surname": "Косач", "given_name": "Лариса", "rnokpp": RNOKPP, "unzr": UNZR, "document_type": "passport_book",
            "document_number": DOC, "phone": "+380671234567"}
    await put(hq, hq_keys, "a" * 32, card=card)
    await put(hq, hq_keys, "b" * 32, fields={"surname": "Франко", "given_name": "Іван", "rnokpp": "2245134675"})
    await put(hq, hq_keys, "c" * 32)  # no identifiers at all
    keys = vault.VaultKeys.of(hq_keys.seal)
    for query in (RNOKPP, UNZR, "1990010101234", "аа 123456", DOC):
        found, total = await vault.search(hq, vault.RecordFilter(identifier=query), keys)
        assert ids(found) == ["a" * 32] and total == 1, query
    assert ids((await vault.search(hq, vault.RecordFilter(identifier="2245134675"), keys))[0]) == ["b" * 32]
    assert (await vault.search(hq, vault.RecordFilter(identifier="1111111111"), keys))[1] == 0
    # A second card of the same person on another application: found through the card's index too.
    await put(hq, hq_keys, "d" * 32, card={"surname": "Косач", "given_name": "Лариса", "rnokpp": RNOKPP}, applicant_id="e" * 32)
    assert ids((await vault.search(hq, vault.RecordFilter(identifier=RNOKPP), keys))[0]) == ["a" * 32, "d" * 32]
    # Another HQ (another key) finds nothing: the index is keyed.
    other = vault.VaultKeys(hq_keys.seal, b"\0" * 32)
    assert (await vault.search(hq, vault.RecordFilter(identifier=RNOKPP), other))[1] == 0
    async with hq.db.execute("SELECT COUNT(*) FROM vault_index") as cur:
        assert (await cur.fetchone())[0] == 5  # rnokpp, unzr, document of card a; rnokpp of application b and of card e
    if not (tmp_path / "hq.db").exists():
        return  # PostgreSQL: its files are not ours to read; SQLite shows what any engine is given
    await hq.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("hq.db*"))
    for plain in (RNOKPP, UNZR, "1990010101234", DOC, "2245134675", "+380671234567"):
        assert plain.encode() not in raw, plain
    assert "Косач".encode() not in raw


async def test_opening_shows_the_whole_record_and_is_audited_first(hq: HQStore, hq_keys: HQKeys) -> None:
    card = {"surname": "Косач", "given_name": "Лариса", "rnokpp": RNOKPP, "address": "м. Київ, вул. Тестова, 1", "categories": "age80,idp",
            "representative_surname": "Петренко"}  # a field this HQ does not know yet: shown under its own name
    number = await put(hq, hq_keys, "a" * 32, fields={"surname": "Косач", "given_name": "Лариса", "notes": "потрібен пандус"}, card=card)
    rec = await vault.open_record(hq, hq_keys.seal, "a" * 32, "olena", "звернення громадянки")
    assert rec["number"] == number and rec["application"]["notes"] == "потрібен пандус"
    assert rec["applicant"] == card and rec["applicant_state"] == "open"
    assert rec["received"] == hq.clock.now() and rec["acked"] == rec["received"] and rec["status"] == "accepted"
    assert [(o["username"], o["reason"]) for o in await vault.openings(hq, "a" * 32)] == [("olena", "звернення громадянки")]
    # The audit row is committed before decryption: with a key that does not open, the attempt is still logged.
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    with pytest.raises(vault.VaultError):
        await vault.open_record(hq, X25519PrivateKey.generate(), "a" * 32, "mallory", "цікавість")
    assert [o["username"] for o in await vault.openings(hq, "a" * 32)] == ["olena", "mallory"]
    with pytest.raises(vault.VaultError):
        await vault.open_record(hq, hq_keys.seal, "f" * 32, "olena", "немає такого")


async def test_export_json_and_csv_read_back_and_audited(hq: HQStore, hq_keys: HQKeys) -> None:
    card = {"surname": "Косач", "given_name": "Лариса", "rnokpp": RNOKPP, "phone": "+380671234567"}
    await put(hq, hq_keys, "a" * 32, card=card)
    await put(hq, hq_keys, "b" * 32, service="PAS-02", fields={"surname": "Франко", "given_name": "Іван", "notes": "=HYPERLINK(1)"})
    await put(hq, hq_keys, "c" * 32, node="van-02")
    await appstatus.set_status(hq, "b" * 32, "ready", "olena", 1, notify_sms=False)
    keys = vault.VaultKeys.of(hq_keys.seal)

    doc = await export.export(hq, keys, vault.RecordFilter(node_id="van-01"), None, "olena", "передача до бек-офісу", "json", 100)
    doc = json.loads(json.dumps(doc))  # what the wire carries
    assert doc["schema"] == "mo.records.v1" and doc["count"] == 2 and doc["filter"] == {"node_id": "van-01"}
    by_id = {r["id"]: r for r in doc["records"]}
    assert by_id["a" * 32]["applicant"] == card and by_id["b" * 32]["status"] == "ready"
    assert [h["status"] for h in by_id["b" * 32]["status_history"]] == ["ready"]
    assert by_id["b" * 32]["created"].endswith("Z")

    csv_doc = await export.export(hq, keys, vault.RecordFilter(identifier=RNOKPP), None, "olena", "запит суду", "csv", 100)
    rows = list(csv.DictReader(io.StringIO(export.to_csv(csv_doc))))
    assert len(rows) == 1 and rows[0]["schema"] == "mo.records.v1" and rows[0]["applicant.rnokpp"] == RNOKPP
    assert rows[0]["applicant.phone"] == "+380671234567" and rows[0]["number"] == by_id["a" * 32]["number"]
    sel = await export.export(hq, keys, vault.RecordFilter(), ["b" * 32], "olena", "вибрані", "csv", 100)
    rows = list(csv.DictReader(io.StringIO(export.to_csv(sel))))
    assert [r["id"] for r in rows] == ["b" * 32] and rows[0]["application.notes"] == "'=HYPERLINK(1)"  # no formula in a spreadsheet

    with pytest.raises(export.ExportError) as exc:
        await export.export(hq, keys, vault.RecordFilter(), None, "olena", "усе", "json", 2)
    assert exc.value.code == "too_many"
    log = await export.exports(hq)
    assert [(e["reason"], e["count"], e["format"]) for e in log] == [("вибрані", 1, "csv"), ("запит суду", 1, "csv"),
                                                                   ("передача до бек-офісу", 2, "json")]
    assert log[1]["filter"] == {"identifier": "(given)"}  # the audit never holds the identifier itself
    assert ("olena", "export: запит суду") in {(o["username"], o["reason"]) for o in await vault.openings(hq, "a" * 32)}


async def test_retention_shreds_only_closed_cases_past_their_period(hq: HQStore, hq_keys: HQKeys) -> None:
    clock = hq.clock
    assert isinstance(clock, ManualClock)
    card = {"surname": "Косач", "given_name": "Лариса", "rnokpp": RNOKPP}
    await put(hq, hq_keys, "a" * 32, card=card)  # issued long ago, its own card: shredded with its attachment
    await put(hq, hq_keys, "b" * 32, card={"surname": "Франко", "given_name": "Іван", "rnokpp": "2245134675"})  # issued, shares a card...
    await put(hq, hq_keys, "c" * 32, applicant_id="a" + "b" * 31)  # ...with this case, still in progress: the card stays
    await put(hq, hq_keys, "d" * 32)  # refused recently: within its period
    att = "f" * 32
    async with transaction(hq.db):
        head = {"id": att, "application_id": "a" * 32, "index": 0, "count": 1, "version": 2, "wrap_hq": "V1JBUA==", "meta": "TUVUQQ==",
                "content_type": "image/jpeg", "size": 3}
        await hq.db.execute("INSERT INTO items(node_id, stream, seq, payload, hlc, via, received) VALUES ('van-01', 'blob', 1, ?, 0, 'mqtt', ?)",
                            (blob_item(head, b"secret-chunk"), clock.now()))
    for rid in ("a" * 32, "d" * 32):  # a citizen's rated both, with a comment
        item = json.dumps({"type": "rating", "application_id": rid, "score": 2, "at": clock.now(), "comment_sealed": "abcd" * 8}).encode()
        seq = next(SEQ)
        async with transaction(hq.db):
            await hq.db.execute("INSERT INTO items(node_id, stream, seq, payload, hlc, via, received) VALUES ('van-01', 'rec', ?, ?, 0, 'mqtt', ?)",
                                (seq, item, clock.now()))
            assert await hq._apply(hq.db, "van-01", "rec", seq, item) is None
    for rid, steps in (("a" * 32, ("ready", "issued")), ("b" * 32, ("refused",)), ("c" * 32, ("in_progress",))):
        for st in steps:
            await appstatus.set_status(hq, rid, st, "olena", 1, notify_sms=False)
    clock.advance(100 * DAY)
    await appstatus.set_status(hq, "d" * 32, "refused", "olena", 2, notify_sms=False)
    keys = vault.VaultKeys.of(hq_keys.seal)
    await vault.refresh_index(hq, keys)
    clock.advance(10 * DAY)

    done = await retention.run_round(hq, 30.0)
    assert {(d["record_id"], d["applicant"], d["attachments"]) for d in done} == {("a" * 32, "shredded", 1), ("b" * 32, "kept", 0)}
    assert await retention.run_round(hq, 30.0) == []  # once
    report = await retention.report(hq)
    assert report["total"] == 2 and {r["number"] for r in report["shredded"]} == {d["number"] for d in done}

    a = await vault.open_record(hq, hq_keys.seal, "a" * 32, "olena", "перевірка")
    assert a["shredded"] and a["application"] == {} and a["applicant_state"] == "shredded" and a["service_code"] == "RES-01"
    b = await vault.read_record(hq, hq_keys.seal, "b" * 32)
    assert b["shredded"] and b["applicant"]["rnokpp"] == "2245134675"  # the card an open case uses is kept
    assert (await vault.read_record(hq, hq_keys.seal, "c" * 32))["applicant"]["surname"] == "Франко"
    assert (await vault.read_record(hq, hq_keys.seal, "d" * 32))["application"]["surname"] == "Косач"
    # No wrap left anywhere for the shredded ones: not in the projection, not in the stored items.
    async with hq.db.execute("SELECT payload FROM items WHERE stream = 'rec' ORDER BY seq") as cur:
        payloads = [json.loads(bytes(r[0])) async for r in cur]
    shredded = [p for p in payloads if p.get("id") in ("a" * 32, "a" + "a" * 31, "b" * 32)]
    assert len(shredded) == 3 and all("wrap_hq" not in p and p["fields"] == {} for p in shredded)
    assert sum(1 for p in payloads if "wrap_hq" in p) == 3  # c, d and b's shared card
    async with hq.db.execute("SELECT payload FROM items WHERE stream = 'blob'") as cur:
        h, chunk = parse_blob_item(bytes((await cur.fetchone())[0]))
    assert "wrap_hq" not in h and "meta" not in h and chunk == b"" and h["content_type"] == "image/jpeg"
    assert (await vault.search(hq, vault.RecordFilter(identifier=RNOKPP), keys))[1] == 0  # gone from the index
    async with hq.db.execute("SELECT application_id, score, comment_sealed FROM ratings ORDER BY application_id") as cur:
        assert [tuple(r) for r in await cur.fetchall()] == [("a" * 32, 2, ""), ("d" * 32, 2, "abcd" * 8)]
    assert [p.get("comment_sealed") for p in payloads if p.get("type") == "rating"] == ["", "abcd" * 8]
    assert (await vault.search(hq, vault.RecordFilter(service_code="RES-01")))[1] == 4  # the statistics' metadata stays


def test_every_hq_string_in_both_languages() -> None:
    missing = [k for k, v in CATALOGUE.items() if not v.get("uk") or not v.get("en")]
    assert missing == []


HQ_TEMPLATES = Path(__file__).resolve().parents[2] / "hq" / "templates"
CYRILLIC = re.compile(r"[\u0400-\u04ff]")


def test_hq_pages_take_every_string_from_the_catalogue() -> None:
    """Every page's t("key") is in the catalogue, no page hard-codes Ukrainian, and both languages fill the same {placeholders}."""
    used: set[str] = set()
    for tpl in sorted(HQ_TEMPLATES.glob("*.html")):
        text = tpl.read_text(encoding="utf-8")
        used |= set(re.findall(r"""\bt\(\s*["']([a-z0-9_.]+)["']\s*\)""", text))
        assert not CYRILLIC.search(text), f"{tpl.name}: {CYRILLIC.search(text)}"
    assert sorted(k for k in used if k not in CATALOGUE) == []
    fields = re.compile(r"\{(\w*)\}")
    assert [k for k, v in CATALOGUE.items() if sorted(fields.findall(v["uk"])) != sorted(fields.findall(v["en"]))] == []


def test_handler_labels_have_both_languages() -> None:
    """Codes a handler hands a page (states, purposes, categories) are all in the catalogue, so no English page falls back to Ukrainian."""
    codes = ([f"purpose.{c}" for c in trips.PURPOSES] + [f"visit.state.{c}" for c in planning.STATES]
             + [f"delivery.{c}" for c in planning.DELIVERY] + [f"prereg.state.{c}" for c in prereg_admin.STATES])
    assert [k for k in codes if k not in CATALOGUE] == []
    en = trips.category_labels("en")
    uk = trips.category_labels("uk")
    assert en.keys() == uk.keys() and not any(CYRILLIC.search(v) for v in en.values())
    assert all(CYRILLIC.search(v) for v in uk.values())
    # The planning form's errors: Ukrainian in the message (the API's language), the page's language through the key.
    with pytest.raises(trips.TripPlanError) as err:
        trips.parse_stops([{"place": "", "lat": "1", "lon": "1"}])
    assert str(err.value) == "Зупинка 1: координати поза Україною"
    assert CATALOGUE[err.value.key]["en"].format(**err.value.values) == "Stop 1: the coordinates are outside Ukraine"
