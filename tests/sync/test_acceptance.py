"""The published acceptance procedure (bench/acceptance.py, docs/acceptance.md), short: real node, HQ and Mosquitto processes.

Size from MO_ACCEPTANCE_KILLS / MO_ACCEPTANCE_BROKER_KILLS (defaults small); the script exits non-zero on any loss or duplicate.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, mosquitto_path

pytestmark = pytest.mark.fault


def test_acceptance_procedure_loses_nothing_and_duplicates_nothing() -> None:
    if mosquitto_path() is None:
        pytest.skip("Mosquitto is not installed (bin/setup --test installs it as root)")
    kills = int(os.environ.get("MO_ACCEPTANCE_KILLS", "3"))
    env = {**os.environ, "MO_ACCEPTANCE_KILLS": str(kills), "MO_ACCEPTANCE_BROKER_KILLS": os.environ.get("MO_ACCEPTANCE_BROKER_KILLS", "1"),
           "MO_ACCEPTANCE_MODES": "persistent,volatile"}
    r = subprocess.run([sys.executable, str(REPO / "bench" / "acceptance.py")], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    summary = [line for line in r.stdout.splitlines() if line.strip().startswith("total:")]
    assert summary and "lost 0, duplicated 0" in summary[0], r.stdout[-2000:]
    assert f"node kills {2 * kills}," in summary[0]  # both broker modes ran, each with its kills
