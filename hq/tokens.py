"""Machine tokens: how a script or another system reads HQ's JSON API without a browser session.

``mobile-office hq-token NAME --role ROLE`` prints a token once; HQ keeps
only its SHA-256 (a token is 256 random bits, so a fast hash is enough: there
is nothing to guess).  A client sends ``Authorization: Bearer TOKEN``; the
token acts with its role's permissions, like a user.  ``--revoke`` ends it at
once (HQ reads the table on every request).
"""

from __future__ import annotations

import hashlib
import secrets

from .db import DB, migrate, transaction
from .errors import HQError
from .users import ROLES, USERNAME_RE

PREFIX = "mohq_"  # recognisable in a leaked-secrets scan

MIGRATIONS = [
    """
    CREATE TABLE hq_tokens (
        name TEXT PRIMARY KEY, role TEXT NOT NULL, hash {BLOB} NOT NULL UNIQUE, created DOUBLE PRECISION NOT NULL, revoked DOUBLE PRECISION
    );
    """,
]


class TokenError(HQError):
    """A token cannot be issued or revoked (bad name, role, unknown token)."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_schema(db: DB) -> None:
    await migrate(db, "hq_tokens", MIGRATIONS)


async def issue(db: DB, name: str, role: str, now: float) -> str:
    """A new token for NAME (replacing an earlier one of that name); returned once, never stored."""
    if not USERNAME_RE.match(name):
        raise TokenError("token name: 2-32 lowercase Latin letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise TokenError(f"role must be one of {', '.join(ROLES)}")
    token = PREFIX + secrets.token_urlsafe(32)
    async with transaction(db):
        await db.execute(
            "INSERT INTO hq_tokens(name, role, hash, created, revoked) VALUES (?, ?, ?, ?, NULL)"
            " ON CONFLICT(name) DO UPDATE SET role = excluded.role, hash = excluded.hash, created = excluded.created, revoked = NULL",
            (name, role, _digest(token), now),
        )
    return token


async def revoke(db: DB, name: str, now: float) -> None:
    async with transaction(db):
        cur = await db.execute("UPDATE hq_tokens SET revoked = ? WHERE name = ? AND revoked IS NULL", (now, name))
        if cur.rowcount == 0:
            raise TokenError(f"no active token named {name}")


async def check(db: DB, token: str) -> tuple[str, str] | None:
    """(name, role) of a valid, unrevoked token; None otherwise."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    async with db.execute("SELECT name, role FROM hq_tokens WHERE hash = ? AND revoked IS NULL", (_digest(token),)) as cur:
        row = await cur.fetchone()
    return (str(row[0]), str(row[1])) if row else None
