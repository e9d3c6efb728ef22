"""`mobile-office report --data-dir` given the demo's directory (node/ and hq/) finds the van and HQ, and says which it reports."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge.store import Store
from hq.store import HQStore
from mobile_office.cli import main
from provisioning.keys import NodeBundle
from sync.clock import ManualClock
from tests.conftest import ADMIN_PASSWORD
from tests.store.conftest import slots
from tests.trips.test_track import T0

DAY = datetime.fromtimestamp(T0, timezone.utc).date().isoformat()


async def _demo_layout(bundle: NodeBundle, demo: Path) -> None:
    """What `mobile-office demo` leaves: the van's node.db under node/, HQ's hq.db under hq/."""
    clock = ManualClock(T0)
    store = await Store.open(demo / "node" / "node.db", bundle.node_id, bundle.hq_seal_public, clock)
    await store.import_keyslots(slots(bundle))
    await store.unlock("admin", ADMIN_PASSWORD)
    await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
    await store.close()
    hq = await HQStore.open(demo / "hq" / "hq.db", clock)
    await hq.close()


def report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object] | None, str]:
    code = main(["report", "--from", DAY, "--to", DAY, "--format", "json", *args])
    out = capsys.readouterr()
    return code, json.loads(out.out) if code == 0 else None, out.err


def test_the_demo_directory_reports_the_van_or_hq(bundle: NodeBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = tmp_path / "demo-data"
    asyncio.run(_demo_layout(bundle, demo))

    code, rep, err = report(capsys, "--data-dir", str(demo))
    assert code == 0 and rep is not None, err
    assert "per_van" not in rep and rep["applications_by_category"] == {"residence": 1}  # the van's own figures
    assert f"holds a van ({demo / 'node'}) and HQ ({demo / 'hq'}); reporting the van's figures (--side hq for HQ's)" in err

    code, rep, err = report(capsys, "--data-dir", str(demo), "--side", "hq")
    assert code == 0 and rep is not None and "per_van" in rep and err == ""  # the fleet's figures, as HQ's pages show them
    code, rep, err = report(capsys, "--data-dir", str(demo), "--side", "van")
    assert code == 0 and rep is not None and "per_van" not in rep and err == ""

    # Each side's own directory, as before: no note.
    code, rep, err = report(capsys, "--data-dir", str(demo / "hq"))
    assert code == 0 and rep is not None and "per_van" in rep and err == ""
    code, rep, err = report(capsys, "--data-dir", str(demo / "node"))
    assert code == 0 and rep is not None and "per_van" not in rep and err == ""

    code, _, err = report(capsys, "--data-dir", str(demo / "hq"), "--side", "van")
    assert code == 2 and "--side van: no node.db in" in err
    code, _, err = report(capsys, "--data-dir", str(tmp_path / "empty"))
    assert code == 2 and "no node.db or hq.db in" in err and "Traceback" not in err
