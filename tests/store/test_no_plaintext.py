"""A stolen SD card holds no personal data: scan the database, its WAL and the logs."""

from __future__ import annotations

import logging
import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from edge.app import create_app
from edge.appkeys import ATTACHMENTS, STORE, TRIPS, VISITS
from edge.attachments import check_upload
from edge.validation import rnokpp_check_digit
from hq.planning import sealed_assignment
from provisioning.keys import HQKeys, NodeBundle
from sync import outbox
from sync.clock import ManualClock
from tests.conftest import ADMIN_PASSWORD
from tests.unit.test_node_api import node_config

SURNAMES = ["Шевченко", "Коваленко", "Бондаренко", "Ткаченко", "Кравченко", "Олійник", "Мельничук", "Гнатюк", "Лисенко", "Руденко",
            "Савчук", "Павленко", "Марченко", "Кузьменко", "Гребенюк", "Дячишин", "Островерхова", "Яремчук", "Білоус", "Зінченко"]
GIVEN = ["Тарас", "Олена", "Іван", "Марія", "Петро", "Оксана", "Богдан", "Ганна", "Ярослав", "Надія", "Юрій", "Соломія"]


def people(n: int, seed: int = 7) -> Iterator[dict[str, str]]:
    rnd = random.Random(seed)
    for i in range(n):
        nine = f"{rnd.randint(10000, 45000):05d}{rnd.randint(0, 9999):04d}"
        yield {
            "surname": f"{rnd.choice(SURNAMES)}{'-' + rnd.choice(SURNAMES) if i % 7 == 0 else ''}",
            "given_name": rnd.choice(GIVEN),
            "rnokpp": nine + str(rnokpp_check_digit(nine)),
            "phone": f"+38067{rnd.randint(1000000, 9999999)}",
            "address": f"вул. Тестова, {rnd.randint(1, 200)}, кв. {rnd.randint(1, 99)}",
        }


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "node.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield path
    root.removeHandler(handler)
    root.setLevel(old)
    handler.close()


async def test_hundreds_of_applicants_leave_no_plaintext(bundle: NodeBundle, tmp_path: Path, log_file: Path) -> None:
    data_dir = tmp_path / "node"
    crowd = list(people(300))
    async with TestClient(TestServer(create_app(node_config(bundle, data_dir)))) as client:
        r = await client.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status == 200
        for p in crowd:
            r = await client.post("/api/v1/applicants", json=p)
            assert r.status == 201, await r.text()
            aid = (await r.json())["id"]
            r = await client.post("/api/v1/applications", json={**p, "service_code": "RES-01", "applicant_id": aid})
            assert r.status == 201, await r.text()
        r = await client.post("/api/v1/applicants/search", json={"rnokpp": crowd[0]["rnokpp"]})
        assert (await r.json())["applicants"][0]["surname"] == crowd[0]["surname"]  # the data is there, readable when unlocked
        # A rejected submission (bad РНОКПП) must not leak into logs either.
        r = await client.post("/api/v1/applications", json={**crowd[1], "rnokpp": "1234567890", "service_code": "RES-01"})
        assert r.status == 422
    files = [data_dir / "node.db", log_file] + [p for p in (data_dir / "node.db-wal", data_dir / "node.db-shm") if p.exists()]
    blobs = {f.name: f.read_bytes() for f in files}
    assert sum(len(b) for b in blobs.values()) > 100_000  # we did scan something real
    assert "Коваленко".encode() not in blobs["node.log"]  # sanity of the needle encoding
    leaks = []
    for p in crowd:
        for field in ("surname", "rnokpp", "phone", "address"):
            needle = p[field].encode("utf-8")
            for name, blob in blobs.items():
                if needle in blob:
                    leaks.append((name, field, p[field]))
    assert leaks == []


def _needles_of_number(x: float) -> list[bytes]:
    """How a coordinate can lie in a file: SQLite's REAL (big-endian double), little-endian, JSON text, degrees·10⁷."""
    return [struct.pack(">d", x), struct.pack("<d", x), repr(round(x, 6)).encode(), struct.pack(">i", int(x * 1e7))]


