"""The service catalogue the van offers (HQ publishes new versions; the bundled one seeds it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mobile_office import data_path


@dataclass(frozen=True)
class Service:
    code: str
    category: str
    name: str
    documents: tuple[str, ...]


@dataclass(frozen=True)
class Package:
    code: str
    name: str
    services: tuple[str, ...]


@dataclass(frozen=True)
class Catalog:
    version: int
    categories: dict[str, str]
    services: dict[str, Service]
    packages: dict[str, Package]

    @classmethod
    def load(cls, path: Path | None = None, packages_path: Path | None = None) -> Catalog:
        doc = json.loads((path or data_path("catalog.json")).read_text(encoding="utf-8"))
        services = {
            s["code"]: Service(s["code"], s["category"], s["name"], tuple(s.get("documents", ())))
            for s in doc["services"]
        }
        pdoc = json.loads((packages_path or data_path("packages.json")).read_text(encoding="utf-8"))
        # A package may only name services this catalogue has (HQ publishes both; stay consistent).
        packages = {
            p["code"]: Package(p["code"], p["name"], tuple(c for c in p["services"] if c in services)) for p in pdoc["packages"]
        }
        return cls(int(doc["version"]), {c["code"]: c["name"] for c in doc["categories"]}, services, packages)

    def grouped(self) -> list[tuple[str, list[Service]]]:
        groups: dict[str, list[Service]] = {}
        for s in self.services.values():
            groups.setdefault(s.category, []).append(s)
        return [(self.categories.get(c, c), sorted(v, key=lambda s: s.code)) for c, v in groups.items()]
