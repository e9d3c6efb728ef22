"""The gates the test command runs: mypy strict on every package, ruff on packages, tests and benches.

Both run as the project configures them in pyproject.toml ([tool.mypy], [tool.ruff]);
a failure shows their own output, so the fix is where it points.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO

PACKAGES = ["kit", "devices", "sync", "edge", "hq", "provisioning", "firmware_sim", "mobile_office"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)


def test_mypy_is_strict_on_every_package() -> None:
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]
    conf = tool["mypy"]
    assert conf["strict"] is True
    assert sorted(conf["packages"]) == sorted(PACKAGES)
    shipped = {p.rstrip("*") for p in tool["setuptools"]["packages"]["find"]["include"]}
    assert shipped == set(PACKAGES), "a new package joins PACKAGES here and [tool.mypy] packages"
    assert not conf.get("ignore_missing_imports"), "ignore a missing stub per module in [[tool.mypy.overrides]], with why"


def test_mypy_strict() -> None:
    r = _run("mypy")  # the packages and settings of [tool.mypy]
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]


@pytest.mark.parametrize("where", [PACKAGES, ["tests", "bench"]], ids=["packages", "tests+bench"])
def test_ruff(where: list[str]) -> None:
    r = _run("ruff", "check", "--no-cache", "--output-format", "concise", *where)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
