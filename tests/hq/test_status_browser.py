"""In the browser: a records officer sets "ready" (audited, reaches the van), a viewer cannot; Leaflet over a local tile server."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioning.keys import HQKeys, NodeBundle
from tests.conftest import REPO, Broker, Proc, wait_until
from tests.hq.stack import OFFICER_PASSWORD, Stack
from tests.ui.conftest import axe_violations, browser, login, screenshot  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.functional]

TILE = (REPO / "hq" / "static" / "leaflet" / "images" / "layers.png").read_bytes()  # any PNG will do as a tile


@pytest.fixture
def tiles() -> Iterator[tuple[str, list[str]]]:
    """A local tile server: every /z/x/y.png is the same small PNG; requests are recorded."""
    seen: list[str] = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's name
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(TILE)))
            self.end_headers()
            self.wfile.write(TILE)

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/{{z}}/{{x}}/{{y}}.png", seen
    srv.shutdown()
    srv.server_close()


def test_officer_sets_ready_viewer_cannot(browser: Any, tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker,  # noqa: F811
                                          procs: list[Proc], tiles: tuple[str, list[str]]) -> None:
    tile_url, tile_requests = tiles
    st = Stack(tmp_path, mosquitto, bundle, procs)
    st.start_node(gps=True)
    hq = st.start_hq("--tile-url", tile_url, "--tile-attribution", "тестові тайли")
    st.hq_user("olena.k", "records_officer")
    st.hq_user("petro", "viewer")
    saved = st.application()
    wait_until(lambda: st.van is not None and st.van.get("/api/v1/status") and _hq_fleet_has_position(hq, st.hq_dir), 60, what="a position at HQ")

    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    login(page, hq, "olena.k", OFFICER_PASSWORD)
    # The Leaflet map over the configured tiles, the van labelled with its own time.
    page.wait_for_selector("#leaflet-map .leaflet-tile-loaded", timeout=30000)
    assert tile_requests and page.locator("#svg-map").is_hidden()
    assert "дані станом на" in page.inner_text("#leaflet-map .leaflet-tooltip")
    assert page.locator("#leaflet-map path.leaflet-interactive").count() >= 1  # the van's marker (and its track)
    screenshot(page, "hq-dashboard-leaflet", docs=True)

    page.goto(hq + "/records")
    page.fill(f"#reason-{saved['id']}", "підготовка до видачі")
    page.click("#records button[type=submit]")
    assert page.inner_text("#app-status") == "Прийнято"
    page.select_option("#new-status", "in_progress")
    page.click("#set-status")
    assert "змінено" in page.inner_text("#status-saved")
    page.fill(f"#reason-{saved['id']}", "підготовка до видачі")
    page.click("#records button[type=submit]")
    page.select_option("#new-status", "ready")
    page.click("#set-status")
    assert "Готово до видачі" in page.inner_text("#records")
    page.fill(f"#reason-{saved['id']}", "перевірка журналу")
    page.click("#records button[type=submit]")
    history = page.inner_text("#status-history")
    assert "olena.k" in history and "В роботі → Готово до видачі" in history
    assert axe_violations(page) == []
    wait_until(lambda: st.van_status(saved["id"]) == "ready", 60, what="the status at the van")

    def acked() -> bool:
        edits = page.request.get(hq + f"/api/v1/records/{saved['id']}/status").json()["edits"]
        return all(e["result"] == "applied" for e in edits)
    wait_until(acked, 60, what="the van's acks at HQ")
    page.goto(hq + "/records")
    page.fill(f"#reason-{saved['id']}", "перевірка підтвердження")
    page.click("#records button[type=submit]")
    assert page.inner_text("#status-history").count("(застосовано)") == 2
    screenshot(page, "hq-record-status", docs=True)

    # A viewer sees the status but has no form, and a direct post is refused.
    viewer = browser.new_context().new_page()
    login(viewer, hq, "petro", "Офіцер-пароль-1")
    viewer.goto(hq + "/records")
    assert "Готово до видачі" in viewer.inner_text("#records") and viewer.locator("#records button").count() == 0
    csrf = viewer.evaluate("() => document.querySelector('input[name=csrf]').value")
    resp = viewer.request.post(hq + f"/records/{saved['id']}/status", form={"csrf": csrf, "status": "issued"})
    assert resp.status == 403
    assert st.van_status(saved["id"]) == "ready"
    ctx.close()


def _hq_fleet_has_position(hq: str, hq_dir: Path) -> bool:
    from tests.helpers import ApiClient, hq_token

    fleet = ApiClient(hq, hq_token(hq_dir)).get("/api/v1/fleet")
    return bool(fleet) and fleet[0]["lat"] is not None
