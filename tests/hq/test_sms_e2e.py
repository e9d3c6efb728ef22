"""SMS notice when an application becomes ready: exactly one at the real gateway process, through outages and an HQ crash."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from pathlib import Path

import pytest

from provisioning.keys import HQKeys, NodeBundle
from tests.conftest import Broker, Proc, free_port, mobile_office_cmd, spawn, wait_until
from tests.hq.stack import OFFICER_PASSWORD, HqBrowser, Stack

pytestmark = pytest.mark.functional

PHONE = "+380671234567"


def sent(out: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] if out.exists() else []


def gateway(tmp: Path, port: int, out: Path, *extra: str) -> Proc:
    p = spawn(mobile_office_cmd("sim", "sms", "--port", str(port), "--out", str(out), "--token", "t0k3n", *extra), tmp / "sms.log")
    wait_until(lambda: "SMS gateway on" in p.output(), 30, what="the SMS gateway")
    return p


def control(port: int, doc: dict[str, float]) -> dict[str, float]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/control", data=json.dumps(doc).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return dict(json.loads(r.read()))


def outbox(hq_db: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(hq_db) as c:
        return [(str(r[0]), str(r[1]), int(r[2])) for r in c.execute("SELECT notice_id, state, attempts FROM sms_outbox")]


def ready(st: Stack, rid: str) -> None:
    officer = HqBrowser(st.hq_url)
    officer.login("olena.k", OFFICER_PASSWORD)
    for new in ("in_progress", "ready"):
        status, _ = officer.post(f"/records/{rid}/status", {"csrf": officer.csrf(), "status": new})
        assert status == 200


def no_phone_at_hq(st: Stack) -> None:
    """Neither HQ's log nor its database files hold the number in plaintext."""
    assert PHONE not in (st.tmp / "hq.log").read_text(errors="replace")
    for f in st.hq_dir.glob("hq.db*"):
        assert PHONE.encode() not in f.read_bytes(), f


@pytest.fixture
def stack(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker, procs: list[Proc]) -> Stack:
    st = Stack(tmp_path, mosquitto, bundle, procs)
    st.start_node()
    (tmp_path / "sms-token").write_text("t0k3n\n")
    return st


def test_gateway_down_then_up_gives_exactly_one_sms(stack: Stack, tmp_path: Path, procs: list[Proc]) -> None:
    port, out = free_port(), tmp_path / "sms.jsonl"
    stack.start_hq("--sms-url", f"http://127.0.0.1:{port}/send", "--sms-token-file", str(tmp_path / "sms-token"),
                   "--sms-retry-min", "0.2", "--sms-retry-max", "0.5")
    stack.hq_user("olena.k", "records_officer")
    consented = stack.application(phone=PHONE, sms_consent=True)
    silent = stack.application(phone="+380501112233")  # a phone but no SMS consent
    ready(stack, consented["id"])
    ready(stack, silent["id"])
    db = stack.hq_dir / "hq.db"
    # The gateway is down: HQ keeps trying (attempts grow), nothing is delivered.
    wait_until(lambda: any(n == f"ready:{consented['id']}" and s == "pending" and a >= 2 for n, s, a in outbox(db)), 60,
               what="HQ retrying while the gateway is down")
    wait_until(lambda: ("ready:" + silent["id"], "no_consent", 0) in outbox(db), 30, what="the notice without consent settled")
    # Up, but failing for a while: still retried.
    gw = gateway(tmp_path, port, out, "--fail", "2")
    procs.append(gw)
    wait_until(lambda: (f"ready:{consented['id']}", "delivered") in [(n, s) for n, s, _ in outbox(db)], 60, what="delivery")
    msgs = sent(out)
    assert len(msgs) == 1 and msgs[0]["to"] == PHONE and consented["number"] in msgs[0]["text"]
    assert control(port, {})["requests"] >= 3  # two refused, one accepted
    no_phone_at_hq(stack)


def test_hq_killed_between_send_and_mark_still_one_sms(stack: Stack, tmp_path: Path, procs: list[Proc]) -> None:
    port, out = free_port(), tmp_path / "sms.jsonl"
    procs.append(gateway(tmp_path, port, out, "--delay", "30"))  # records, then keeps HQ waiting for the answer
    args = ("--sms-url", f"http://127.0.0.1:{port}/send", "--sms-token-file", str(tmp_path / "sms-token"),
            "--sms-retry-min", "0.2", "--sms-retry-max", "0.5")
    stack.start_hq(*args)
    stack.hq_user("olena.k", "records_officer")
    saved = stack.application(phone=PHONE, sms_consent=True)
    ready(stack, saved["id"])
    wait_until(lambda: len(sent(out)) == 1, 60, what="the gateway to record the SMS")
    assert outbox(stack.hq_dir / "hq.db")[0][1] == "pending"  # sent, not yet marked
    assert stack.hq is not None
    stack.hq.kill()  # SIGKILL: HQ dies between the send and the mark
    control(port, {"delay": 0})
    stack.start_hq(*args)
    wait_until(lambda: outbox(stack.hq_dir / "hq.db")[0][1] == "delivered", 60, what="the resend after HQ's restart")
    assert len(sent(out)) == 1
    assert outbox(stack.hq_dir / "hq.db")[0][2] == 2  # two attempts, one SMS
    no_phone_at_hq(stack)
