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


UI_CERT, UI_KEY = "ui.crt", "ui.key"


def has_ui_certificate(bundle_dir: Path) -> bool:
    return (bundle_dir / UI_CERT).exists() and (bundle_dir / UI_KEY).exists()


def ui_server_context(bundle_dir: Path) -> ssl.SSLContext:
    """The van UI's HTTPS: the bundle's server certificate (signed by HQ's CA) for its Wi-Fi names."""
    if not has_ui_certificate(bundle_dir):
        raise ProvisioningError(f"--https on needs {UI_CERT} and {UI_KEY} in {bundle_dir} (provision add-node --ui-name ...)")
    return server_context(bundle_dir / UI_CERT, bundle_dir / UI_KEY)


HQ_CERT_DIR = "https"  # in HQ's directory: hq.crt/hq.key from 'provision hq-cert'


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """An HTTPS server's context (the van UI, HQ): TLS 1.2 or newer, this certificate chain and key."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise ProvisioningError(f"HTTPS certificate or key missing: {exc.filename}") from exc
    except ssl.SSLError as exc:
        raise ProvisioningError(f"{cert}: unusable certificate or key ({exc.reason})") from exc
    return ctx
