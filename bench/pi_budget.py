"""The van's own budget: the node on one Raspberry Pi 4 core's worth of this machine's CPU.

A Pi 4 core is about 6.5x slower than one core here (issue 20), so the node
process runs under a CPU quota of 1/6.5 of a core (15 %), by the first of:

  1. systemd-run --scope -p CPUQuota=15% (when systemd runs this machine);
  2. a cgroup v2 directory with cpu.max = "15000 100000" under /sys/fs/cgroup;
  3. a cgroup v1 cpu directory with cpu.cfs_quota_us = 15000 (period 100 ms);
  4. none writable: no quota, and every time printed is the measured one x 6.5
     (documented scaling; the line says so).

The child joins the cgroup before it execs (preexec), so its start-up is
inside the quota too.  Printed, each from this run: ready-after-start (process
start to the login page answering), intake latency (one tablet saving
applications one after another: submit to redirect, median and p95), and
page p95 with TABLETS tablets walking the intake flow (ui_render.py's walk).
The tablets, provisioning and timing run outside the quota, as on the van
(tablets are separate devices).

    .venv/bin/python bench/pi_budget.py [ROUNDS] [--method systemd|cgroup2|cgroup1|scaled]
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

import ui_render  # bench/ is the script's directory, so on sys.path

REPO = Path(__file__).resolve().parent.parent
PI_FACTOR = 6.5  # a Pi 4 core vs one core of this machine (issue 20)
QUOTA_US, PERIOD_US = int(100_000 / PI_FACTOR), 100_000  # 15 % of one core
CG_NAME = f"mo-pi-budget-{os.getpid()}"


def systemd_running() -> bool:
    if shutil.which("systemd-run") is None or not Path("/run/systemd/system").is_dir():
        return False
    r = subprocess.run(["systemctl", "is-system-running"], capture_output=True, text=True)
    return r.stdout.strip() in ("running", "degraded")


def make_cgroup(kind: str) -> Path | None:
    """A cgroup with the quota set, or None when this machine does not let us make one."""
    root = Path("/sys/fs/cgroup") if kind == "cgroup2" else Path("/sys/fs/cgroup/cpu")
    if kind == "cgroup2":
        controllers = root / "cgroup.controllers"
        if not controllers.exists() or "cpu" not in controllers.read_text().split():
            return None
        try:
            (root / "cgroup.subtree_control").write_text("+cpu")  # children get the cpu controller
        except OSError:
            return None
    if kind == "cgroup1" and not (root / "cpu.cfs_quota_us").exists():
        return None
    cg = root / CG_NAME
    try:
        cg.mkdir()
        if kind == "cgroup2":
            (cg / "cpu.max").write_text(f"{QUOTA_US} {PERIOD_US}")
        else:
            (cg / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (cg / "cpu.cfs_quota_us").write_text(str(QUOTA_US))
    except OSError:
        try:
            cg.rmdir()
        except OSError:
            pass
        return None
    return cg


def pick_method(wanted: str | None) -> tuple[str, Path | None]:
    order = [wanted] if wanted else ["systemd", "cgroup2", "cgroup1", "scaled"]
    for m in order:
        if m == "systemd" and systemd_running():
            return m, None
        if m in ("cgroup2", "cgroup1"):
            cg = make_cgroup(m)
            if cg is not None:
                return m, cg
        if m == "scaled":
            return m, None
    raise SystemExit(f"method {wanted} is not available on this machine")


def start_node(method: str, cg: Path | None, bundle: Path, data: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, __file__, "--node", str(bundle), str(data), str(port)]
    preexec: Callable[[], None] | None = None
    if method == "systemd":
        cmd = ["systemd-run", "--scope", "--quiet", "-p", f"CPUQuota={100 / PI_FACTOR:.0f}%", *cmd]
    elif cg is not None:
        procs = cg / "cgroup.procs"

        def preexec() -> None:  # in the child, before exec: everything it runs is inside the quota
            procs.write_text(str(os.getpid()))

    return subprocess.Popen(cmd, cwd=REPO, preexec_fn=preexec, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def node_child(bundle: str, data: str, port: str) -> None:
    from aiohttp import web

    from edge.app import create_app
    from mobile_office.nodecli import node_config

    # No broker (records wait in the outbox, as offline in a field), no GPS, plain HTTP on loopback.
    cfg = node_config(Path(bundle), None, {"data_dir": Path(data), "http_host": "127.0.0.1", "http_port": int(port), "gpsd": None,
                                           "broker": f"mqtt://127.0.0.1:{ui_render.free_port()}", "https": "off"})
    web.run_app(create_app(cfg), host="127.0.0.1", port=int(port), print=None, access_log=None)


async def wait_ready(base: str, t0: float) -> float:
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(base + "/login") as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.02)


async def intake(base: str, s: aiohttp.ClientSession, n: int) -> list[float]:
    times = []
    for _ in range(n):
        async with s.get(base + "/applications/new") as r:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
        assert csrf
        data = {"csrf": csrf.group(1), "surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776",
                "service_code": "RES-01", "consent": "on"}
        t0 = time.perf_counter()
        async with s.post(base + "/applications", data=data, allow_redirects=False) as r:
            assert r.status == 303, r.status
        times.append(time.perf_counter() - t0)
    return times


async def main(rounds: int, wanted: str | None) -> None:
    from provisioning.keys import AdminAccount, add_node, init_hq

    method, cg = pick_method(wanted)
    scale = PI_FACTOR if method == "scaled" else 1.0
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        hq = init_hq(tmp / "hq")
        add_node(hq, "van-pi", tmp / "bundle", [AdminAccount(f"admin{i}", ui_render.PASSWORD, "van_admin") for i in range(ui_render.CLIENTS)])
        port = ui_render.free_port()
        base = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        node = start_node(method, cg, tmp / "bundle", tmp / "node", port)
        sessions: list[aiohttp.ClientSession] = []
        try:
            ready = await wait_ready(base, t0)
            sessions, paths = await ui_render.prepare_node(base)
            saves = await intake(base, sessions[0], max(5, rounds * 2))
            await ui_render.walk(base, sessions, paths, 1)  # warm up
            page_times, _ = await ui_render.walk(base, sessions, paths, rounds)
        finally:
            for s in sessions:
                await s.close()
            node.terminate()
            node.wait(30)
            if cg is not None:
                cg.rmdir()
    how = {"systemd": f"systemd-run --scope -p CPUQuota={100 / PI_FACTOR:.0f}%",
           "cgroup2": f"cgroup v2 {cg} cpu.max {QUOTA_US} {PERIOD_US}", "cgroup1": f"cgroup v1 {cg} cpu.cfs_quota_us {QUOTA_US}/{PERIOD_US}",
           "scaled": f"no quota available: times measured unconstrained x {PI_FACTOR} (documented scaling)"}[method]
    ms = sorted(t * 1000 * scale for t in saves)
    _, p95 = ui_render.summary(page_times)
    print(f"Pi 4 budget: one core / {PI_FACTOR} = {100 / PI_FACTOR:.0f} % of a core here, by {how}")
    print(f"ready after start: {ready * scale:6.2f} s (process start to the login page answering)")
    print(f"intake latency:    {statistics.median(ms):6.1f} ms median, {ms[max(0, int(len(ms) * 0.95) - 1)]:6.1f} ms p95 "
          f"({len(ms)} applications saved one after another)")
    print(f"page p95:          {p95 * scale:6.1f} ms with {ui_render.CLIENTS} tablets ({len(page_times)} pages: queue, new application, "
          "applicant search, receipt)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--node":
        node_child(*sys.argv[2:5])
    else:
        args = [a for a in sys.argv[1:] if not a.startswith("--")]
        method_arg = sys.argv[sys.argv.index("--method") + 1] if "--method" in sys.argv else None
        if method_arg in args:
            args.remove(method_arg)
        asyncio.run(main(int(args[0]) if args else 5, method_arg))
