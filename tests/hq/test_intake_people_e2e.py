"""Issue 18 items 1-2 end to end (real Mosquitto, node and HQ processes): an application for a person without
РНОКПП, filed by a guardian, reaches HQ, whose record page (the vault, an audited opening) shows the reason, the
document and the representative."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.keys import NodeBundle
from tests.conftest import Broker, Proc, wait_until
from tests.hq.stack import OFFICER_PASSWORD, HqBrowser, Stack

pytestmark = pytest.mark.functional


def test_hq_shows_the_reason_the_document_and_the_guardian(tmp_path: Path, bundle: NodeBundle, mosquitto: Broker, procs: list[Proc]) -> None:
    st = Stack(tmp_path, mosquitto, bundle, procs)
    van = st.start_node()
    st.start_hq()
    st.hq_user("olena.k", "records_officer")
    body = {"surname": "Гнатюк", "given_name": "Ганна", "service_code": "SOC-01", "rnokpp_absent_reason": "religious",
            "document_type": "passport_book", "document_number": "КВ123456",
            "representative": {"kind": "guardian", "surname": "Гнатюк", "given_name": "Петро", "document_type": "id_card",
                               "document_number": "000123456", "basis_number": "17/2024", "basis_date": "2024-02-05"}}
    status, saved = van.request("POST", "/api/v1/applications", body)
    assert status == 201, saved
    wait_until(lambda: st.hq_status(saved["id"]) is not None, 60, what="the record at HQ")
    officer = HqBrowser(st.hq_url)
    officer.login("olena.k", OFFICER_PASSWORD)
    status, page = officer.post(f"/records/{saved['id']}", {"csrf": officer.csrf(), "reason": "перевірка представника"})
    assert status == 200, page
    assert "відмова з релігійних переконань" in page and "КВ123456" in page
    # the vault shows the representative's fields one by one (rep_surname, rep_given_name, ...)
    assert all(f'data-field="{k}">{v}<' in page for k, v in (("rep_surname", "Гнатюк"), ("rep_given_name", "Петро")))
    assert "опікун" in page and "17/2024" in page
