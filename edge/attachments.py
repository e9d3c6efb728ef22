"""Photos and scans of a citizen's documents attached to an application.

Nothing of a file reaches the disk in plaintext.  Each attachment has a fresh
data key; the content is encrypted in chunks (AES-256-GCM, associated data
``attachments|id|content/i/n|version``, so a chunk cannot be moved, reordered
or dropped unnoticed) and the original file name is sealed the same way
(field ``meta``).  The data key is wrapped to HQ's public key and under the
node key, exactly like a record (sync/crypto.py).

The sealed chunks go to HQ on the outbox's ``blob`` stream, one chunk per
item, small enough that an item always fits one MQTT batch
(``max_batch_bytes`` 64 KiB).  A blob item is ``u16 header length | JSON
header | chunk ciphertext``; chunk 0's header also carries the sealed meta and
HQ's wrap of the key (hq/attachments.py reassembles and opens them).  The
items are enqueued in the same transaction as the attachment rows, after the
application's record, so they reach HQ exactly once like any record.

The file's type is decided from its first bytes, never from the name or the
browser's claim; the name is only ever shown (sealed), never used as a path.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import unicodedata
import uuid
from urllib.parse import unquote
from dataclasses import dataclass

import aiosqlite
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sync import crypto, outbox
from sync.blob import CHUNK, TABLE, aad_id, blob_item, chunk_field, open_chunks
from sync.db import fetch_all, run_transaction, transaction
from sync.errors import OutboxFull
from sync.migrate import migrate

from . import audit
from .errors import CryptoError, StorageFull
from .store import Store

VERSION = 2  # 2: the application id is in the associated data (sync/blob.py aad_id); 1 still opens
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_FILES = 8  # per upload
MAX_PER_APPLICATION = 20

MIGRATIONS = [
    """
    CREATE TABLE attachments (
        id TEXT PRIMARY KEY,
        application_id TEXT NOT NULL REFERENCES applications(id),
        created REAL NOT NULL,
        created_by TEXT NOT NULL,
        version INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        chunks INTEGER NOT NULL,
        meta BLOB NOT NULL,
        wrap_hq BLOB NOT NULL,
        wrap_node BLOB,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        shredded_at REAL
    );
    CREATE INDEX attachments_application ON attachments(application_id);
    CREATE TABLE attachment_chunks (
        attachment_id TEXT NOT NULL REFERENCES attachments(id),
        idx INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (attachment_id, idx)
    ) WITHOUT ROWID;
    """,
    # 2: the data key wrapped under a per-period key (edge/store.py), not the node key
    """
    ALTER TABLE attachments ADD COLUMN key_period TEXT;
    """,
]

# (magic test, MIME type, short label shown to people)
KINDS: tuple[tuple[str, str], ...] = (
    ("image/jpeg", "JPEG"), ("image/png", "PNG"), ("image/webp", "WebP"), ("image/heic", "HEIC"), ("application/pdf", "PDF"),
)
LABELS = dict(KINDS)


class AttachmentError(ValueError):
    """A file that cannot be accepted; the message is Ukrainian, for the administrator."""


def sniff(data: bytes) -> str | None:
    """The MIME type from the first bytes, or None if it is not a photo or a PDF."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"heif", b"mif1", b"hevc"):
        return "image/heic"
    if data[:5] == b"%PDF-":
        return "application/pdf"
    return None


