"""Reading a PEM private key, encrypted or not: the one place that explains a missing file or a wrong passphrase."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from .errors import ProvisioningError

PASSPHRASE_ENV = "MO_HQ_PASSPHRASE"


def load_private(path: Path, passphrase: bytes | None = None) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ProvisioningError(f"key file missing: {path}") from exc
    except OSError as exc:
        raise ProvisioningError(f"key file unreadable: {path} ({exc.strerror})") from exc
    encrypted = b"ENCRYPTED" in data.split(b"\n", 1)[0]
    if encrypted and not passphrase:
        raise ProvisioningError(f"{path} is encrypted: give --passphrase-file FILE or set {PASSPHRASE_ENV}")
    try:
        return serialization.load_pem_private_key(data, passphrase if encrypted else None)
    except (ValueError, TypeError) as exc:
        if encrypted:
            raise ProvisioningError(f"wrong passphrase for {path}") from exc
        raise ProvisioningError(f"key file unreadable: {path}") from exc
