"""A real HQ + van + Mosquitto for the status and SMS tests: processes, HTTP, nothing mocked."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.keys import NodeBundle
from tests.conftest import ADMIN_PASSWORD, REPO, Broker, Proc, free_port, http_ok, mobile_office_cmd, spawn, wait_until
from tests.helpers import ApiClient

OFFICER_PASSWORD = "Офіцер-пароль-1"


class HqBrowser:
    """Form posts with a cookie jar, like the dashboard's pages do."""

    def __init__(self, base: str) -> None:
        self.api = ApiClient(base)
        self.base = base

    def get(self, path: str) -> str:
        with self.api.opener.open(self.base + path, timeout=15) as r:
            return str(r.read().decode())

    def post(self, path: str, form: dict[str, str]) -> tuple[int, str]:
        req = urllib.request.Request(self.base + path, data=urllib.parse.urlencode(form).encode(), method="POST")
        try:
            with self.api.opener.open(req, timeout=15) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def login(self, user: str, password: str) -> None:
        status = self.api.form_login(user, password)
        assert status == 200, status

    def csrf(self) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', self.get("/records"))
        assert m is not None
        return m.group(1)


@dataclass
class Stack:
    tmp: Path
    broker: Broker
    bundle: NodeBundle
    procs: list[Proc]
    van: ApiClient | None = None
    hq_url: str = ""
    hq: Proc | None = None
    hq_port: int = 0

    @property
    def hq_dir(self) -> Path:
        return self.tmp / "hq"

    @property
    def node_db(self) -> Path:
        return self.tmp / "node" / "node.db"

    def start_node(self, gps: bool = False, *extra: str) -> ApiClient:
        port, gps_port = free_port(), free_port()
        if gps:  # the simulated receiver driving a trip, as a gpsd-protocol server
            sim = spawn(mobile_office_cmd("sim", "gps", "--port", str(gps_port), "--speedup", "60"), self.tmp / "gps.log")
            self.procs.append(sim)
            wait_until(lambda: "gpsd-protocol server on" in sim.output(), 30, what="the GPS simulator")
        node = spawn(mobile_office_cmd("node", "--bundle", str(self.bundle.directory), "--data-dir", str(self.tmp / "node"),
                                       "--broker", self.broker.url, "--gpsd", f"127.0.0.1:{gps_port}", "--http-host", "127.0.0.1",
                                       "--http-port", str(port), "--ack-timeout", "3", "--position-interval", "1", *extra), self.tmp / "node.log")
        self.procs.append(node)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 30, what="node")
        self.van = ApiClient(f"http://127.0.0.1:{port}")
        self.van.login("admin", ADMIN_PASSWORD)
        return self.van

    def start_hq(self, *extra: str) -> str:
        self.hq_port = self.hq_port or free_port()
        self.hq = spawn(mobile_office_cmd("hq", "--hq-data-dir", str(self.hq_dir), "--hq-broker", self.broker.url, "--hq-host", "127.0.0.1",
                                          "--hq-port", str(self.hq_port), *extra), self.tmp / "hq.log")
        self.procs.append(self.hq)
        self.hq_url = f"http://127.0.0.1:{self.hq_port}"
        wait_until(lambda: http_ok(self.hq_url + "/healthz"), 30, what="HQ")
        return self.hq_url

    def hq_user(self, name: str, role: str, password: str = OFFICER_PASSWORD) -> None:
        r = subprocess.run([sys.executable, "-m", "mobile_office.cli", "hq-user", name, "--role", role, "--hq-data-dir", str(self.hq_dir),
                            "--password", password], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

    def application(self, phone: str | None = None, sms_consent: bool = False) -> dict[str, Any]:
        """An applicant card (optionally with phone and SMS consent) and an application for it, delivered to HQ."""
        assert self.van is not None
        card: dict[str, Any] = {"surname": "Косач", "given_name": "Лариса", "rnokpp": "3184710691"}
        if phone:
            card["phone"] = phone
        if sms_consent:
            card["sms_consent"] = "yes"
        status, applicant = self.van.request("POST", "/api/v1/applicants", card)
        assert status == 201, applicant
        status, saved = self.van.request("POST", "/api/v1/applications", {"surname": "Косач", "given_name": "Лариса", "rnokpp": "3184710691",
                                                                          "service_code": "RES-01", "applicant_id": applicant["id"]})
        assert status == 201, saved
        wait_until(lambda: self.hq_status(saved["id"]) is not None, 60, what="the record at HQ")
        return dict(saved)

    def hq_status(self, record_id: str) -> dict[str, Any] | None:
        db = self.hq_dir / "hq.db"
        if not db.exists():
            return None
        with sqlite3.connect(db) as c:
            row = c.execute("SELECT number FROM records WHERE record_id = ?", (record_id,)).fetchone()
        return None if row is None else {"number": row[0]}

    def van_status(self, record_id: str) -> str | None:
        with sqlite3.connect(self.node_db) as c:
            try:
                row = c.execute("SELECT status FROM app_status WHERE application_id = ?", (record_id,)).fetchone()
            except sqlite3.OperationalError:
                return None
        return None if row is None else str(row[0])
