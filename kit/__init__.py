"""The floor every room stands on: the shared web kit (error shape, JSON
responses, sessions, rate limiting, security headers), supervised background
tasks, injected time, the settings registry, geometry and the bundled domain
data files.

It imports nothing of ours; every other package may import it (see
docs/architecture.md and tests/unit/test_layers.py).
"""

from importlib import resources
from pathlib import Path


def data_path(name: str) -> Path:
    """Path of a bundled domain file (catalog.json, stops.json, ...)."""
    return Path(str(resources.files("kit") / "data" / name))
