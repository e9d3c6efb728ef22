"""Status, acks and SMS at HQ, and the van's newer-wins merge, in-process on real SQLite files and a real local gateway."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.app_status import AppStatuses
from edge.store import Store
from firmware_sim.sms_gateway import SmsGateway
from hq import appstatus, sms
from hq.store import HQStore
from provisioning.keys import HQKeys
from sync import crypto, reconcile
from sync.clock import ManualClock
from hq.db import transaction

PHONE = "+380671234567"


async def put_record(store: HQStore, keys: HQKeys, rid: str, applicant: dict[str, str] | None) -> None:
    """A record (and its applicant card) as the van's ingest would have stored them."""
    node_key = crypto.random_key()
    app_doc: dict[str, object] = {"type": "application", "id": rid, "number": f"VAN-01-{rid[:4]}", "service_code": "RES-01", "created": 1.0,
                                  "version": 1}
    sealed = crypto.seal("applications", rid, 1, {"surname": "Косач"}, keys.seal_public, node_key)
    app_doc |= {"fields": {k: base64.b64encode(v).decode() for k, v in sealed.fields.items()},
                "wrap_hq": base64.b64encode(sealed.wrap_hq).decode()}
    async with transaction(store.db):
        if applicant is not None:
            aid = "a" + rid[1:]
            card = crypto.seal("applicants", aid, 1, applicant, keys.seal_public, node_key)
            await store.db.execute(
                "INSERT INTO applicants(node_id, seq, record_id, created, sealed) VALUES ('van-01', ?, ?, 1.0, ?)",
                (hash(aid) % 100000, aid, json.dumps({"type": "applicant", "id": aid, "version": 1,
                                                      "fields": {k: base64.b64encode(v).decode() for k, v in card.fields.items()},
                                                      "wrap_hq": base64.b64encode(card.wrap_hq).decode()})),
            )
            app_doc["applicant"] = aid
        await store.db.execute(
            "INSERT INTO records(node_id, seq, record_id, number, service_code, created, sealed) VALUES ('van-01', ?, ?, ?, 'RES-01', 1.0, ?)",
            (hash(rid) % 100000, rid, app_doc["number"], json.dumps(app_doc)),
        )


@pytest.fixture
async def hq(tmp_path: Path) -> AsyncIterator[HQStore]:
    store = await HQStore.open(tmp_path / "hq.db", ManualClock())
    from hq import users

    await users.create_schema(store.db)
    await appstatus.create_schema(store)
    yield store
    await store.close()


async def test_transitions_history_and_one_notice(hq: HQStore, hq_keys: HQKeys) -> None:
    await put_record(hq, hq_keys, "r" * 32, None)
    with pytest.raises(appstatus.StatusError) as exc:
        await appstatus.set_status(hq, "r" * 32, "issued", "olena", 10, notify_sms=True)
    assert exc.value.code == "bad_transition"
    with pytest.raises(appstatus.StatusError):
        await appstatus.set_status(hq, "x" * 32, "ready", "olena", 10, notify_sms=True)
    for i, st in enumerate(("ready", "in_progress", "ready", "issued")):
        await appstatus.set_status(hq, "r" * 32, st, "olena", 20 + i, notify_sms=True)
    assert await appstatus.current(hq, "r" * 32) == "issued"
    assert [(e["old"], e["status"]) for e in await appstatus.history(hq, "r" * 32)] == [
        ("accepted", "ready"), ("ready", "in_progress"), ("in_progress", "ready"), ("ready", "issued")]
    assert [n["notice_id"] for n in await sms.notices(hq)] == ["ready:" + "r" * 32]  # ready twice, one notice
    with pytest.raises(appstatus.StatusError):
        await appstatus.set_status(hq, "r" * 32, "refused", "olena", 30, notify_sms=True)  # issued is final


async def test_acks_mark_edits_and_commands(hq: HQStore, hq_keys: HQKeys) -> None:
    await put_record(hq, hq_keys, "r" * 32, None)
    edit = await appstatus.set_status(hq, "r" * 32, "in_progress", "olena", 10, notify_sms=False)
    await appstatus.log_command(hq, "c1", "van-01", "lock", "admin")
    acks = [{"type": "down_ack", "stream": "recon", "kind": "recon", "id": edit["edit_id"], "result": "applied", "at": 5.0},
            {"type": "visit", "id": "v"},
            {"type": "down_ack", "stream": "cmd", "kind": "lock", "id": "c1", "result": "applied", "at": 6.0},
            {"type": "down_ack", "stream": "cmd", "kind": "lock", "id": "c1", "result": "duplicate", "at": 7.0}]
    async with transaction(hq.db):
        for seq, doc in enumerate(acks, start=1):
            await hq.db.execute("INSERT INTO items(node_id, stream, seq, payload, hlc, via, received) VALUES ('van-01', 'evt', ?, ?, 1, 'mqtt', 1)",
                                (seq, json.dumps(doc).encode()))
        await hq.db.execute("INSERT INTO stream_state(node_id, stream, contiguous) VALUES ('van-01', 'evt', 4)")
    assert await appstatus.project_acks(hq) == 3
    assert await appstatus.project_acks(hq) == 0  # the cursor moved
    assert (await appstatus.history(hq, "r" * 32))[0]["result"] == "applied"
    cmd = (await appstatus.commands(hq))[0]
    assert (cmd["result"], cmd["acked_at"]) == ("applied", 6.0)  # the first answer counts


