"""SMS notices to citizens when an application is ready: a durable outbox and a pluggable gateway.

Decisions (docs/api.md, "HQ: application status and SMS"):

* Consent: a citizen gets an SMS only if the applicant card linked to the
  application holds a phone and ``sms_consent = yes`` (a checkbox on the van's
  applicant form, sealed with the card like every other field).  The
  personal-data consent of the intake form is not consent to be texted.
* No phone number at rest at HQ outside the sealed card: an outbox row holds
  only the record id and the notice id.  The sender opens the card with HQ's
  key at send time, uses the number in memory, and writes the opening to the
  vault's audit log.  Logs name the notice, never the number.
* Exactly once: the notice id ``ready:{record_id}`` is the idempotency key
  sent with every attempt; the gateway drops a key it has already accepted.
  The row is marked delivered only after a 2xx, so a crash between sending
  and marking resends the same key and the citizen still gets one SMS.
  One notice per application: becoming "ready" a second time sends nothing.
* Retries: transient failures (no connection, 5xx, 408, 429) back off
  exponentially between ``sms_retry_min`` and ``sms_retry_max`` seconds, for
  ever; a 4xx refusal is final (``rejected``) and shown to the officer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from kit.tasks import LOOPS, background
from sync.crypto import OpeningKeys, SealedRecord, open_with_hq_key
from .db import transaction
from sync.errors import CryptoError
from .db import migrate

from .appkeys import CONFIG, STORE
from .errors import HQError
from .store import HQStore

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
CREATE TABLE sms_outbox (
    notice_id TEXT PRIMARY KEY, record_id TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0, next_at DOUBLE PRECISION NOT NULL, sent_at DOUBLE PRECISION, delivered_at DOUBLE PRECISION, last_error TEXT
);
CREATE INDEX sms_outbox_due ON sms_outbox(state, next_at);
""",
]
# pending → delivered | rejected (the provider refused it) | no_consent (no phone or no consent on the card)
TEXT = "ЦНАП «Мобільний офіс»: ваша заява {number} готова до видачі."


class SmsError(HQError):
    """A send that failed for now: try again later."""


class SmsRejected(HQError):
    """The provider refused the message for good (bad number, bad request)."""


class SmsAdapter(Protocol):
    async def send(self, notice_id: str, to: str, text: str) -> None:
        """Deliver once per ``notice_id``; raise SmsError (retry) or SmsRejected (final)."""
        ...


