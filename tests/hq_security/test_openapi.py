"""The published API descriptions are true: both validate, and a short, bounded schemathesis run against a live HQ and a
live van (authenticated) finds no server error and only documented status codes, content types and bodies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance, status_code_conformance

from provisioning.keys import NodeBundle
from tests.conftest import ADMIN_PASSWORD, REPO, Proc, free_port, http_ok, mobile_office_cmd, spawn, wait_until
from tests.helpers import ApiClient, hq_token

SPECS = (REPO / "hq" / "openapi.yaml", REPO / "edge" / "openapi.yaml")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_EXAMPLES = 8  # per operation: a short run that still tries empty, odd and long values


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: str(p.relative_to(REPO)))
def test_openapi_validates(spec: Path) -> None:
    validate(yaml.safe_load(spec.read_text(encoding="utf-8")))


def fuzz(spec: Path, base: str, headers: dict[str, str], wanted: Callable[[str, str], bool]) -> list[str]:
    """Every wanted operation, MAX_EXAMPLES generated requests each; returns the operations run."""
    schema = schemathesis.openapi.from_path(spec)
    ran = []
    for result in schema.get_all_operations():
        op = result.ok()
        if not wanted(op.method.upper(), op.path):
            continue

        @given(case=op.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case: object) -> None:
            case.call_and_validate(base_url=base, headers=headers, checks=CHECKS, timeout=30)  # type: ignore[attr-defined]

        run()
        ran.append(f"{op.method.upper()} {op.path}")
    return ran


@pytest.mark.functional
def test_schemathesis_against_live_hq_and_van(tmp_path: Path, bundle: NodeBundle, procs: list[Proc]) -> None:
    hq_dir = bundle.directory.parent / "hq"
    dead_broker = f"mqtt://127.0.0.1:{free_port()}"
    hq_port, van_port = free_port(), free_port()
    procs.append(spawn(mobile_office_cmd("hq", "--hq-data-dir", str(hq_dir), "--hq-broker", dead_broker, "--hq-host", "127.0.0.1",
                                         "--hq-port", str(hq_port)), tmp_path / "hq.log"))
    procs.append(spawn(mobile_office_cmd("node", "--bundle", str(bundle.directory), "--data-dir", str(tmp_path / "node"), "--broker", dead_broker,
                                         "--gpsd", f"127.0.0.1:{free_port()}", "--http-host", "127.0.0.1", "--http-port", str(van_port)),
                       tmp_path / "node.log"))
    hq, van = f"http://127.0.0.1:{hq_port}", f"http://127.0.0.1:{van_port}"
    wait_until(lambda: http_ok(hq + "/healthz") and http_ok(van + "/healthz"), 60, what="HQ and the van")

    # HQ's JSON API with a machine token (the form pages need a browser session and a CSRF token: not fuzzed here).
    ran = fuzz(SPECS[0], hq, {"Authorization": f"Bearer {hq_token(hq_dir)}"},
               lambda method, path: path == "/healthz" or path.startswith("/api/"))
    assert "GET /api/v1/fleet" in ran and "GET /api/v1/report" in ran and len(ran) >= 10, ran

    # The van's JSON API with an administrator's session; logout last would end it, so it is left out.
    api = ApiClient(van)
    api.login("admin", ADMIN_PASSWORD)
    cookie = "; ".join(f"{c.name}={c.value}" for c in api.jar)
    ran = fuzz(SPECS[1], van, {"Cookie": cookie}, lambda method, path: path != "/api/v1/logout")
    assert "POST /api/v1/applications" in ran and "POST /api/v1/login" in ran, ran
    assert "Traceback" not in procs[0].output() + procs[1].output()
