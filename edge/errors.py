"""Exception root of the edge package.  Errors that reach HTTP carry their status."""

from __future__ import annotations

from kit.web import HttpProblem
from sync.errors import CryptoError

__all__ = ["CryptoError", "EdgeError", "Forbidden", "HttpError", "Locked", "StorageFull", "StoreLocked", "Unauthorized", "ValidationFailed"]


class EdgeError(Exception):
    """Root of every error raised by edge/."""


class StoreLocked(EdgeError):
    """Personal data cannot be read or written until an administrator logs in."""


class HttpError(EdgeError, HttpProblem):
    """An error with an HTTP status, a machine code and a Ukrainian message for people."""


class ValidationFailed(HttpError):
    status = 422
    code = "validation_failed"


class Unauthorized(HttpError):
    status = 401
    code = "unauthorized"


class Forbidden(HttpError):
    status = 403
    code = "forbidden"


class Locked(HttpError):
    status = 423
    code = "store_locked"


class StorageFull(HttpError):
    """Records and audit are never dropped: intake is refused before the outbox overflows."""

    status = 507
    code = "storage_full"
