"""Reading a form that may carry files (multipart/form-data) within fixed limits.

The app's ``client_max_size`` (2 MiB) stays as it is for every other
request; multipart bodies are streamed part by part here instead, each file
capped at ``attachments.MAX_FILE_BYTES`` and the whole request at
``MAX_REQUEST_BYTES``, so a tablet's 8 MB photos fit and nothing unbounded
is held in memory.
"""

from __future__ import annotations

from aiohttp import BodyPartReader, web

from .attachments import MAX_FILE_BYTES, MAX_FILES, AttachmentError, Upload, check_upload, display_name
from .errors import HttpError

MAX_REQUEST_BYTES = 96 * 1024 * 1024
MAX_FIELD_BYTES = 64 * 1024
READ = 64 * 1024


async def read_form(request: web.Request) -> tuple[dict[str, str], list[Upload], str | None]:
    """(text fields, accepted files, the first problem with a file in Ukrainian or None)."""
    if not request.content_type.startswith("multipart/"):
        form = await request.post()
        return {k: v for k, v in form.items() if isinstance(v, str)}, [], None
    reader = await request.multipart()
    fields: dict[str, str] = {}
    uploads: list[Upload] = []
    error: str | None = None
    total = 0
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise HttpError("Вкладені multipart-частини не підтримуються", code="bad_form", status=400)
        limit = MAX_FILE_BYTES if part.filename is not None else MAX_FIELD_BYTES
        buf = bytearray()
        too_big = False
        while chunk := await part.read_chunk(READ):
            total += len(chunk)
            if total > MAX_REQUEST_BYTES:
                raise HttpError(f"Запит завеликий: разом до {MAX_REQUEST_BYTES // (1024 * 1024)} МБ", code="too_large", status=413)
            if len(buf) + len(chunk) > limit:
                too_big = True  # keep reading to the end of the part, keep nothing
                continue
            buf += chunk
        if part.filename is None:
            if part.name and not too_big:
                fields[part.name] = buf.decode("utf-8", "replace")
            continue
        if not part.filename and not buf:
            continue  # an empty file input
        name = display_name(part.filename)
        if too_big:
            error = error or f"Файл «{name}» завеликий: до {MAX_FILE_BYTES // (1024 * 1024)} МБ"
            continue
        if len(uploads) >= MAX_FILES:
            error = error or f"За один раз можна додати не більше {MAX_FILES} файлів"
            continue
        try:
            uploads.append(check_upload(part.filename, bytes(buf)))
        except AttachmentError as exc:
            error = error or str(exc)
    return fields, uploads, error
