"""The settings registry (kit/settings.py) is the only place a default lives, and docs/config.md is what it generates."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.config import NodeConfig
from hq.config import HQConfig
from kit import settings
from kit.ratelimit import ThrottleSettings
from mobile_office.ignition import PowerSettings
from sync.outbox import Limits
from tests.conftest import REPO

# Where config dataclasses live: none of them may spell a default out (None and on/off switches excepted).
CONFIG_FILES = ("edge/config.py", "hq/config.py", "sync/outbox.py", "kit/ratelimit.py", "mobile_office/ignition.py")
CONFIG_CLASSES = {"NodeConfig", "HQConfig", "Limits", "ThrottleSettings", "PowerSettings"}


def test_docs_config_is_what_the_registry_generates() -> None:
    out = subprocess.run([sys.executable, "-m", "mobile_office.cli", "config-docs"], cwd=REPO, capture_output=True, text=True, check=True)
    assert (REPO / "docs" / "config.md").read_text(encoding="utf-8") == out.stdout, \
        "docs/config.md is stale: run `mobile-office config-docs > docs/config.md`"


def _literal_defaults(path: Path) -> list[str]:
    found = []
    for cls in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(cls, ast.ClassDef) or cls.name not in CONFIG_CLASSES:
            continue
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and stmt.value is not None and isinstance(stmt.target, ast.Name):
                value = stmt.value
                if isinstance(value, ast.Constant) and (value.value is None or isinstance(value.value, bool)):
                    continue
                try:
                    ast.literal_eval(value)
                except ValueError:
                    continue  # taken from the registry (a name, a subscript, a call)
                found.append(f"{path.name}: {cls.name}.{stmt.target.id} = {ast.unparse(value)}")
    return found


def test_no_config_dataclass_spells_out_a_default() -> None:
    found = [f for name in CONFIG_FILES for f in _literal_defaults(REPO / name)]
    assert found == [], "defaults belong in kit/settings.py: " + "; ".join(found)


def test_the_literal_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "config.py"
    bad.write_text("class NodeConfig:\n    port: int = 8080\n    tls: object | None = None\n    on: bool = False\n", encoding="utf-8")
    assert _literal_defaults(bad) == ["config.py: NodeConfig.port = 8080"]


def _fields(obj: Any, skip: tuple[str, ...] = ("clock",)) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name not in skip}


@pytest.mark.parametrize("build", ["node", "hq", "limits", "throttle", "power"])
def test_a_config_built_with_no_settings_equals_one_built_from_the_registry(build: str) -> None:
    """Tests and benches that construct a config directly get exactly what production gets with no flags."""
    node, hq = settings.NODE.defaults(), settings.HQ.defaults()
    given: dict[str, Any] = {"node_id": "van-01", "sign_key": None, "hq_seal_public": None, "hq_sign_public": None, "keyslots": []}
    direct: Any
    built: Any
    if build == "node":
        direct, built = NodeConfig(data_dir=node["data_dir"], **given), NodeConfig.from_settings(node, **given)
    elif build == "hq":
        direct, built = HQConfig(data_dir=hq["hq_data_dir"], keys=None), HQConfig.from_settings(hq, keys=None)  # type: ignore[arg-type]
    elif build == "limits":
        direct, built = Limits(), Limits.from_settings(node)
    elif build == "throttle":
        direct, built = ThrottleSettings(), ThrottleSettings.from_settings(node)
    else:
        direct, built = PowerSettings(), PowerSettings.from_settings(node)
    assert _fields(direct) == _fields(built)
    if build == "node":  # and the registry's numbers, not some other copy of them
        assert built.limits.per_stream["rec"] == int(node["limit_records_mb"] * 1024 * 1024)
        assert (built.session_timeout, built.login_throttle.max_per_user) == (node["session_timeout"], node["login_max_failures"])