async def test_after_shredding_the_card_holds_no_wraps_identifiers_or_visit_places(bundle: NodeBundle, hq_keys: HQKeys, tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    clock = ManualClock()
    cfg = node_config(bundle, data_dir)
    cfg.clock, cfg.node_seal_wrapped = clock, bundle.node_seal_wrapped
    crowd = list(people(25, seed=11))
    home_lat, home_lon = 48.1234567, 33.7654321
    visit = sealed_assignment(hq_keys.node_seal_keys()["van-01"], "van-01",
                              {"name": "Гнатюк Ганна", "address": "вул. Тиха, 3", "categories": ["disability"]}, None, "admin")
    async with TestClient(TestServer(create_app(cfg))) as client:
        app = client.app
        store = app[STORE]
        r = await client.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        csrf = (await r.json())["csrf"]
        for p in crowd:
            r = await client.post("/api/v1/applicants", json=p)
            aid = (await r.json())["id"]
            r = await client.post("/api/v1/applications", json={**p, "service_code": "RES-01", "applicant_id": aid})
            assert r.status == 201, await r.text()
        photo = check_upload("скан.png", b"\x89PNG\r\n\x1a\n" + os.urandom(3000))
        await app[ATTACHMENTS].add((await r.json())["id"], [photo], "admin")
        # A home visit: the van stands at the person's door for 20 minutes (its track), the visit is started and finished there.
        await app[VISITS].receive_assignment(visit)
        t0 = clock.now()
        await store.db.executemany("INSERT INTO track_points(t, lat_e7, lon_e7, speed_cms) VALUES (?, ?, ?, 0)",
                                   [(t0 - 1200 + s, int(home_lat * 1e7), int(home_lon * 1e7)) for s in range(0, 1200, 10)])
        for action in ("start", "finish"):
            r = await client.post(f"/visits/{visit['id']}/{action}", data={"csrf": csrf}, allow_redirects=False)
            assert r.status == 303, await r.text()
        evidence = await app[TRIPS].evidence(visit["id"])
        assert evidence is not None and abs(evidence["lat"] - home_lat) < 1e-4
        async with store.db.execute("SELECT COUNT(*) FROM visit_category_counts") as cur:
            assert (await cur.fetchone())[0] == 1
        # What must not survive: every wrap of a data key under the node's keys, the period keys' wraps.
        wraps: list[bytes] = []
        for table in ("applications", "applicants", "attachments"):
            async with store.db.execute(f"SELECT wrap_node FROM {table}") as cur:
                wraps += [bytes(r[0]) async for r in cur]
        async with store.db.execute("SELECT wrapped FROM period_keys") as cur:
            wraps += [bytes(r[0]) async for r in cur]
        assert len(wraps) == 2 * len(crowd) + 1 + 1
        # HQ acknowledges everything; a week and a day later the shredder has run.
        for stream in ("rec", "blob", "evt", "audit", "pos"):
            await outbox.apply_ack(store.db, stream, 10**9, clock.now())
        clock.advance(8 * 86400)
        await store.shred_expired(cfg.retention_days * 86400)
        await app[ATTACHMENTS].shred_expired(cfg.retention_days * 86400)
        await store.shred_track(cfg.track_retention_days * 86400)
        async with store.db.execute("SELECT COUNT(*) FROM period_keys") as cur:
            assert (await cur.fetchone())[0] == 0
        assert (data_dir / "node.db-wal").stat().st_size == 0  # checkpointed with TRUNCATE while the node runs
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    blob = b"".join(p.read_bytes() for p in files)
    assert len(blob) > 50_000
    needles: dict[str, list[bytes]] = {"wrap": wraps, "visit place": _needles_of_number(evidence["lat"]) + _needles_of_number(evidence["lon"])
                                       + _needles_of_number(home_lat) + _needles_of_number(home_lon),
                                       "category": [b"disability"], "visit": ["Гнатюк".encode(), "вул. Тиха".encode()]}
    for p in crowd:
        needles.setdefault("identifier", []).extend(p[f].encode() for f in ("rnokpp", "phone", "address"))
    leaks = [(kind, n) for kind, ns in needles.items() for n in ns if n in blob]
    assert leaks == []
