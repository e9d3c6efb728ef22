"""Issue 18 item 6: a result handed over at the van reaches HQ as "issued"; a refusal arrives with its written reason.

Real Mosquitto, a real node and HQ process, nothing mocked.
"""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest
from pypdf import PdfReader

from provisioning.keys import HQKeys, NodeBundle
from tests.conftest import Broker, Proc, wait_until
from tests.hq.stack import OFFICER_PASSWORD, HqBrowser, Stack

pytestmark = pytest.mark.functional


def test_handover_reaches_hq_as_issued_and_a_refusal_brings_its_reason(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle,
                                                                       mosquitto: Broker, procs: list[Proc]) -> None:
    st = Stack(tmp_path, mosquitto, bundle, procs)
    van = st.start_node()
    st.start_hq("--status-resend-after", "3")
    st.hq_user("olena.k", "records_officer")
    saved = st.application()
    rid = saved["id"]
    officer = HqBrowser(st.hq_url)
    officer.login("olena.k", OFFICER_PASSWORD)

    # Not ready yet: the van refuses to hand it over.
    status, body = van.request("POST", f"/api/v1/applications/{rid}/handover", {"receiver": "Косач Лариса Петрівна", "receiver_document": "ID 123456789"})
    assert status == 409 and body["error"]["code"] == "not_ready"

    for new in ("in_progress", "ready"):
        status, _ = officer.post(f"/records/{rid}/status", {"csrf": officer.csrf(), "status": new})
        assert status == 200
    wait_until(lambda: st.van_status(rid) == "ready", 60, what="ready at the van")
    ready = van.get("/api/v1/applications?status=ready")["applications"]
    assert [a["number"] for a in ready] == [saved["number"]]
    with van.opener.open(van.base + "/applications", timeout=15) as r:
        assert f'id="ready-{saved["number"]}"' in r.read().decode()

    status, body = van.request("POST", f"/api/v1/applications/{rid}/handover", {"receiver": "", "receiver_document": ""})
    assert status == 422
    status, body = van.request("POST", f"/api/v1/applications/{rid}/handover",
                               {"receiver": "Косач Петро Антонович", "receiver_document": "ID 987654321", "relation": "батько, довіреність № 12"})
    assert status == 201 and body["status"] == "issued", body
    assert st.van_status(rid) == "issued" and van.get("/api/v1/applications?status=ready")["applications"] == []
    # sealed like a record: the receiver's name and document are nowhere in the node's files in clear
    raw = b"".join(p.read_bytes() for p in (tmp_path / "node").glob("node.db*"))
    assert "Косач Петро".encode() not in raw and b"987654321" not in raw

    # HQ hears it once and sets "issued" (by the van), and the van's receipt names who received it.
    doc = wait_until(lambda: (d := officer.api.get(f"/api/v1/records/{rid}/status"))["status"] == "issued" and d, 60, what="issued at HQ")
    assert doc["handover"]["node_id"] == "van-01" and doc["handover"]["result"] == "issued"  # type: ignore[index]
    assert [(e["old"], e["status"], e["username"]) for e in doc["edits"]][-1] == ("ready", "issued", "van:van-01")  # type: ignore[index]
    with sqlite3.connect(st.hq_dir / "hq.db") as c:
        assert c.execute("SELECT COUNT(*) FROM handovers WHERE record_id = ?", (rid,)).fetchone()[0] == 1
    with van.opener.open(van.base + f"/applications/{rid}/receipt", timeout=15) as r:
        html = r.read().decode()
    assert 'id="handed-over-to">Косач Петро Антонович (ID 987654321; батько, довіреність № 12)' in html
    assert 'id="application-status">Видано<' in html

    # A refusal needs its written reason, which the van shows and prints.
    other = st.application()
    status, page = officer.post(f"/records/{other['id']}/status", {"csrf": officer.csrf(), "status": "refused"})
    assert status == 422 and "причину відмови" in page
    reason = "Не подано документ, що підтверджує право на проживання в житлі"
    status, _ = officer.post(f"/records/{other['id']}/status", {"csrf": officer.csrf(), "status": "refused", "reason": reason})
    assert status == 200
    wait_until(lambda: st.van_status(other["id"]) == "refused", 60, what="the refusal at the van")
    with van.opener.open(van.base + f"/applications/{other['id']}/receipt", timeout=15) as r:
        html = r.read().decode()
    assert f'id="refusal-reason" class="notes">{reason}<' in html
    with van.opener.open(van.base + f"/applications/{other['id']}/receipt.pdf", timeout=15) as r:
        text = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(r.read())).pages).split())
    assert f"Причина відмови {reason}" in text  # printable
    with sqlite3.connect(st.node_db) as c:
        assert reason.encode() not in b"".join(bytes(r[0]) for r in c.execute("SELECT reason_sealed FROM app_status WHERE reason_sealed IS NOT NULL"))
    hq_raw = b"".join(p.read_bytes() for p in st.hq_dir.glob("hq.db*"))
    assert reason.encode() not in hq_raw and "Косач Петро".encode() not in hq_raw
