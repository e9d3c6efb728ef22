"""Wire format and crypto of attachment chunks on the ``blob`` stream (both ends).

A blob item is ``u16 header length | JSON header | chunk``; the chunk is
``nonce || AES-256-GCM(content piece)`` under the attachment's data key with
associated data ``mo/v1|attachments|{id}|content/{i}/{n}|{version}``, so a
chunk moved to another attachment, position or count does not open.  From
version 2 the ``{id}`` is ``{attachment id}|{application id}`` (``aad_id``):
an attachment moved to another application does not open either.
Chunk 0's header carries the sealed meta (file name) and HQ's wrap of the key.
"""

from __future__ import annotations

import json
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import crypto
from .errors import CryptoError

TABLE = "attachments"
# One chunk + its header + nonce/tag stays well under the uplink's 64 KiB batch (max_batch_bytes).
CHUNK = 48 * 1024
HEADER = struct.Struct(">H")


def chunk_field(index: int, count: int) -> str:
    return f"content/{index}/{count}"


def aad_id(att_id: str, version: int, application_id: str | None = None) -> str:
    """The record id in an attachment's associated data: version 2 binds the application it belongs to."""
    if version < 2:
        return att_id
    if not application_id:
        raise CryptoError("attachment does not open: its application is unknown")
    return f"{att_id}|{application_id}"


def open_chunks(att_id: str, version: int, data_key: bytes, chunks: list[bytes], meta: bytes,
                application_id: str | None = None) -> tuple[str, bytes]:
    """(name, content); CryptoError if a chunk is missing, moved or altered.  Used by HQ too."""
    aes = AESGCM(data_key)
    rid = aad_id(att_id, version, application_id)
    n = len(chunks)
    out = []
    try:
        for i, blob in enumerate(chunks):
            out.append(aes.decrypt(blob[:crypto.NONCE_LEN], blob[crypto.NONCE_LEN:], crypto.field_aad(TABLE, rid, chunk_field(i, n), version)))
        m = json.loads(aes.decrypt(meta[:crypto.NONCE_LEN], meta[crypto.NONCE_LEN:], crypto.field_aad(TABLE, rid, "meta", version)))
    except (InvalidTag, ValueError) as exc:  # the same answer for every kind of tampering
        raise CryptoError("attachment does not open: tampered, incomplete or moved") from exc
    return str(m.get("name", "document")), b"".join(out)


def blob_item(header: dict[str, object], chunk: bytes) -> bytes:
    h = json.dumps(header, separators=(",", ":")).encode()
    return HEADER.pack(len(h)) + h + chunk


def parse_blob_item(item: bytes) -> tuple[dict[str, object], bytes]:
    """Split a blob item into its JSON header and chunk; ValueError if malformed."""
    if len(item) < HEADER.size:
        raise ValueError("blob item too short")
    (n,) = HEADER.unpack_from(item)
    header = json.loads(item[HEADER.size:HEADER.size + n])  # JSONDecodeError is a ValueError
    if not isinstance(header, dict):
        raise ValueError("blob header is not an object")
    return header, item[HEADER.size + n:]
