"""HQ's users and what each role may do."""

from __future__ import annotations

import asyncio
import hmac
import os
import re

from sync.crypto import SCRYPT_N, kek_from_password

from .db import DB, migrate, transaction
from .errors import HQError

ROLES = ("viewer", "dispatcher", "records_officer", "admin", "back_office")
# What each role may do beyond looking at the fleet.
PERMISSIONS = {
    "viewer": frozenset(),
    "dispatcher": frozenset({"command"}),
    "records_officer": frozenset({"open_records", "export_records"}),
    "admin": frozenset({"command", "open_records", "export_records", "manage_users"}),
    # The back office's importer (a machine token): exports records, opens nothing one by one.
    "back_office": frozenset({"export_records"}),
}
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,31}$")

MIGRATIONS = [
    """
    CREATE TABLE hq_users (
        username TEXT PRIMARY KEY, role TEXT NOT NULL, salt {BLOB} NOT NULL, n BIGINT NOT NULL, hash {BLOB} NOT NULL, created DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE vault_audit (
        id {ID}, at DOUBLE PRECISION NOT NULL, username TEXT NOT NULL, record_id TEXT NOT NULL, reason TEXT NOT NULL
    );
    """,
]


class UserError(HQError):
    """A user cannot be created (bad name, role or password)."""


def allowed(role: str, permission: str) -> bool:
    return permission in PERMISSIONS.get(role, frozenset())


async def create_schema(db: DB) -> None:
    await migrate(db, "hq_users", MIGRATIONS)


async def add_user(db: DB, username: str, role: str, password: str, now: float) -> None:
    if not USERNAME_RE.match(username):
        raise UserError("username: 2-32 lowercase Latin letters, digits, '.', '_' or '-'")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 10:
        raise UserError("password: at least 10 characters")
    salt = os.urandom(16)
    digest = await asyncio.get_running_loop().run_in_executor(None, kek_from_password, password, salt, SCRYPT_N)
    async with transaction(db):
        await db.execute(
            "INSERT INTO hq_users(username, role, salt, n, hash, created) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(username) DO UPDATE SET role = excluded.role, salt = excluded.salt, n = excluded.n, hash = excluded.hash",
            (username, role, salt, SCRYPT_N, digest, now),
        )


async def check_password(db: DB, username: str, password: str) -> str | None:
    """The user's role if the password is right, else None (same cost either way)."""
    async with db.execute("SELECT role, salt, n, hash FROM hq_users WHERE username = ?", (username,)) as cur:
        row = await cur.fetchone()
    salt, n = (bytes(row[1]), int(row[2])) if row else (b"\0" * 16, SCRYPT_N)
    digest = await asyncio.get_running_loop().run_in_executor(None, kek_from_password, password, salt, n)
    if row is None or not hmac.compare_digest(digest, bytes(row[3])):
        return None
    return str(row[0])
