"""HQ's check of each van's audit hash chain.

Entries arrive on the ``audit`` stream, possibly out of order.  HQ walks
them in sequence order from the last verified one: an entry that does not
follow its predecessor (edited, removed, inserted) is recorded as an alert,
and verification stops there so one break is not reported again and again.
"""

from __future__ import annotations

from sync.auditchain import GENESIS, parse_wire, verify_link

from .db import DB

MIGRATIONS = [
    """
    CREATE TABLE audit_state (node_id TEXT PRIMARY KEY, verified_seq BIGINT NOT NULL, last_hash {BLOB} NOT NULL, broken BIGINT NOT NULL DEFAULT 0);
    CREATE TABLE audit_alerts (id {ID}, node_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, seq BIGINT NOT NULL, problem TEXT NOT NULL);
    """,
]


async def verify_new(db: DB, node_id: str, now: float) -> list[str]:
    """Verify what became contiguous since last time; inside the caller's transaction."""
    async with db.execute("SELECT verified_seq, last_hash, broken FROM audit_state WHERE node_id = ?", (node_id,)) as cur:
        row = await cur.fetchone()
    verified, last_hash, broken = (0, GENESIS, 0) if row is None else (int(row[0]), bytes(row[1]), int(row[2]))
    if broken:
        return []
    problems: list[str] = []
    async with db.execute(
        "SELECT seq, payload FROM items WHERE node_id = ? AND stream = 'audit' AND seq > ? ORDER BY seq", (node_id, verified)
    ) as cur:
        rows = await cur.fetchall()
    for seq, payload in rows:
        if seq != verified + 1:
            break  # not yet delivered; the gap is filled by a resend
        try:
            entry = parse_wire(bytes(payload))
            problem = verify_link(last_hash, entry) if entry.seq == seq else f"entry numbered {entry.seq} sent as {seq}"
        except Exception as exc:  # noqa: BLE001 - whatever a hostile entry makes the parser raise, it is one break, not a stuck stream
            problem = f"entry {seq} is unreadable: {type(exc).__name__}"
        if problem:
            problems.append(problem)
            await db.execute("INSERT INTO audit_alerts(node_id, at, seq, problem) VALUES (?, ?, ?, ?)", (node_id, now, seq, problem))
            broken = 1
            break
        verified, last_hash = seq, entry.hash
    await db.execute(
        "INSERT INTO audit_state(node_id, verified_seq, last_hash, broken) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(node_id) DO UPDATE SET verified_seq = excluded.verified_seq, last_hash = excluded.last_hash, broken = excluded.broken",
        (node_id, verified, last_hash, broken),
    )
    return problems


async def alerts(db: DB) -> list[dict[str, object]]:
    async with db.execute("SELECT node_id, at, seq, problem FROM audit_alerts ORDER BY id") as cur:
        return [{"node_id": r[0], "at": r[1], "seq": r[2], "problem": r[3]} async for r in cur]
