"""A stolen SD card holds no personal data: scan the database, its WAL and the logs."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from edge.app import create_app
from edge.validation import rnokpp_check_digit
from provisioning.keys import NodeBundle
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
