"""Command line, settings registry and shared web plumbing of the Mobile Office system.

The rooms (edge, sync, devices, firmware_sim, provisioning, hq) hold the
product; this package only wires them into one ``mobile-office`` command.
"""

from importlib import resources
from pathlib import Path

__version__ = "0.1.0"


def data_path(name: str) -> Path:
    """Path of a bundled domain file (catalog.json, stops.json, ...)."""
    return Path(str(resources.files("mobile_office") / "data" / name))
