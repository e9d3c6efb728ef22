"""Shared fixtures: provisioned HQ and van, real Mosquitto, node processes.

Layers (markers in pyproject.toml): plain tests are fast and in-process;
``functional`` tests start real Mosquitto/gpsd; ``browser`` tests drive
Debian's Chromium; ``fault`` tests kill processes.  A missing system
component skips its tests with the reason, never silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioning.keys import AdminAccount, HQKeys, NodeBundle, add_node, init_hq

ADMIN_PASSWORD = "Тест-пароль-1"
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> object:
    """Poll until true; the timeout only bounds a hang, it asserts nothing about speed."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


@pytest.fixture
def hq_keys(tmp_path: Path) -> HQKeys:
    return init_hq(tmp_path / "hq")


@pytest.fixture
def bundle(hq_keys: HQKeys, tmp_path: Path) -> NodeBundle:
    return add_node(hq_keys, "van-01", tmp_path / "bundle", [AdminAccount("admin", ADMIN_PASSWORD, "van_admin")])


# -- Mosquitto -------------------------------------------------------------

@dataclass
class Broker:
    port: int
    process: subprocess.Popen[bytes]
    conf: Path
    workdir: Path

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)

    def start(self) -> None:
        self.process = _spawn_mosquitto(self.conf, self.port)


def _spawn_mosquitto(conf: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_until(up, 10, what="mosquitto to listen")
    return proc


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or (os.path.exists("/usr/sbin/mosquitto") and "/usr/sbin/mosquitto") or None


def start_mosquitto(workdir: Path, persistence: bool = True, extra: str = "") -> Broker:
    if mosquitto_path() is None:
        pytest.skip("Mosquitto is not installed (the test command installs it when run as root: apt-get install mosquitto)")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"persistence {'true' if persistence else 'false'}\npersistence_location {workdir}/\n"
        "autosave_interval 1\nmax_queued_messages 100000\n" + extra
    )
    return Broker(port, _spawn_mosquitto(conf, port), conf, workdir)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    broker = start_mosquitto(tmp_path / "mosquitto")
    yield broker
    broker.stop()


# -- processes ---------------------------------------------------------------

def mobile_office_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "mobile_office.cli", *args]


@dataclass
class Proc:
    process: subprocess.Popen[bytes]
    log: Path

    def _signal_group(self, sig: signal.Signals) -> None:
        # Its own session (spawn): a wrapper's children (faketime forks the node) go with it, none is left running.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(10)

    def terminate(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            code = self.process.wait(20)
        else:
            code = self.process.returncode
        self._signal_group(signal.SIGTERM)  # whatever it started and left behind
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})},
                                start_new_session=True)
    return Proc(proc, log)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes started by a test; whatever is left is killed at teardown."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


def http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


# -- PostgreSQL (HQ's second backend): session cluster, a database per test -----
from tests.pgcluster import pg_url, postgres_server  # noqa: E402,F401