def display_name(raw: str) -> str:
    """A harmless name to show: no path, no control characters, at most 120 characters."""
    # Some clients percent-encode the name in the multipart header (aiohttp does): decode first, so an
    # encoded "../" is seen as one.
    name = unquote(raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip().lstrip(".")
    return name[:120] or "document"


@dataclass(frozen=True)
class Upload:
    name: str
    content_type: str
    data: bytes


def check_upload(filename: str, data: bytes) -> Upload:
    """Validate one uploaded file (type from its bytes, size); AttachmentError in Ukrainian."""
    name = display_name(filename)
    if not data:
        raise AttachmentError(f"Файл «{name}» порожній")
    if len(data) > MAX_FILE_BYTES:
        raise AttachmentError(f"Файл «{name}» завеликий: до {MAX_FILE_BYTES // (1024 * 1024)} МБ")
    kind = sniff(data)
    if kind is None:
        raise AttachmentError(f"Файл «{name}» не є фото (JPEG, PNG, WebP, HEIC) чи PDF")
    return Upload(name, kind, data)


@dataclass(frozen=True)
class Prepared:
    id: str
    content_type: str
    size: int
    meta: bytes  # nonce || ciphertext of {"name": ...}
    chunks: list[bytes]  # nonce || ciphertext each
    wrap_hq: bytes
    wrap_node: bytes
    version: int = 1
    key_period: str | None = None
    application_id: str | None = None  # bound into the associated data (version 2)


@dataclass(frozen=True)
class AttachmentInfo:
    id: str
    application_id: str
    content_type: str
    label: str
    size: int
    created: float
    shredded: bool


def seal_upload(att_id: str, up: Upload, hq_public: X25519PublicKey, node_key: bytes, application_id: str | None = None,
                key_period: str | None = None) -> Prepared:
    """Seal one file; with its ``application_id`` (version 2) the application is bound into every associated data."""
    version = 1 if application_id is None else VERSION
    rid = aad_id(att_id, version, application_id)
    dk = crypto.random_key()
    aes = AESGCM(dk)
    pieces = [up.data[i:i + CHUNK] for i in range(0, len(up.data), CHUNK)] or [b""]
    n = len(pieces)
    chunks = []
    for i, piece in enumerate(pieces):
        nonce = os.urandom(crypto.NONCE_LEN)
        chunks.append(nonce + aes.encrypt(nonce, piece, crypto.field_aad(TABLE, rid, chunk_field(i, n), version)))
    nonce = os.urandom(crypto.NONCE_LEN)
    meta = nonce + aes.encrypt(nonce, json.dumps({"name": up.name}).encode(), crypto.field_aad(TABLE, rid, "meta", version))
    ctx = crypto.record_aad(TABLE, rid, version)
    return Prepared(att_id, up.content_type, len(up.data), meta, chunks, crypto.wrap_to_public(dk, hq_public, ctx),
                    crypto.wrap_with_key(dk, node_key, ctx), version, key_period, application_id)


class Attachments:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db
        self.clock = store.clock
        store.period_keyed.append(TABLE)

    @staticmethod
    async def create_schema(db: aiosqlite.Connection) -> None:
        await migrate(db, "attachments", MIGRATIONS)

    async def prepare(self, uploads: list[Upload], application_id: str) -> list[tuple[Upload, Prepared]]:
        """Seal the files for ``application_id`` (needs the store unlocked), off the event loop, before the transaction."""
        period, key = await self.store.period_key(self.clock.now())

        def seal_all() -> list[tuple[Upload, Prepared]]:
            return [(u, seal_upload(uuid.uuid4().hex, u, self.store.hq_seal_public, key, application_id, period)) for u in uploads]

        # Encrypting megabytes is CPU work: off the event loop, like the scrypt of a login.
        return await asyncio.get_running_loop().run_in_executor(None, seal_all)

    def insert_sync(self, conn: sqlite3.Connection, application_id: str, prepared: list[tuple[Upload, Prepared]], actor: str) -> list[str]:
        """Rows, blob outbox items and audit entries, in the caller's transaction."""
        stamp = self.store.time.stamp()
        now = stamp.t
        incoming = sum(sum(len(c) + 300 for c in p.chunks) for _, p in prepared)
        outbox.check_capacity_sync(conn, "blob", incoming, self.store.limits)
        row = conn.execute("SELECT COUNT(*) FROM attachments WHERE application_id = ?", (application_id,)).fetchone()
        if int(row[0]) + len(prepared) > MAX_PER_APPLICATION:
            raise AttachmentError(f"До однієї заяви можна додати не більше {MAX_PER_APPLICATION} файлів")
        ids = []
        for _, p in prepared:
            if p.application_id not in (None, application_id):
                raise ValueError("attachment sealed for another application")  # it would never open: a bug, not a user error
            n = len(p.chunks)
            seqs = []
            for i, chunk in enumerate(p.chunks):
                header: dict[str, object] = {"type": "attachment", "id": p.id, "application_id": application_id, "index": i, "count": n,
                                             "version": p.version}
                if i == 0:
                    header.update(content_type=p.content_type, size=p.size, created=now, clock=stamp.wire(),
                                  meta=base64.b64encode(p.meta).decode(), wrap_hq=base64.b64encode(p.wrap_hq).decode())
                seqs.append(outbox.enqueue_sync(conn, "blob", blob_item(header, chunk), now))
            conn.execute(
                "INSERT INTO attachments(id, application_id, created, created_by, version, content_type, size, chunks, meta, wrap_hq,"
                " wrap_node, first_seq, last_seq, key_period) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (p.id, application_id, now, actor, p.version, p.content_type, p.size, n, p.meta, p.wrap_hq, p.wrap_node, seqs[0], seqs[-1],
                 p.key_period),
            )
            conn.executemany("INSERT INTO attachment_chunks(attachment_id, idx, data) VALUES (?, ?, ?)",
                             [(p.id, i, c) for i, c in enumerate(p.chunks)])
            audit.append_sync(conn, stamp, actor, "create", TABLE, p.id, f"attachment to application {application_id}")
            ids.append(p.id)
        return ids

    async def add(self, application_id: str, uploads: list[Upload], actor: str) -> list[str]:
        """Attach files to an existing application, in one transaction of their own."""
        prepared = await self.prepare(uploads, application_id)

        def work(conn: sqlite3.Connection) -> list[str]:
            if conn.execute("SELECT 1 FROM applications WHERE id = ?", (application_id,)).fetchone() is None:
                raise KeyError(application_id)
            return self.insert_sync(conn, application_id, prepared, actor)

        try:
            ids = await run_transaction(self.db, work)
        except OutboxFull as exc:
            raise StorageFull(exc.message_uk) from exc
        self.store._notify()
        return ids

    async def list(self, application_id: str) -> list[AttachmentInfo]:
        """What may be shown without opening anything: type, size, time (the name stays sealed)."""
        rows = await fetch_all(
            self.store.reader,
            "SELECT id, application_id, content_type, size, created, wrap_node IS NULL FROM attachments WHERE application_id = ? ORDER BY created, id",
            (application_id,),
        )
        return [AttachmentInfo(r[0], r[1], r[2], LABELS.get(r[2], r[2]), int(r[3]), float(r[4]), bool(r[5])) for r in rows]

    async def read(self, attachment_id: str, actor: str, reason: str = "view attachment") -> tuple[AttachmentInfo, str, bytes]:
        """Open one attachment on the van (an audited read); KeyError if unknown, CryptoError if shredded."""
        self.store._require_key()
        async with self.db.execute(
            "SELECT application_id, version, content_type, size, created, meta, wrap_node, key_period FROM attachments WHERE id = ?", (attachment_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            raise KeyError(attachment_id)
        app_id, version, ctype, size, created, meta, wrap_node, key_period = row
        if wrap_node is None:
            raise CryptoError("the node's copy of this attachment's key was shredded")
        async with self.db.execute("SELECT data FROM attachment_chunks WHERE attachment_id = ? ORDER BY idx", (attachment_id,)) as cur:
            chunks = [bytes(r[0]) async for r in cur]
        key = await self.store.wrapping_key(key_period)
        dk = crypto.unwrap_with_key(bytes(wrap_node), key, crypto.record_aad(TABLE, aad_id(attachment_id, int(version), app_id), int(version)))
        name, data = open_chunks(attachment_id, int(version), dk, chunks, bytes(meta), app_id)
        async with transaction(self.db):
            await audit.append(self.db, self.store.time.stamp(), actor, "read", TABLE, attachment_id, reason)
        self.store._notify()
        info = AttachmentInfo(attachment_id, app_id, ctype, LABELS.get(ctype, ctype), int(size), float(created), False)
        return info, name, data

    async def shred_expired(self, retention_s: float) -> int:
        """Like Store.shred_expired: once HQ acked every chunk and retention passed, forget the local copy.

        In trusted time only (without it, it waits), and counted from the later of the attachment's and its
        application's time, the application's having been corrected by a time fix (untrusted ones wait).
        """
        stamp = self.store.time.stamp()
        if not stamp.trusted and retention_s > 0:
            return 0
        now = stamp.t
        async with self.db.execute("SELECT acked FROM outbox_stream WHERE stream = 'blob'") as cur:
            row = await cur.fetchone()
        acked = int(row[0]) if row else 0
        async with transaction(self.db):
            async with self.db.execute(
                "SELECT a.id FROM attachments a LEFT JOIN applications p ON p.id = a.application_id"
                " WHERE a.wrap_node IS NOT NULL AND a.last_seq <= ?"
                " AND (? <= 0 OR (COALESCE(p.time_trusted, 1) > 0 AND MAX(a.created, COALESCE(p.created, a.created)) <= ?))",
                (acked, retention_s, now - retention_s),
            ) as cur:
                ids = [r[0] for r in await cur.fetchall()]
            for aid in ids:
                await self.db.execute("DELETE FROM attachment_chunks WHERE attachment_id = ?", (aid,))
                await self.db.execute("UPDATE attachments SET wrap_node = NULL, meta = x'', shredded_at = ? WHERE id = ?", (now, aid))
                await audit.append(self.db, stamp, "system", "shred", TABLE, aid, "retention passed, HQ holds it")
        await self.store.forget_spent_keys(everything=retention_s <= 0, checkpoint=bool(ids))
        if ids:
            self.store._notify()
        return len(ids)
