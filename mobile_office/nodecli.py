"""Building the node's and HQ's configuration from the settings registry and a bundle."""

from __future__ import annotations

import argparse
import ipaddress
import ssl
from pathlib import Path
from typing import Any

from edge.config import NodeConfig
from hq.config import HQConfig
from provisioning.keys import load_bundle, load_hq, read_passphrase
from provisioning.tls import HQ_CERT_DIR, client_context, has_ui_certificate, server_context, ui_server_context

from .ignition import PowerSettings

from kit import settings
from kit.ratelimit import ThrottleSettings



def _https(bundle_dir: Path, mode: str) -> ssl.SSLContext | None:
    """auto: HTTPS when the bundle carries the UI certificate; on: required; off: plain HTTP (demo, tests)."""
    if mode == "off" or (mode == "auto" and not has_ui_certificate(bundle_dir)):
        return None
    return ui_server_context(bundle_dir)


def node_config(bundle_dir: Path, args: argparse.Namespace | None, overrides: dict[str, Any] | None = None) -> NodeConfig:
    bundle = load_bundle(bundle_dir)
    values = settings.NODE.resolve(args, {**bundle.settings, **(overrides or {})})
    https = _https(bundle_dir, values["https"])
    return NodeConfig.from_settings(
        values,
        node_id=bundle.node_id,
        sign_key=bundle.sign,
        hq_seal_public=bundle.hq_seal_public,
        hq_sign_public=bundle.hq_sign_public,
        node_seal_wrapped=bundle.node_seal_wrapped,
        keyslots=[s.config() for s in bundle.keyslots],
        https=https,
        bundle_dir=bundle_dir,
        secure_cookies=https is not None,
        mqtt_tls=client_context(bundle_dir, "mqtt_client") if str(values["broker"]).startswith("mqtts://") else None,
    )


def hq_config(args: argparse.Namespace | None, overrides: dict[str, Any] | None = None) -> HQConfig:
    values = settings.HQ.resolve(args, overrides)
    return HQConfig.from_settings(
        values,
        keys=load_hq(values["hq_data_dir"], read_passphrase(values["hq_passphrase_file"])),
        mqtt_tls=client_context(values["hq_tls_dir"] or values["hq_data_dir"] / "workers" / values["hq_worker"], "worker")
        if str(values["hq_broker"]).startswith("mqtts://") else None,
        sms_token=_read_token(values["sms_token_file"]),
        login_throttle=ThrottleSettings(values["hq_login_max_failures"], values["hq_login_max_failures_per_address"], values["hq_login_lockout"]),
        https=_hq_https(values),
        trusted_proxies=frozenset(values["hq_behind_proxy"] or ()),
    )


def _hq_https(values: dict[str, Any]) -> ssl.SSLContext | None:
    """The operator's certificate, else the one 'provision hq-cert' wrote into HQ's directory, else none (plain HTTP)."""
    cert, key = values["hq_tls_cert"], values["hq_tls_key"]
    if cert is None and key is not None:
        raise settings.ConfigError("--hq-tls-key needs --hq-tls-cert")
    if cert is None:
        cert, key = values["hq_data_dir"] / HQ_CERT_DIR / "hq.crt", values["hq_data_dir"] / HQ_CERT_DIR / "hq.key"
        if not cert.exists():
            return None
    return server_context(cert, key or cert)


def hq_listen_check(cfg: HQConfig) -> None:
    """Passwords and records never cross a network in clear: plain HTTP only on loopback or behind a TLS proxy."""
    if cfg.https is not None or cfg.trusted_proxies or _loopback(cfg.host):
        return
    raise settings.ConfigError(f"--hq-host {cfg.host}: HQ serves plain HTTP only on loopback. Give it a certificate "
                               "('provision hq-cert', or --hq-tls-cert/--hq-tls-key) or, behind a TLS-terminating proxy, "
                               "--hq-behind-proxy PROXY_ADDRESS")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise settings.ConfigError(f"--sms-token-file: cannot read {path}: {exc.strerror}") from exc
    if not token:
        raise settings.ConfigError(f"--sms-token-file: {path} is empty")
    return token


def power_settings(bundle_dir: Path, args: argparse.Namespace | None, overrides: dict[str, Any] | None = None) -> PowerSettings:
    values = settings.NODE.resolve(args, {**load_bundle(bundle_dir).settings, **(overrides or {})})
    power = PowerSettings.from_settings(values)
    power.check()
    return power
