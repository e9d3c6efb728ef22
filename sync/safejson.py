"""JSON from the other end, parsed only after its size and nesting are checked.

``json.loads`` recurses once per level: a few thousand ``[`` in one signed
item raise RecursionError (not ValueError) deep inside the parser.  The
depth is counted first with one regex pass (strings stripped), so a hostile
item fails as a plain ValueError before the parser sees it.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_BYTES = 1024 * 1024  # no honest record, event or command is near this
MAX_DEPTH = 32  # ours nest three or four levels

# One left-to-right pass: a string (or an unterminated one, to the end) is one token, so the
# scan stays linear on hostile input; brackets outside strings are counted.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\Z)|[\[\]{}]', re.DOTALL)


def loads(raw: bytes | str, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` with caps; ValueError for anything it refuses (too large, too deep, not JSON)."""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    if len(data) > max_bytes:
        raise ValueError(f"JSON of {len(data)} bytes, over {max_bytes}")
    depth = 0
    for m in _TOKEN.finditer(data):
        tok = m.group()
        if tok in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise ValueError(f"JSON nested deeper than {max_depth}")
        elif tok in (b"]", b"}"):
            depth -= 1
    return json.loads(data)
