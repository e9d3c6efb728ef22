"""systemd integration without systemd: a real unix datagram socket plays NOTIFY_SOCKET; the ignition input is a file."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mobile_office import sdnotify
from provisioning.keys import NodeBundle
from tests.conftest import ADMIN_PASSWORD, Proc, free_port, mobile_office_cmd, spawn, wait_until
from tests.helpers import ApiClient


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.2)
    yield path, s
    s.close()


def drain(s: socket.socket) -> list[str]:
    """What has arrived so far (non-blocking: the watchdog pings never stop)."""
    out = []
    s.setblocking(False)
    try:
        while True:
            out.append(s.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        s.settimeout(0.2)


def test_notify_sends_datagrams(listener: tuple[str, socket.socket]) -> None:
    path, s = listener
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": path})
    assert s.recv(100) == b"READY=1"
    assert not sdnotify.notify("READY=1", {})  # not under systemd: nothing, no error
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": path + ".gone"})


def test_abstract_socket_and_watchdog_interval() -> None:
    name = f"mo-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        assert sdnotify.notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert s.recv(100) == b"WATCHDOG=1"
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # meant for another process
    assert sdnotify.watchdog_interval({}) is None


@pytest.mark.functional
def test_node_notifies_systemd_and_shuts_down_cleanly_on_ignition_off(
    bundle: NodeBundle, tmp_path: Path, procs: list[Proc], listener: tuple[str, socket.socket]
) -> None:
    path, s = listener
    gpio, data, marker = tmp_path / "ignition", tmp_path / "data", tmp_path / "powered-off"
    gpio.write_text("1\n")
    port = free_port()
    p = spawn(mobile_office_cmd("node", "--bundle", str(bundle.directory), "--data-dir", str(data), "--http-host", "127.0.0.1",
                                "--http-port", str(port), "--broker", f"mqtt://127.0.0.1:{free_port()}", "--ignition-gpio", str(gpio),
                                "--ignition-poll", "0.1", "--shutdown-sync-seconds", "2", "--poweroff-command", f"touch {marker}"),
              tmp_path / "node.log", env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    procs.append(p)
    got: list[str] = []
    wait_until(lambda: got.extend(drain(s)) or ("READY=1" in got and got.count("WATCHDOG=1") >= 2), 60, what="READY and watchdog pings")
    # Something the administrator saw saved, with HQ unreachable: it must survive the power cut.
    api = ApiClient(f"http://127.0.0.1:{port}")
    api.login("admin", ADMIN_PASSWORD)
    status, doc = api.request("POST", "/api/v1/applications", {"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776",
                                                               "service_code": "RES-01"})
    assert status == 201, doc
    assert p.process.poll() is None
    gpio.write_text("0\n")
    wait_until(lambda: got.extend(drain(s)) or p.process.poll() is not None, 60, what="the node to exit after ignition off")
    assert p.process.returncode == 0, p.output()
    assert "STOPPING=1" in got + drain(s)
    assert got.index("READY=1") < got.index("STOPPING=1")
    assert marker.exists(), p.output()  # the poweroff command ran, after the flush
    assert "still waiting for HQ" in p.output() and "store flushed" in p.output()
    wal = data / "node.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed into the database file
    with sqlite3.connect(data / "node.db") as db:
        assert db.execute("SELECT count(*) FROM applications").fetchone()[0] == 1


def test_notify_never_blocks_on_a_full_socket(listener: tuple[str, socket.socket]) -> None:
    path, _ = listener  # nobody reads: the buffer fills up, notify must return instead of blocking
    results = [sdnotify.notify("WATCHDOG=1", {"NOTIFY_SOCKET": path}) for _ in range(5000)]
    assert results[0] and not results[-1]


@pytest.mark.functional
def test_sigpwr_means_ignition_off(bundle: NodeBundle, tmp_path: Path, procs: list[Proc]) -> None:
    port, marker = free_port(), tmp_path / "powered-off"
    p = spawn(mobile_office_cmd("node", "--bundle", str(bundle.directory), "--data-dir", str(tmp_path / "data"), "--http-host", "127.0.0.1",
                                "--http-port", str(port), "--broker", f"mqtt://127.0.0.1:{free_port()}", "--shutdown-sync-seconds", "1",
                                "--poweroff-command", f"touch {marker}"), tmp_path / "node.log")
    procs.append(p)
    wait_until(lambda: "serving on" in p.output(), 60, what="the node to serve")
    p.process.send_signal(signal.SIGPWR)
    wait_until(lambda: p.process.poll() is not None, 60, what="the node to exit after SIGPWR")
    assert p.process.returncode == 0 and marker.exists() and "store flushed" in p.output(), p.output()
