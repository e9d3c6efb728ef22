"""HQ's alert rules on an injected 'now'."""

from __future__ import annotations

from hq.fleet import BACKLOG_RECORDS, SILENT_AFTER, alerts_for, svg_map
from hq.users import allowed

NOW = 1_780_000_000.0


def node(**kw: object) -> dict[str, object]:
    return {"node_id": "van-01", "last_seen": NOW - 60, "outbox_depth": {}, **kw}


def codes(n: dict[str, object], **counts: int) -> list[str]:
    return [a.code for a in alerts_for(n, NOW, counts.get("rejected", 0), counts.get("breaks", 0), counts.get("quarantined", 0))]


def test_quiet_van_raises_nothing() -> None:
    assert codes(node()) == []


def test_silent_van() -> None:
    assert codes(node(last_seen=NOW - SILENT_AFTER - 1)) == ["silent"]
    assert codes(node(last_seen=None)) == ["silent"]
    assert codes(node(last_seen=NOW - SILENT_AFTER + 1)) == []


def test_backlog_forgery_audit_and_quarantine() -> None:
    assert codes(node(outbox_depth={"rec": BACKLOG_RECORDS + 1})) == ["backlog"]
    assert codes(node(outbox_depth={"rec": BACKLOG_RECORDS, "pos": 10_000})) == []
    assert codes(node(), rejected=2, breaks=1, quarantined=3) == ["forged", "audit_chain", "quarantine"]


def test_roles() -> None:
    assert not allowed("viewer", "open_records") and not allowed("viewer", "command")
    assert allowed("records_officer", "open_records") and not allowed("records_officer", "command")
    assert allowed("dispatcher", "command") and not allowed("dispatcher", "open_records")
    assert allowed("admin", "open_records") and allowed("admin", "command")


def test_map_without_tiles_escapes_names() -> None:
    svg = svg_map({"van-<1>": [(0, 47.9, 33.3), (1, 48.0, 33.4)]}, [{"node_id": "van-<1>", "lat": 48.0, "lon": 33.4, "status": "online"}])
    assert "<polyline" in svg and "<circle" in svg and "van-<1>" not in svg and "van-&lt;1&gt;" in svg
