"""The published service catalogue as one JSON document, and its shape check (HQ before publishing, the van before applying).

Shape (what HQ signs and retains on ``mo/v1/all/down/catalog``, version = envelope seq)::

    {"version": N,
     "categories": [{"code", "name"}, ...],
     "services": [{"code", "category", "name", "documents": [str, ...], ...}, ...],
     "packages": [{"code", "name", "services": [service code, ...]}, ...]}

Extra keys (``national_id``, ``available_in``, ``note``...) are kept as they are.
Error messages are for people (Ukrainian) and name the place in the document.
"""

from __future__ import annotations

import json
from typing import Any

from kit import data_path

MAX_SERVICES = 2000


def packaged() -> dict[str, Any]:
    """The catalogue shipped with the software: catalog.json with packages.json folded in."""
    doc: dict[str, Any] = json.loads(data_path("catalog.json").read_text(encoding="utf-8"))
    pdoc = json.loads(data_path("packages.json").read_text(encoding="utf-8"))
    doc["packages"] = pdoc["packages"]
    return doc


def _text(v: object) -> bool:
    return isinstance(v, str) and bool(v.strip()) and len(v) <= 500


def validate(doc: object) -> list[str]:
    """Everything wrong with a catalogue document, in Ukrainian; empty when it can be published/applied."""
    if not isinstance(doc, dict):
        return ["Каталог має бути JSON-об'єктом з полями categories, services, packages"]
    errors: list[str] = []
    cats = doc.get("categories")
    cat_codes: set[str] = set()
    if not isinstance(cats, list) or not cats:
        errors.append("categories: потрібен непорожній список категорій")
    else:
        for i, c in enumerate(cats):
            if not isinstance(c, dict) or not _text(c.get("code")) or not _text(c.get("name")):
                errors.append(f"categories[{i}]: потрібні непорожні рядки code і name")
            elif c["code"] in cat_codes:
                errors.append(f"categories[{i}]: код категорії «{c['code']}» повторюється")
            else:
                cat_codes.add(c["code"])
    services = doc.get("services")
    codes: set[str] = set()
    if not isinstance(services, list) or not services:
        errors.append("services: потрібен непорожній список послуг")
    elif len(services) > MAX_SERVICES:
        errors.append(f"services: забагато послуг (найбільше {MAX_SERVICES})")
    else:
        for i, s in enumerate(services):
            where = f"services[{i}]"
            if not isinstance(s, dict):
                errors.append(f"{where}: послуга має бути об'єктом")
                continue
            if not _text(s.get("code")):
                errors.append(f"{where}.code: потрібен непорожній рядок")
            elif s["code"] in codes:
                errors.append(f"{where}.code: код послуги «{s['code']}» повторюється")
            else:
                codes.add(s["code"])
            if not _text(s.get("name")):
                errors.append(f"{where}.name: потрібна назва послуги")
            if not isinstance(s.get("category"), str) or s["category"] not in cat_codes:
                errors.append(f"{where}.category: категорії «{s.get('category')}» немає в categories")
            docs = s.get("documents", [])
            if not isinstance(docs, list) or not all(_text(d) for d in docs):
                errors.append(f"{where}.documents: потрібен список назв документів (рядків)")
    packages = doc.get("packages", [])
    pcodes: set[str] = set()
    if not isinstance(packages, list):
        errors.append("packages: потрібен список пакетів послуг")
    else:
        for i, p in enumerate(packages):
            where = f"packages[{i}]"
            if not isinstance(p, dict) or not _text(p.get("code")) or not _text(p.get("name")):
                errors.append(f"{where}: потрібні непорожні рядки code і name")
                continue
            if p["code"] in pcodes:
                errors.append(f"{where}.code: код пакета «{p['code']}» повторюється")
            pcodes.add(p["code"])
            members = p.get("services")
            # An empty package is allowed (offered at the Centre only); the van does not offer it.
            if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
                errors.append(f"{where}.services: потрібен список кодів послуг")
            elif codes:
                missing = [m for m in members if m not in codes]
                if missing:
                    errors.append(f"{where}.services: послуг {', '.join(map(str, missing))} немає в каталозі")
    return errors
