"""The queue of the day and the citizens' ratings.

Neither holds personal data in the clear: a ticket is a label ("А-007"),
a rating is a score plus a comment sealed to HQ only (a citizen may type a
name into it, and the van has no need to read it).  Both work while the
store is locked.  Queue events go to HQ on the ``evt`` stream for the
workload figures (waiting and service times).
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from sync import crypto, outbox
from sync.db import fetch_all, fetch_one, transaction

from .store import Store

PREREG_PREFIX, WALKIN_PREFIX = "П", "А"
MAX_COMMENT = 1000


class DeskError(ValueError):
    """A queue or rating action that cannot be done; the message is for people."""


@dataclass(frozen=True)
class Ticket:
    id: str
    label: str
    status: str
    preregistered: bool
    created: float
    called_at: float | None
    finished_at: float | None


class ServiceDesk:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db
        self.clock = store.clock

    def _day(self) -> str:
        """The queue's day in trusted time; without it, a queue of its own for this boot (a wrong date must not start
        a new day, or continue an old one).  It stays open on the true day once trusted time comes (``_days``)."""
        st = self.store.time.stamp()
        return datetime.fromtimestamp(st.t, timezone.utc).strftime("%Y%m%d") if st.trusted else f"U{st.boot[:12]}"

    def _days(self) -> tuple[str, str]:
        """Today's queue: the trusted day and this boot's queue kept before trusted time came."""
        return self._day(), f"U{self.store.time.boot[:12]}"

    async def _event(self, kind: str, ticket_id: str, label: str, actor: str | None, at: float) -> None:
        item = json.dumps({"type": "queue", "event": kind, "id": ticket_id, "label": label, "by": actor, "at": at,
                           "clock": self.store.time.stamp().wire()}, separators=(",", ":"))
        await outbox.enqueue(self.db, "evt", item.encode(), at)

    # -- queue -------------------------------------------------------------------
    async def issue_ticket(self, preregistered: bool = False) -> Ticket:
        now, day = self.clock.now(), self._day()
        tid = uuid.uuid4().hex
        async with transaction(self.db):
            # numbers go on across this boot's untrusted queue and the true day: no two tickets of today share a label
            async with self.db.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM queue_tickets WHERE day IN (?, ?)", (day, self._days()[1])) as cur:
                row = await cur.fetchone()
            number = int(row[0]) if row else 1
            label = f"{PREREG_PREFIX if preregistered else WALKIN_PREFIX}-{number:03d}"
            await self.db.execute(
                "INSERT INTO queue_tickets(id, day, number, label, created, preregistered) VALUES (?, ?, ?, ?, ?, ?)",
                (tid, day, number, label, now, int(preregistered)),
            )
            if self.store.trips is not None:
                await self.store.trips.link("queue_tickets", tid, now)
            await self._event("issued", tid, label, None, now)
        self.store._notify()
        return Ticket(tid, label, "waiting", preregistered, now, None, None)

    async def call_next(self, actor: str) -> Ticket | None:
        """Pre-registered citizens first, then walk-ins, each in order of arrival."""
        now = self.clock.now()
        async with transaction(self.db):
            async with self.db.execute(
                "SELECT id, label FROM queue_tickets WHERE day IN (?, ?) AND status = 'waiting' ORDER BY preregistered DESC, number LIMIT 1",
                self._days(),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            await self.db.execute("UPDATE queue_tickets SET status = 'called', called_at = ?, served_by = ? WHERE id = ?", (now, actor, row[0]))
            await self._event("called", row[0], row[1], actor, now)
        self.store._notify()
        return await self.ticket(row[0])

    async def finish(self, ticket_id: str, served: bool, actor: str) -> Ticket:
        now = self.clock.now()
        status = "served" if served else "no_show"
        async with transaction(self.db):
            cur = await self.db.execute(
                "UPDATE queue_tickets SET status = ?, finished_at = ? WHERE id = ? AND status = 'called'", (status, now, ticket_id)
            )
            if not cur.rowcount:
                raise DeskError("Цей талон не викликано або його вже закрито")
            async with self.db.execute("SELECT label FROM queue_tickets WHERE id = ?", (ticket_id,)) as c2:
                row = await c2.fetchone()
            await self._event(status, ticket_id, row[0] if row else "?", actor, now)
        self.store._notify()
        return await self.ticket(ticket_id)

    async def ticket(self, ticket_id: str) -> Ticket:
        async with self.db.execute(
            "SELECT id, label, status, preregistered, created, called_at, finished_at FROM queue_tickets WHERE id = ?", (ticket_id,)
        ) as cur:
            r = await cur.fetchone()
        if r is None:
            raise DeskError("Талон не знайдено")
        return Ticket(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6])

    async def today(self) -> list[Ticket]:
        rows = await fetch_all(
            self.store.reader,
            "SELECT id, label, status, preregistered, created, called_at, finished_at FROM queue_tickets WHERE day IN (?, ?)"
            " ORDER BY status = 'waiting', preregistered DESC, number",
            self._days(),
        )
        return [Ticket(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6]) for r in rows]

    # -- ratings -------------------------------------------------------------------
    async def rating_token(self, application_id: str) -> str:
        """One token per service event (application); the same one on every reprint."""
        row = await fetch_one(self.store.reader, "SELECT token FROM ratings WHERE application_id = ?", (application_id,))
        if row is not None:  # every reprint: a plain read, no write transaction
            return str(row[0])
        async with transaction(self.db):
            async with self.db.execute("SELECT token FROM ratings WHERE application_id = ?", (application_id,)) as cur:
                row = await cur.fetchone()
            if row is not None:
                return str(row[0])
            token = secrets.token_urlsafe(16)
            await self.db.execute("INSERT INTO ratings(token, application_id, created) VALUES (?, ?, ?)", (token, application_id, self.clock.now()))
        return token

    async def rating_open(self, token: str) -> bool:
        async with self.db.execute("SELECT rated_at FROM ratings WHERE token = ?", (token,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise DeskError("Посилання для оцінювання недійсне")
        return row[0] is None

    async def rate(self, token: str, score: int, comment: str) -> None:
        if not 1 <= score <= 5:
            raise DeskError("Оберіть оцінку від 1 до 5")
        comment = comment.strip()[:MAX_COMMENT]
        stamp = self.store.time.stamp()
        now = stamp.t
        sealed = crypto.wrap_to_public(comment.encode(), self.store.hq_seal_public, f"rating|{token}".encode()) if comment else None
        async with transaction(self.db):
            async with self.db.execute("SELECT application_id, rated_at FROM ratings WHERE token = ?", (token,)) as cur:
                row = await cur.fetchone()
            if row is None:
                raise DeskError("Посилання для оцінювання недійсне")
            if row[1] is not None:
                raise DeskError("Цю послугу вже оцінено. Дякуємо!")
            await self.db.execute("UPDATE ratings SET score = ?, comment_sealed = ?, rated_at = ? WHERE token = ?", (score, sealed, now, token))
            item = {"type": "rating", "application_id": row[0], "score": score, "at": now, "comment_sealed": sealed.hex() if sealed else None, "token": token,
                    "clock": stamp.wire()}
            await outbox.enqueue(self.db, "rec", json.dumps(item, separators=(",", ":")).encode(), now)
        self.store._notify()
