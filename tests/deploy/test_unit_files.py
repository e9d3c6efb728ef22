"""The deployment files agree with the code: the unit's and node.env's flags exist, paths are writable under ProtectSystem."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from mobile_office.cli import build_parser
from tests.conftest import REPO

DEPLOY = REPO / "deploy"


def unit(name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (DEPLOY / name).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "//")):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def env_file() -> dict[str, str]:
    return unit("node.env.example")


def test_node_unit_is_a_watched_restarting_readonly_service() -> None:
    u = unit("mobile-office-node.service")
    assert u["Type"] == "notify" and int(u["WatchdogSec"]) > 0 and u["Restart"] == "on-failure"
    assert u["ProtectSystem"] == "strict" and u["StateDirectory"] == "mobile-office"
    assert float(u["TimeoutStopSec"]) > 20.0  # longer than the default --shutdown-sync-seconds
    assert u["LimitCORE"] == "0"  # keys in memory never reach the card as a core dump
    args = shlex.split(u["ExecStart"])
    writable = [Path(p) for p in u["ReadWritePaths"].split()] + [Path("/var/lib") / u["StateDirectory"]]
    for flag in ("--bundle", "--data-dir"):
        path = Path(args[args.index(flag) + 1])
        assert any(path.is_relative_to(w) for w in writable), (flag, path)


def test_every_flag_in_the_unit_and_env_file_is_a_real_node_flag() -> None:
    env = env_file()
    exec_start = unit("mobile-office-node.service")["ExecStart"]
    exec_start = exec_start.replace("$NODE_ARGS", env["NODE_ARGS"]).replace("${POWEROFF_COMMAND}", shlex.quote(env["POWEROFF_COMMAND"]))
    argv = shlex.split(exec_start)
    assert argv[0].endswith("/mobile-office")
    args = build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown flag or a bad choice
    assert args.command == "node" and args.poweroff_command == "systemctl poweroff" and args.https == "on"


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    for name in ("mobile-office-node.service", "mobile-office-ignition.service", "mobile-office-crl.service", "mobile-office-crl.timer"):
        r = subprocess.run(["systemd-analyze", "verify", str(DEPLOY / name)], capture_output=True, text=True)
        problems = [line for line in (r.stdout + r.stderr).splitlines()
                    if line.strip() and "is not executable" not in line and "/opt/mobile-office" not in line]
        assert problems == [], (name, problems)


def test_crl_timer_runs_the_refresh_daily_with_real_flags() -> None:
    timer, service = unit("mobile-office-crl.timer"), unit("mobile-office-crl.service")
    assert timer["Unit"] == "mobile-office-crl.service" and timer["OnCalendar"] == "daily" and timer["Persistent"] == "true"
    assert service["Type"] == "oneshot"
    argv = shlex.split(service["ExecStart"].replace("$CRL_ARGS", "--passphrase-file /etc/mobile-office/hq-passphrase --crl-days 365"))
    assert argv[0].endswith("/mobile-office")
    args = build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown flag
    assert (args.command, args.provision_cmd, args.crl_days) == ("provision", "refresh-crl", "365")
    hq_dir = Path(argv[argv.index("--hq-dir") + 1])
    assert any(hq_dir.is_relative_to(Path(w)) for w in service["ReadWritePaths"].split())
