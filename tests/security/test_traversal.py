"""Path traversal on static files and on every route with a path variable (found from the router)."""

from __future__ import annotations

from tests.security.conftest import Node, dynamic_routes, form_login

TRAVERSALS = (
    "../../../../etc/passwd", "..%2f..%2f..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "..%252f..%252f..%252fetc%252fpasswd", "....//....//....//etc/passwd", "..\\..\\..\\..\\etc\\passwd",
    "%2e%2e%5c%2e%2e%5c%2e%2e%5cetc%5cpasswd", "/etc/passwd", "%00../../etc/passwd", "..%c0%af..%c0%afetc%c0%afpasswd",
)
# What leaking files would look like: the system's passwd, the node's keys or database, the code.
LEAKS = (b"root:x:0:0", b"root:*:0:0", b"PRIVATE KEY", b"SQLite format 3", b"def create_app", b"import ")


def assert_no_leak(status: int, body: bytes, target: str) -> None:
    assert status != 500, target
    for leak in LEAKS:
        assert leak not in body, f"{target} returned {leak!r} (status {status})"


async def test_static_files_cannot_be_escaped(node: Node) -> None:
    status, body = await node.raw_get("/static/app.css")
    assert status == 200 and b"{" in body  # the route works, so refusals below mean something
    for t in (*TRAVERSALS, "../app.py", "..%2fapp.py", "%2e%2e%2fapp.py", "../../edge/app.py", "..%2f..%2fedge%2fapp.py"):
        status, body = await node.raw_get("/static/" + t)
        assert status in (400, 403, 404), ("/static/" + t, status)
        assert_no_leak(status, body, "/static/" + t)


async def test_every_route_with_a_path_variable_refuses_traversal(node: Node) -> None:
    c = node.client
    await form_login(c)
    cookie = "; ".join(f"{m.key}={m.value}" for m in c.session.cookie_jar)
    routes = dynamic_routes(node.app, {"GET", "HEAD"})
    assert any("{token}" in f for _, f, _ in routes)  # enumeration works (/rate/{token}, attachments later)
    tried = 0
    for _, formatter, names in routes:
        for name in names:
            for t in TRAVERSALS:
                target = formatter.format(**{n: (t if n == name else "x") for n in names})
                status, body = await node.raw_get(target, cookie)
                assert_no_leak(status, body, target)
                tried += 1
    assert tried >= len(TRAVERSALS)