async def test_van_merge_is_newer_wins_in_any_order(tmp_path: Path, hq_keys: HQKeys) -> None:
    edits = [reconcile.to_wire(reconcile.Edit("a" * 32, "status", st, hlc, reconcile.HQ), f"e{hlc}")
             for st, hlc in (("in_progress", 100), ("ready", 200), ("issued", 300))]
    for n, order in enumerate(itertools.permutations(edits)):
        store = await Store.open(tmp_path / f"node{n}.db", "van-01", hq_keys.seal_public, ManualClock())
        try:
            statuses = AppStatuses(store)
            await statuses.create_schema()
            for doc in order:
                await statuses.receive(doc)
            await statuses.receive(order[0])  # a replay changes nothing
            got = await statuses.get("a" * 32)
            assert got is not None and got["status"] == "issued", order
        finally:
            await store.close()
    with pytest.raises(ValueError):
        reconcile.from_wire({"record_id": "a", "field": "status", "value": "lost", "hlc": 1, "origin": "hq"})


async def test_sender_backs_off_and_sends_once(hq: HQStore, hq_keys: HQKeys, tmp_path: Path) -> None:
    import aiohttp
    from aiohttp.test_utils import TestServer

    gw = SmsGateway(tmp_path / "sent.jsonl", token="tok", fail=2)
    server = TestServer(gw.app(), host="127.0.0.1")
    await server.start_server()
    rid, other = "r" * 32, "s" * 32
    await put_record(hq, hq_keys, rid, {"surname": "Косач", "phone": PHONE, "sms_consent": "yes"})
    await put_record(hq, hq_keys, other, {"surname": "Косач", "phone": PHONE})
    for r in (rid, other):
        await appstatus.set_status(hq, r, "ready", "olena", 10, notify_sms=True)
    clock = hq.clock
    assert isinstance(clock, ManualClock)
    async with aiohttp.ClientSession() as session:
        sender = sms.SmsSender(hq, hq_keys.seal, sms.HttpSmsAdapter(str(server.make_url("/send")), "tok", session), 5.0, 60.0)
        assert await sender.run_once() == 0  # 503
        assert {n["notice_id"]: n["state"] for n in await sms.notices(hq)} == {"ready:" + rid: "pending", "ready:" + other: "no_consent"}
        assert await sender.next_due_in() == 5.0
        assert await sender.run_once() == 0  # not due yet: nothing tried
        assert gw.requests == 1
        clock.advance(5.0)
        assert await sender.run_once() == 0  # 503 again; the wait doubles
        assert await sender.next_due_in() == 10.0
        clock.advance(10.0)
        assert await sender.run_once() == 1
        clock.advance(100.0)
        assert await sender.run_once() == 0  # delivered: never again
    await server.close()
    lines = (tmp_path / "sent.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["key"] == "ready:" + rid
    # Every reading of the number is in the vault's audit log.
    async with hq.db.execute("SELECT COUNT(*) FROM vault_audit WHERE username = 'sms-sender'") as cur:
        row = await cur.fetchone()
    assert row is not None and row[0] == 3


def test_openapi_parses_and_documents_the_status_api() -> None:
    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "hq" / "openapi.yaml").read_text(encoding="utf-8"))
    assert {"/api/v1/records/{id}/status", "/records/{id}/status"} <= set(doc["paths"])
    assert doc["components"]["schemas"]["AppStatus"]["enum"] == list(appstatus.STATUSES)


def test_sms_consent_on_the_applicant_card() -> None:
    from datetime import date

    from edge.errors import ValidationFailed
    from edge.intake import parse_applicant

    card = {"surname": "Косач", "given_name": "Лариса", "rnokpp": "3184710691"}
    assert "sms_consent" not in parse_applicant({**card, "phone": "0671234567"}, date(2026, 11, 22)).fields
    got = parse_applicant({**card, "phone": "0671234567", "sms_consent": "on"}, date(2026, 11, 22)).fields
    assert got["sms_consent"] == "yes" and got["phone"]
    with pytest.raises(ValidationFailed) as exc:
        parse_applicant({**card, "sms_consent": "on"}, date(2026, 11, 22))  # consent to text, but no number
    assert "sms_consent" in exc.value.fields