class HttpSmsAdapter:
    """A provider's HTTP API: POST JSON {id, to, text}, bearer token, ``Idempotency-Key`` header."""

    def __init__(self, url: str, token: str | None, session: aiohttp.ClientSession, timeout: float = 15.0) -> None:
        self.url = url
        self.token = token
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def send(self, notice_id: str, to: str, text: str) -> None:
        headers = {"Idempotency-Key": notice_id}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            async with self.session.post(self.url, json={"id": notice_id, "to": to, "text": text}, headers=headers,
                                         timeout=self.timeout) as resp:
                if 200 <= resp.status < 300:
                    return
                if resp.status in (408, 429) or resp.status >= 500:
                    raise SmsError(f"gateway answered {resp.status}")
                raise SmsRejected(f"gateway refused: {resp.status}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise SmsError(f"gateway unreachable: {type(exc).__name__}") from exc


async def create_schema(store: HQStore) -> None:
    await migrate(store.db, "hq_sms", MIGRATIONS)


async def enqueue(store: HQStore, record_id: str, now: float) -> None:
    """Inside the caller's transaction (the status change): one notice per application, ever."""
    await store.db.execute(
        "INSERT INTO sms_outbox(notice_id, record_id, created, state, next_at) VALUES (?, ?, ?, 'pending', ?)"
        " ON CONFLICT (notice_id) DO NOTHING",
        (f"ready:{record_id}", record_id, now, now),
    )


async def notices(store: HQStore, record_id: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT notice_id, record_id, state, attempts, created, delivered_at, last_error FROM sms_outbox"
    args: tuple[Any, ...] = ()
    if record_id is not None:
        sql, args = sql + " WHERE record_id = ?", (record_id,)
    async with store.db.execute(sql + " ORDER BY created", args) as cur:
        return [{"notice_id": r[0], "record_id": r[1], "state": r[2], "attempts": r[3], "created": r[4], "delivered_at": r[5],
                 "last_error": r[6]} async for r in cur]


@dataclass(frozen=True)
class Recipient:
    number: str  # the application's number (not personal data)
    phone: str | None  # only in memory, never logged
    consent: bool


def _open(doc: dict[str, Any], table: str, key: OpeningKeys) -> dict[str, str]:
    sealed = SealedRecord(table, str(doc["id"]), int(doc["version"]), {k: base64.b64decode(v) for k, v in doc["fields"].items()},
                          base64.b64decode(doc["wrap_hq"]), None)
    return open_with_hq_key(sealed, key)


async def recipient(store: HQStore, key: OpeningKeys, record_id: str) -> Recipient:
    """Who to text: the phone and consent from the applicant card the van linked to the application."""
    async with store.db.execute("SELECT number, sealed FROM records WHERE record_id = ?", (record_id,)) as cur:
        row = await cur.fetchone()
    if row is None:
        return Recipient("?", None, False)
    applicant_id = json.loads(row[1]).get("applicant")
    if not applicant_id:
        return Recipient(str(row[0]), None, False)
    async with store.db.execute("SELECT sealed FROM applicants WHERE record_id = ?", (str(applicant_id),)) as cur:
        arow = await cur.fetchone()
    if arow is None:
        return Recipient(str(row[0]), None, False)  # the card has not reached HQ yet: the sender waits for it
    fields = _open(json.loads(arow[0]), "applicants", key)
    return Recipient(str(row[0]), fields.get("phone") or None, fields.get("sms_consent") == "yes")


async def _applicant_known(store: HQStore, record_id: str) -> bool:
    async with store.db.execute("SELECT sealed FROM records WHERE record_id = ?", (record_id,)) as cur:
        row = await cur.fetchone()
    applicant_id = json.loads(row[0]).get("applicant") if row else None
    if not applicant_id:
        return True  # nothing to wait for
    async with store.db.execute("SELECT 1 FROM applicants WHERE record_id = ?", (str(applicant_id),)) as cur:
        return await cur.fetchone() is not None


class SmsSender:
    """Sends due notices one by one; injected clock; safe to crash at any point."""

    def __init__(self, store: HQStore, key: OpeningKeys, adapter: SmsAdapter, retry_min: float = 5.0, retry_max: float = 600.0) -> None:
        self.store = store
        self.key = key
        self.adapter = adapter
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.wake = asyncio.Event()

    def backoff(self, attempts: int) -> float:
        return float(min(self.retry_max, self.retry_min * 2 ** max(0, attempts - 1)))

    async def _set(self, notice_id: str, sql: str, args: tuple[Any, ...]) -> None:
        async with transaction(self.store.db):
            await self.store.db.execute(f"UPDATE sms_outbox SET {sql} WHERE notice_id = ?", (*args, notice_id))

    async def run_once(self) -> int:
        """Try every due notice once; returns how many were delivered."""
        now = self.store.clock.now()
        async with self.store.db.execute(
            "SELECT notice_id, record_id, attempts FROM sms_outbox WHERE state = 'pending' AND next_at <= ? ORDER BY next_at LIMIT 100", (now,)
        ) as cur:
            due = [(str(r[0]), str(r[1]), int(r[2])) for r in await cur.fetchall()]
        delivered = 0
        for notice_id, record_id, attempts in due:
            if not await _applicant_known(self.store, record_id):
                await self._set(notice_id, "next_at = ?", (now + self.retry_max,))
                continue
            try:
                who = await recipient(self.store, self.key, record_id)
            except (CryptoError, ValueError, KeyError) as exc:
                log.warning("SMS %s: the applicant card does not open (%s)", notice_id, type(exc).__name__)
                await self._set(notice_id, "state = 'rejected', last_error = ?", ("card does not open",))
                continue
            if not who.consent or not who.phone:
                await self._set(notice_id, "state = 'no_consent'", ())
                continue
            async with transaction(self.store.db):
                # Reading the number is an access to personal data: audited like any vault opening.
                await self.store.db.execute(
                    "INSERT INTO vault_audit(at, username, record_id, reason) VALUES (?, ?, ?, ?)",
                    (now, "sms-sender", record_id, f"SMS-повідомлення {notice_id}"),
                )
                await self.store.db.execute(
                    "UPDATE sms_outbox SET attempts = attempts + 1, sent_at = ? WHERE notice_id = ?", (now, notice_id)
                )
            try:
                await self.adapter.send(notice_id, who.phone, TEXT.format(number=who.number))
            except SmsRejected as exc:
                log.warning("SMS %s refused by the gateway: %s", notice_id, exc)
                await self._set(notice_id, "state = 'rejected', last_error = ?", (str(exc)[:200],))
                continue
            except SmsError as exc:
                wait = self.backoff(attempts + 1)
                log.info("SMS %s not sent (%s): again in %.1f s", notice_id, exc, wait)
                await self._set(notice_id, "next_at = ?, last_error = ?", (now + wait, str(exc)[:200]))
                continue
            await self._set(notice_id, "state = 'delivered', delivered_at = ?, last_error = NULL", (self.store.clock.now(),))
            log.info("SMS %s delivered to the gateway", notice_id)
            delivered += 1
        return delivered

    async def next_due_in(self) -> float:
        async with self.store.db.execute("SELECT MIN(next_at) FROM sms_outbox WHERE state = 'pending'") as cur:
            row = await cur.fetchone()
        if row is None or row[0] is None:
            return self.retry_max
        return max(0.0, min(self.retry_max, float(row[0]) - self.store.clock.now()))

    async def run(self) -> None:
        while True:
            self.wake.clear()
            try:
                await self.run_once()
            except Exception:  # one bad round must not stop notices for good; logged with its traceback
                log.exception("SMS round failed")
            sleep = asyncio.ensure_future(self.store.clock.sleep(await self.next_due_in()))
            woken = asyncio.ensure_future(self.wake.wait())
            try:
                await asyncio.wait({sleep, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleep.cancel()
                woken.cancel()


SENDER = web.AppKey("hq_sms_sender", SmsSender)


async def sms_ctx(app: web.Application) -> AsyncIterator[None]:
    """The SMS sender, if a gateway is configured (``--sms-url``); without one no notice is queued."""
    cfg = app[CONFIG]
    if not cfg.sms_url:
        yield
        return
    await create_schema(app[STORE])
    async with aiohttp.ClientSession() as session:
        sender = SmsSender(app[STORE], cfg.keys.seal_ring, HttpSmsAdapter(cfg.sms_url, cfg.sms_token, session), cfg.sms_retry_min,
                           cfg.sms_retry_max)
        app[SENDER] = sender
        async with background(sender.run, "hq-sms", app[LOOPS]):
            yield
