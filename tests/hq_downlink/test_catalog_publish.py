"""HQ publishes the service catalogue (versioned, signed, retained); vans take only a newer, genuine one (real Mosquitto, processes)."""

from __future__ import annotations

import json
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.catalog_doc import packaged
from provisioning.keys import HQKeys, NodeBundle
from sync.downlink import build
from sync.envelope import decode
from tests.conftest import Broker, Proc, wait_until
from tests.functional.test_hq_commands import publish
from tests.hq.stack import OFFICER_PASSWORD, HqBrowser, Stack
from tests.hq_downlink.helpers import hq_user, csrf, page, post_multipart, rows

pytestmark = pytest.mark.functional


def with_service(code: str, name: str) -> dict[str, object]:
    doc = packaged()
    doc["services"] = [*doc["services"], {"code": code, "category": "residence", "name": name, "documents": ["Паспорт"]}]
    return doc


def van_catalog(db: Path) -> tuple[int, str]:
    got = rows(db, "SELECT version, doc FROM catalog_current")
    return (int(got[0][0]), str(got[0][1])) if got else (0, "")


def test_catalogue_published_at_hq_reaches_a_van_connected_later(tmp_path: Path, hq_keys: HQKeys, bundle: NodeBundle, mosquitto: Broker,
                                                                 procs: list[Proc], hq_db: str | None) -> None:
    st = Stack(tmp_path, mosquitto, bundle, procs)
    st.start_hq(*(["--db", hq_db] if hq_db else []))
    hq_user(st.hq_dir, "dyspetcher", "dispatcher", OFFICER_PASSWORD, hq_db)
    hq_user(st.hq_dir, "petro", "viewer", OFFICER_PASSWORD, hq_db)

    viewer = HqBrowser(st.hq_url)
    viewer.login("petro", OFFICER_PASSWORD)
    html = viewer.get("/catalog")
    assert "Поточна версія: <strong>1</strong>" in html and "вбудований каталог" in html and 'id="catalog-form"' not in html
    status, _ = viewer.post("/catalog", {"csrf": csrf(html), "source": "packaged"})
    assert status == 403

    hq = HqBrowser(st.hq_url)
    hq.login("dyspetcher", OFFICER_PASSWORD)
    token = csrf(hq.get("/catalog"))
    # A broken upload: every problem listed in Ukrainian, nothing published.
    bad = packaged()
    bad["services"][0]["category"] = "nope"
    bad["packages"][0]["services"] = ["XXX-99"]
    status, html = post_multipart(hq.api, "/catalog", {"csrf": token, "source": "upload"}, {"catalog": ("c.json", json.dumps(bad).encode())})
    assert status == 422
    assert "services[0].category: категорії «nope» немає в categories" in html and "послуг XXX-99 немає в каталозі" in html
    status, html = post_multipart(hq.api, "/catalog", {"csrf": token, "source": "upload"}, {"catalog": ("c.json", b"{not json")})
    assert status == 422 and "Це не JSON" in html
    assert hq.api.get("/api/v1/catalog")["version"] == 1 and hq.api.get("/api/v1/catalog")["history"] == []

    # The packaged catalogue as version 2, then an uploaded one with a new service as version 3.
    status, html = hq.post("/catalog", {"csrf": token, "source": "packaged"})
    assert status == 200 and 'id="catalog-published"' in html and "Каталог версії 2 опубліковано" in html
    upload = json.dumps(with_service("TST-03", "Послуга з третьої версії"), ensure_ascii=False).encode()
    status, html = post_multipart(hq.api, "/catalog", {"csrf": token, "source": "upload"}, {"catalog": ("c.json", upload)})
    assert status == 200 and "Послуга з третьої версії" in html
    cur = hq.api.get("/api/v1/catalog")
    assert cur["version"] == 3 and cur["published_by"] == "dyspetcher" and [h["version"] for h in cur["history"]] == [3, 2]

    # The van starts only now: the broker hands it the retained newest catalogue; its intake form offers the new service.
    van = st.start_node()
    wait_until(lambda: van_catalog(st.node_db)[0] == 3, 60, what="catalogue v3 at the van")
    assert "Послуга з третьої версії" in page(van, "/applications/new")
    assert rows(st.node_db, "SELECT version FROM catalog_version") == [(3,)]

    # An older version (genuinely signed) and a forged newer one, then HQ's next: only HQ's next is taken.
    publish(mosquitto, "mo/v1/all/down/catalog",
            build(hq_keys.sign, "all", "catalog", 2, [with_service("OLD-02", "Стара послуга")], 1))
    publish(mosquitto, "mo/v1/all/down/catalog",
            build(Ed25519PrivateKey.generate(), "all", "catalog", 99, [with_service("FAKE-99", "Підроблена послуга")], 2))
    upload = json.dumps(with_service("TST-04", "Послуга з четвертої версії"), ensure_ascii=False).encode()
    status, _ = post_multipart(hq.api, "/catalog", {"csrf": token, "source": "upload"}, {"catalog": ("c.json", upload)})
    assert status == 200
    # Messages on one topic arrive in order: once v4 is in, the two before it have been handled.
    wait_until(lambda: van_catalog(st.node_db)[0] == 4, 60, what="catalogue v4 at the van")
    doc = van_catalog(st.node_db)[1]
    assert "TST-04" in doc and "TST-03" not in doc and "OLD-02" not in doc and "FAKE-99" not in doc
    form = page(van, "/applications/new")
    assert "Послуга з четвертої версії" in form and "Стара послуга" not in form and "Підроблена послуга" not in form
    assert "rejected downlink" in (tmp_path / "node.log").read_text(encoding="utf-8")
    # The van reports the version it runs; HQ shows it per van.
    wait_until(lambda: [v["version"] for v in hq.api.get("/api/v1/catalog")["vans"]] == [4], 60, what="the van's applied version at HQ")
    assert '<td>van-01</td><td>4</td>' in hq.get("/catalog")

    # After a restart the van keeps the catalogue HQ published, not the bundled one.
    assert procs[-1].terminate() == 0
    van = st.start_node()
    assert "Послуга з четвертої версії" in page(van, "/applications/new")

    # A broker restarted without its retained messages gets the newest catalogue again when HQ reconnects.
    mosquitto.stop()
    for f in mosquitto.workdir.glob("*.db"):
        f.unlink()
    mosquitto.start()
    wait_until(lambda: retained_catalogue(mosquitto, hq_keys) == 4, 90, interval=0.5, what="the catalogue retained again")


def retained_catalogue(broker: Broker, hq_keys: HQKeys) -> int | None:
    """The version of the catalogue the broker holds retained, checked against HQ's key (None: none)."""
    got: list[bytes] = []
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-late-van", protocol=paho.MQTTv5)
    c.on_message = lambda _c, _u, msg: got.append(bytes(msg.payload))
    c.connect("127.0.0.1", broker.port)
    c.subscribe("mo/v1/all/down/catalog", qos=1)
    c.loop_start()
    try:
        wait_until(lambda: got, 2, what="a retained catalogue")
    except AssertionError:
        return None
    finally:
        c.loop_stop()
        c.disconnect()
    return decode(got[0], lambda _node: hq_keys.sign.public_key()).first_seq
