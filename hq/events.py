"""Folding the vans' events (stream ``evt``) into HQ's projections, each with its own cursor.

A projection keeps ``<cursor_table>(node_id, seq)``: how far it has read each
van's contiguous events.  One round reads what has arrived since and hands
each JSON event to ``fold``, in one transaction per van together with the
cursor's advance, so a crash re-reads at most the uncommitted round and never
skips an event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sync import safejson

from .db import DB, transaction

# fold(node_id, event) -> whether the event was one this projection uses
Fold = Callable[[str, dict[str, Any]], Awaitable[bool]]
# fold(node_id, event, seq): the same, told where the event is in the van's stream (an index of events keeps it)
FoldSeq = Callable[[str, dict[str, Any], int], Awaitable[bool]]


async def fold_events(db: DB, cursor_table: str, fold: Fold | FoldSeq, with_seq: bool = False,
                      flush: Callable[[], Awaitable[None]] | None = None) -> int:
    """Apply ``fold`` to every event not yet seen by this projection; returns how many it used.

    ``flush``: called inside each van's transaction before the cursor advances (a fold that batches its writes).
    """
    # cursor_table is a constant of the calling module, never user input.
    async with db.execute(
        f"SELECT s.node_id, s.contiguous, COALESCE(c.seq, 0) FROM stream_state s LEFT JOIN {cursor_table} c ON c.node_id = s.node_id"
        " WHERE s.stream = 'evt' AND s.contiguous > COALESCE(c.seq, 0)"
    ) as cur:
        todo = [(str(r[0]), int(r[1]), int(r[2])) for r in await cur.fetchall()]
    used = 0
    for node_id, upto, after in todo:
        async with db.execute(
            "SELECT seq, payload FROM items WHERE node_id = ? AND stream = 'evt' AND seq > ? AND seq <= ? ORDER BY seq", (node_id, after, upto)
        ) as cur:
            rows = [(int(r[0]), bytes(r[1])) for r in await cur.fetchall()]
        async with transaction(db):
            for seq, payload in rows:
                try:
                    doc = safejson.loads(payload)
                except ValueError:
                    continue
                if not isinstance(doc, dict):
                    continue
                if await (fold(node_id, doc, seq) if with_seq else fold(node_id, doc)):  # type: ignore[call-arg]
                    used += 1
            if flush is not None:
                await flush()
            await db.execute(
                f"INSERT INTO {cursor_table}(node_id, seq) VALUES (?, ?) ON CONFLICT (node_id) DO UPDATE SET seq = excluded.seq",
                (node_id, upto),
            )
    return used
