"""A simulated day recorded by the van, then `mobile-office report` checked against what happened."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from devices.gps import Fix
from edge.service_desk import ServiceDesk
from edge.store import Store
from edge.trips.recorder import TrackRecorder, create_schema
from provisioning.keys import NodeBundle
from sync.clock import ManualClock
from tests.conftest import ADMIN_PASSWORD, REPO
from tests.store.conftest import slots
from tests.trips.test_track import T0, drive


async def test_day_recorded_and_reported(bundle: NodeBundle, tmp_path: Path) -> None:
    clock = ManualClock(T0)
    data = tmp_path / "node"
    store = await Store.open(data / "node.db", bundle.node_id, bundle.hq_seal_public, clock)
    await store.import_keyslots(slots(bundle))
    await store.unlock("admin", ADMIN_PASSWORD)
    await create_schema(store.db)
    rec = TrackRecorder(store.db, clock)
    route, pts = drive("TRIP-NORTH", seed=11, tunnel=(3000, 3200))
    desk = ServiceDesk(store)
    for i, p in enumerate(pts):
        rec.on_fix(Fix(p.t, p.lat, p.lon, 3, p.speed, None, received=p.t))
        if i % 600 == 599:
            await rec.flush()
    await rec.flush()
    # At the first stop: three citizens, one of them with a package of two services; two ratings.
    clock.advance(2000)
    a = await store.create_application("Шевченко", "Тарас", "1759013776", "RES-01", "admin")
    await store.create_applications("Українка", "Леся", "3184710691", ["SOC-01", "PEN-01"], "admin", package_code="PKG-X")
    await store.create_application("Франко", "Іван", "1759013776", "SOC-01", "admin")  # same person as the first
    await desk.rate(await desk.rating_token(a.id), 5, "")
    await desk.rate(await desk.rating_token((await store.create_application("Косач", "Ольга", "3184710691", "RES-02", "admin")).id), 2, "")
    # The queue: the administrator serves two citizens in half an hour (first call to last finish).
    first, second = await desk.issue_ticket(), await desk.issue_ticket()
    clock.advance(300)
    await desk.call_next("admin")
    clock.advance(900)
    await desk.finish(first.id, True, "admin")
    await desk.call_next("admin")
    clock.advance(900)
    await desk.finish(second.id, True, "admin")
    await store.close()

    day = datetime.fromtimestamp(T0, timezone.utc).date().isoformat()
    out = subprocess.run([sys.executable, "-m", "mobile_office.cli", "report", "--data-dir", str(data), "--from", day, "--to", day,
                          "--format", "json"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert set(rep) >= {"trips", "km", "stops", "citizens_served", "applications_by_category", "home_visits_by_category", "ratings"}
    assert rep["trips"] == 1
    assert abs(rep["km"] - route.length_m / 1000) < 0.02 * route.length_m / 1000
    assert [s["place"] for s in rep["trip_list"][0]["stops"]] == ["TER-IDP", "TER-MAS"]
    assert {"place", "arrival", "departure", "lat", "lon"} <= set(rep["trip_list"][0]["stops"][0])
    assert rep["stops"] == 2
    assert rep["applications_by_category"] == {"pension": 1, "residence": 2, "social": 2}
    assert rep["citizens_served"] == 2  # two people (by keyed index), five applications
    assert rep["ratings"] == {"count": 2, "positive_share": 0.5}
    assert rep["workload"]["per_admin"] == {"admin": {"served": 2, "hours": 0.5, "per_hour": 4.0}}
    assert rep["workload"]["citizens_per_admin_hour"] == 4.0 and rep["workload"]["avg_wait_min"] == 12.5

    for fmt, check in (("csv", lambda s: list(csv.reader(io.StringIO(s)))[1] == ["trips", "1"]), ("md", lambda s: "TER" not in s and "Модульне" in s)):
        out = subprocess.run([sys.executable, "-m", "mobile_office.cli", "report", "--data-dir", str(data), "--from", day, "--to", day,
                              "--format", fmt], cwd=REPO, capture_output=True, text=True)
        assert out.returncode == 0 and check(out.stdout), out.stdout
    bad = subprocess.run([sys.executable, "-m", "mobile_office.cli", "report", "--data-dir", str(data), "--from", "вчора", "--to", day],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr and "Traceback" not in bad.stderr
