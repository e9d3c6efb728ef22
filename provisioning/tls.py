"""TLS contexts for MQTT clients from the files provisioning wrote."""

from __future__ import annotations

import ssl
from pathlib import Path

from .errors import ProvisioningError


def client_context(directory: Path, stem: str) -> ssl.SSLContext:
    """Verify the broker against HQ's CA and present ``stem``.crt/.key (mutual TLS)."""
    ca, cert, key = directory / "ca.crt", directory / f"{stem}.crt", directory / f"{stem}.key"
    for f in (ca, cert, key):
        if not f.exists():
            raise ProvisioningError(f"mqtts:// needs {f.name} in {directory} (made by provisioning)")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx
