"""Versioned schema migrations, one numbered list per component.

Each component (``store``, ``outbox``, ``trips``, ``hq`` ...) owns its own
list of scripts; ``schema_version`` records how far each one is.  Components
evolve independently and a database never runs a script twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aiosqlite

from .db import transaction

log = logging.getLogger(__name__)


async def migrate(db: aiosqlite.Connection, component: str, scripts: Sequence[str]) -> int:
    """Apply the scripts not yet applied for this component; returns its version."""
    async with transaction(db):
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        async with db.execute("SELECT version FROM schema_version WHERE component = ?", (component,)) as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        for version, script in enumerate(scripts[current:], start=current + 1):
            for stmt in script.split(";"):
                if stmt.strip():
                    await db.execute(stmt)
            await db.execute(
                "INSERT INTO schema_version(component, version) VALUES (?, ?)"
                " ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                (component, version),
            )
            log.info("%s schema migrated to version %d", component, version)
    return max(current, len(scripts))
