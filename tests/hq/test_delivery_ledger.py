"""Issue 18 item 7: the application list and the receipt show where an application is, from the sync ledger.

Real Mosquitto, a real node and HQ process: an offline day (no HQ) shows what waits; after HQ's
ack the receipt (page and PDF) and the list say "confirmed by HQ at HH:MM".
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from pypdf import PdfReader

from provisioning.keys import HQKeys, NodeBundle
from tests.conftest import Broker, Proc, wait_until
from tests.hq.stack import Stack

pytestmark = pytest.mark.functional


def test_ledger_before_and_after_hqs_ack(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker, procs: list[Proc]) -> None:
    st = Stack(tmp_path, mosquitto, bundle, procs)
    van = st.start_node()
    status, saved = van.request("POST", "/api/v1/applications", {"surname": "Косач", "given_name": "Лариса", "rnokpp": "3184710691",
                                                                 "service_code": "PRO-01"})
    assert status == 201, saved
    app_id, number = saved["id"], saved["number"]

    def entry() -> dict[str, object]:
        listed = van.get("/api/v1/applications")
        (row,) = [a for a in listed["applications"] if a["id"] == app_id]
        return {"waiting": listed["waiting"], **row}

    # The offline day: HQ is not running, so nothing is confirmed; the van says so.
    e = entry()
    assert e["waiting"] == 1 and e["number"] == number and e["delivery"]["state"] in ("created", "sent")  # type: ignore[index]
    assert e["delivery"]["acknowledged"] is None  # type: ignore[index]
    with van.opener.open(van.base + "/applications", timeout=15) as r:
        page = r.read().decode()
    assert re.search(r'id="apps-waiting"[^>]*>[^<]*<strong>1</strong>', page)
    assert f'id="app-{number}" data-delivery="' in page

    st.start_hq()
    acked = wait_until(lambda: (e := entry())["delivery"]["state"] == "acknowledged" and e, 60, what="HQ's ack at the van")  # type: ignore[index]
    assert acked["waiting"] == 0 and acked["delivery"]["acknowledged"] and acked["delivery"]["sent"]  # type: ignore[index]
    with van.opener.open(van.base + f"/applications/{app_id}/receipt", timeout=15) as r:
        html = r.read().decode()
    m = re.search(r'id="delivery" data-state="acknowledged">отримано ЦНАП о <time id="delivery-acked">(\d\d\.\d\d\.\d{4} \d\d:\d\d)</time>', html)
    assert m, html[html.find('id="delivery"') - 200:][:600]
    with van.opener.open(van.base + f"/applications/{app_id}/receipt.pdf", timeout=15) as r:
        text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(r.read())).pages).replace("\n", " ")
    assert f"Доставка до ЦНАП отримано ЦНАП о {m.group(1)}" in text
    with van.opener.open(van.base + "/applications", timeout=15) as r:
        page = r.read().decode()
    assert f'id="app-{number}" data-delivery="acknowledged"' in page and re.search(r'id="apps-waiting"[^>]*>[^<]*<strong>0</strong>', page)
