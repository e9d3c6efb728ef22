"""XSS in every text field of the applicant and intake forms; SQL injection in login and search."""

from __future__ import annotations

import re

from tests.conftest import ADMIN_PASSWORD
from tests.security.conftest import Node, csrf_of, form_login

PAYLOADS = (
    '"><script>alert(1)</script>',
    "'><img src=x onerror=alert(1)>",
    "</textarea><svg onload=alert(1)>",
)
# Markup that would execute if a payload came back unescaped.
DANGEROUS = ("<script>alert(", "<img src=x", "<svg onload")
VALID_APPLICANT = {"surname": "Шевченко", "given_name": "Тарас", "patronymic": "Григорович", "birth_date": "09.03.1984",
                   "rnokpp": "1759013776", "phone": "+380501234567", "email": "t@example.ua", "address": "Київ, вул. Хрещатик, 1"}
VALID_INTAKE = {"surname": "Шевченко", "given_name": "Тарас", "rnokpp": "1759013776", "service_code": "RES-01", "consent": "on"}
FORM_RE = re.compile(r'<form method="post" action="(?P<action>[^"]+)".*?</form>', re.S)
TEXT_INPUT_RE = re.compile(r'<(?:input|textarea)\b(?![^>]*type="(?:hidden|checkbox|radio|submit)")[^>]*\bname="([^"]+)"')


def text_fields(page: str, action: str) -> list[str]:
    """The text inputs of the form posting to ``action``, read from the page (new fields are covered too)."""
    for m in FORM_RE.finditer(page):
        if m.group("action") == action:
            return TEXT_INPUT_RE.findall(m.group(0))
    raise AssertionError(f"no form posting to {action}")


def assert_escaped(body: str, where: str) -> None:
    for bad in DANGEROUS:
        assert bad not in body, f"unescaped {bad!r} in {where}"


async def _submit_each(node: Node, page: str, action: str, valid: dict[str, str]) -> int:
    c = node.client
    fields = text_fields((await (await c.get(page)).text()), action)
    assert fields, page
    for name in fields:
        for payload in PAYLOADS:
            token = await csrf_of(c, page)
            r = await c.post(action, data={**valid, name: payload, "csrf": token}, headers={"Origin": node.origin})
            assert r.status < 500, (action, name, r.status)
            assert_escaped(await r.text(), f"{action} with {name}={payload!r} ({r.url})")
    return len(fields)


async def test_xss_in_every_field_of_the_applicant_and_intake_forms_comes_back_escaped(node: Node) -> None:
    await form_login(node.client)
    assert await _submit_each(node, "/applicants/new", "/applicants", VALID_APPLICANT) >= 10
    assert await _submit_each(node, "/applications/new", "/applications", VALID_INTAKE) >= 3
    assert await _submit_each(node, "/applicants", "/applicants/search", {}) >= 3
    # Whatever was accepted and stored is escaped wherever it is shown again.
    c = node.client
    r = await c.post("/applicants/search", data={"rnokpp": "1759013776", "csrf": await csrf_of(c, "/applicants")})
    page = await r.text()
    assert 'id="found"' in page  # the stored applicants are listed, so their fields were rendered
    assert_escaped(page, "search results")
    for href in set(re.findall(r'href="(/applications/new\?applicant=[0-9a-f]{32})"', page)):
        assert_escaped(await (await c.get(href)).text(), href)


async def test_xss_in_a_rating_comment_and_in_urls_comes_back_escaped(node: Node) -> None:
    c = node.client
    await form_login(c)
    for path in ("/lang/en?next=/%22%3E%3Cscript%3Ealert(1)%3C/script%3E", '/applications/"><script>alert(1)</script>/receipt',
                 "/rate/%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E"):
        r = await c.get(path)
        assert r.status < 500, path
        assert_escaped(await r.text(), path)


SQLI = ("' OR '1'='1", "admin'--", "admin' OR 1=1--", "'; DROP TABLE applications;--", '" OR ""="', "1' UNION SELECT * FROM keyslots--")


async def test_sql_injection_in_login_fails_like_any_wrong_password(node: Node) -> None:
    async with node.browser() as b:
        for s in SQLI[:4]:  # fewer than the lockout limit
            r = await b.post("/api/v1/login", json={"username": s, "password": s})
            assert r.status == 401, (s, r.status)
            r = await b.post("/api/v1/login", json={"username": "admin", "password": s})
            assert r.status in (401, 429), (s, r.status)
        assert (await b.get("/api/v1/status")).status == 200
    r = await node.client.post("/api/v1/login", json={"username": "olena", "password": "Другий-пароль-2"})
    assert r.status == 200  # accounts intact


async def test_sql_injection_in_search_finds_nothing_and_harms_nothing(node: Node) -> None:
    c = node.client
    r = await c.post("/api/v1/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status == 200
    r = await c.post("/api/v1/applicants", json=VALID_APPLICANT)
    assert r.status == 201, await r.text()
    for s in SQLI:
        for query in ({"rnokpp": s}, {"unzr": s}, {"surname": s, "birth_date": "1984-03-09"}, {"document_type": "id_card", "document_number": s}):
            r = await c.post("/api/v1/applicants/search", json=query)
            assert r.status in (200, 422), (query, r.status)
            if r.status == 200:
                assert (await r.json())["applicants"] == [], query
        token = await csrf_of(c, "/applicants")
        r = await c.post("/applicants/search", data={"surname": s, "birth_date": "09.03.1984", "rnokpp": s, "csrf": token})
        assert r.status in (200, 422) and 'id="found"' not in await r.text(), s
    r = await c.post("/api/v1/applicants/search", json={"rnokpp": "1759013776"})
    assert len((await r.json())["applicants"]) == 1  # the data is still there and still found
