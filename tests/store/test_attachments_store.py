"""Attachments in the store: saved with their application or not at all, after its record, shredded after HQ holds them."""

from __future__ import annotations

import base64
import os
import sqlite3
import uuid

import pytest

from edge.attachments import MAX_PER_APPLICATION, AttachmentError, Attachments, check_upload
from edge.errors import CryptoError
from edge.store import SavedApplication, Store
from provisioning.keys import HQKeys
from sync import crypto, outbox
from sync.blob import aad_id, open_chunks, parse_blob_item
from sync.clock import ManualClock


def photo(n: int = 120_000) -> bytes:
    return b"\xff\xd8\xff\xe0" + os.urandom(n)


async def test_saved_in_the_intake_transaction_after_the_record(store: Store) -> None:
    att = Attachments(store)
    await att.create_schema(store.db)
    up = check_upload("pass.jpg", photo())
    first = uuid.uuid4().hex
    prepared = await att.prepare([up], first)

    def then(conn: sqlite3.Connection, saved: list[SavedApplication]) -> None:
        att.insert_sync(conn, saved[0].id, prepared, "admin")

    saved = await store.create_applications("Шевченко", "Тарас", "1759013776", ["RES-01"], "admin", then=then, notes="звірено",
                                            first_id=first)
    rows = await att.list(saved[0].id)
    assert len(rows) == 1 and rows[0].size == len(up.data)
    _, name, data = await att.read(rows[0].id, "admin")
    assert (name, data) == ("pass.jpg", up.data)
    assert (await store.read_application(saved[0].id, "admin"))["notes"] == "звірено"
    async with store.db.execute("SELECT stream, COUNT(*), MIN(created), MAX(created) FROM outbox WHERE stream IN ('rec', 'blob') GROUP BY stream") as cur:
        by_stream = {r[0]: r[1:] async for r in cur}
    assert by_stream["rec"][0] == 1 and by_stream["blob"][0] == 3  # 120 kB in 48 KiB chunks
    assert by_stream["rec"][1] == by_stream["blob"][1]  # one transaction; rec drains before blob (outbox.PRIORITY)
    assert outbox.PRIORITY.index("rec") < outbox.PRIORITY.index("blob")
    async with store.db.execute("SELECT payload FROM outbox WHERE stream = 'blob' ORDER BY seq") as cur:
        headers = [parse_blob_item(bytes(r[0]))[0] async for r in cur]
    assert [h["index"] for h in headers] == [0, 1, 2] and all(h["application_id"] == saved[0].id for h in headers)
    assert "wrap_hq" in headers[0] and "wrap_hq" not in headers[1]


async def test_a_failing_attachment_saves_nothing(store: Store) -> None:
    att = Attachments(store)
    await att.create_schema(store.db)
    first = uuid.uuid4().hex
    prepared = await att.prepare([check_upload("a.jpg", photo(1000))] * (MAX_PER_APPLICATION + 1), first)

    def then(conn: sqlite3.Connection, saved: list[SavedApplication]) -> None:
        att.insert_sync(conn, saved[0].id, prepared, "admin")

    with pytest.raises(AttachmentError):
        await store.create_applications("Шевченко", "Тарас", "1759013776", ["RES-01"], "admin", then=then, first_id=first)
    for table in ("applications", "attachments", "attachment_chunks", "outbox"):
        async with store.db.execute(f"SELECT COUNT(*) FROM {table}") as cur:
            row = await cur.fetchone()
        assert row is not None and row[0] == 0, table


async def test_shredded_once_hq_holds_every_chunk_and_retention_passed(store: Store, clock: ManualClock) -> None:
    att = Attachments(store)
    await att.create_schema(store.db)
    app = await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
    [aid] = await att.add(app.id, [check_upload("a.pdf", b"%PDF-1.4 " + os.urandom(60_000))], "admin")
    clock.advance(8 * 86400)
    assert await att.shred_expired(7 * 86400) == 0  # HQ has not acknowledged yet
    await outbox.apply_ack(store.db, "blob", 1, clock.now())
    assert await att.shred_expired(7 * 86400) == 0  # only the first of two chunks
    await outbox.apply_ack(store.db, "blob", 2, clock.now())
    assert await att.shred_expired(7 * 86400) == 1
    with pytest.raises(CryptoError):
        await att.read(aid, "admin")
    assert (await att.list(app.id))[0].shredded
    async with store.db.execute("SELECT COUNT(*) FROM attachment_chunks") as cur:
        row = await cur.fetchone()
    assert row is not None and row[0] == 0
    with pytest.raises(KeyError):
        await att.add("0" * 32, [check_upload("a.pdf", b"%PDF-1.4")], "admin")


async def test_full_blob_class_refuses_the_file_and_keeps_the_rest(store: Store) -> None:
    from edge.errors import StorageFull
    from sync.outbox import Limits

    att = Attachments(store)
    await att.create_schema(store.db)
    app = await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
    store.limits = Limits({**Limits().per_stream, "blob": 100_000})
    await att.add(app.id, [check_upload("a.jpg", photo(50_000))], "admin")
    with pytest.raises(StorageFull) as exc:
        await att.add(app.id, [check_upload("b.jpg", photo(80_000))], "admin")
    assert "не прийнято" in exc.value.message  # Ukrainian text for the administrator
    assert len(await att.list(app.id)) == 1
    async with store.db.execute("SELECT COUNT(*) FROM outbox WHERE stream = 'blob'") as cur:
        row = await cur.fetchone()
    assert row is not None and row[0] == 2  # the first file's two chunks only


async def test_an_attachment_moved_to_another_application_does_not_open(store: Store, hq_keys: HQKeys) -> None:
    """Issue 16: the application id is in the associated data (version 2), at the van and for HQ's key."""
    att = Attachments(store)
    await att.create_schema(store.db)
    mine = await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
    other = await store.create_application("Коваленко", "Олена", "3184710691", "RES-01", "admin")
    [aid] = await att.add(mine.id, [check_upload("a.jpg", photo(2000))], "admin")
    assert (await att.read(aid, "admin"))[2]  # opens where it belongs
    await store.db.execute("UPDATE attachments SET application_id = ? WHERE id = ?", (other.id, aid))
    with pytest.raises(CryptoError):
        await att.read(aid, "admin")
    # What HQ receives carries the same binding: its header's application id must be the real one.
    async with store.db.execute("SELECT payload FROM outbox WHERE stream = 'blob' ORDER BY seq") as cur:
        items = [parse_blob_item(bytes(r[0])) async for r in cur]
    head = items[0][0]
    assert head["version"] == 2 and head["application_id"] == mine.id
    dk = crypto.unwrap_with_private(base64.b64decode(str(head["wrap_hq"])), hq_keys.seal,
                                    crypto.record_aad("attachments", aad_id(aid, 2, mine.id), 2))
    chunks, meta = [c for _, c in items], base64.b64decode(str(head["meta"]))
    assert open_chunks(aid, 2, dk, chunks, meta, mine.id)[0] == "a.jpg"
    with pytest.raises(CryptoError):
        open_chunks(aid, 2, dk, chunks, meta, other.id)
