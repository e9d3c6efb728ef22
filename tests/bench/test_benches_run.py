"""Every bench/ script runs in a tiny configuration, so none can rot unnoticed.

No timing is asserted (timings are the benches' own business, printed as
ratios against a baseline from the same run); a bench passes when it exits
cleanly and prints the figure it exists to print.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import mosquitto_path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"


# script, tiny arguments, a line every complete run prints (the figure the bench is for)
TINY: list[tuple[str, list[str], str]] = [
    ("intake_bench.py", ["5", "2"], "ratio sealed/raw: median"),
    ("sync_gps_bytes.py", [], "ratio JSON/ours"),
    ("sbd_heartbeat.py", [], "ratio credits compact/signed"),
    ("ui_render.py", ["1"], "ratio node/bare"),
    ("pi_budget.py", ["1"], "page p95:"),
    ("keys_bench.py", ["5", "1"], "shredding round of"),
    ("sync_drain.py", ["--tiny"], "ratio end-to-end / raw"),
    ("hq_load.py", ["--vans", "3", "--records", "2", "--positions", "20", "--backends", "sqlite", "--workers", "1",
                    "--timeout", "120"], "x base"),
]


# Benches with a test of their own, which runs them small and checks more than that they print.
OWN_TEST = {"acceptance.py": REPO / "tests" / "sync" / "test_acceptance.py"}


def test_every_bench_script_is_listed() -> None:
    """A new bench must be added here too, or the test command would not run it."""
    assert sorted(p.name for p in BENCH.glob("*.py")) == sorted([name for name, _, _ in TINY] + list(OWN_TEST))
    for script, test in OWN_TEST.items():
        assert script in test.read_text(encoding="utf-8"), f"{test} does not run {script}"


@pytest.mark.parametrize(("script", "args", "figure"), TINY, ids=[t[0] for t in TINY])
def test_bench_runs_tiny(script: str, args: list[str], figure: str) -> None:
    if script in ("sync_drain.py", "hq_load.py") and mosquitto_path() is None:
        pytest.skip("Mosquitto is not installed (bin/setup --test installs it)")
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert figure in proc.stdout, out[-4000:]
    assert "INCOMPLETE" not in proc.stdout, out[-4000:]
