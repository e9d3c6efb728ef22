"""Building the node's and HQ's configuration from the settings registry and a bundle."""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path
from typing import Any

from edge.config import NodeConfig
from hq.config import HQConfig
from provisioning.keys import load_bundle, load_hq, read_passphrase
from provisioning.tls import client_context, has_ui_certificate, ui_server_context
from sync.outbox import Limits

from .ignition import PowerSettings
from kit.ratelimit import ThrottleSettings

from kit import settings


MB = 1024 * 1024


def _https(bundle_dir: Path, mode: str) -> ssl.SSLContext | None:
    """auto: HTTPS when the bundle carries the UI certificate; on: required; off: plain HTTP (demo, tests)."""
    if mode == "off" or (mode == "auto" and not has_ui_certificate(bundle_dir)):
        return None
    return ui_server_context(bundle_dir)


def node_config(bundle_dir: Path, args: argparse.Namespace | None, overrides: dict[str, Any] | None = None) -> NodeConfig:
    bundle = load_bundle(bundle_dir)
    values = settings.NODE.resolve(args, {**bundle.settings, **(overrides or {})})
    https = _https(bundle_dir, values["https"])
    return NodeConfig(
        node_id=bundle.node_id,
        data_dir=values["data_dir"],
        sign_key=bundle.sign,
        hq_seal_public=bundle.hq_seal_public,
        hq_sign_public=bundle.hq_sign_public,
        node_seal_wrapped=bundle.node_seal_wrapped,
        keyslots=[s.config() for s in bundle.keyslots],
        broker=values["broker"],
        mqtt_version=values["mqtt_version"],
        mqtt_keepalive=values["mqtt_keepalive"],
        gpsd=values["gpsd"],
        modem=values["modem"],
        sbd_after=values["sbd_after"],
        sbd_interval=values["sbd_interval"],
        http_host=values["http_host"],
        http_port=values["http_port"],
        session_timeout=values["session_timeout"],
        session_max_age=values["session_max_age"],
        lock_grace=values["lock_grace"],
        password_min_length=values["password_min_length"],
        photo_max_side=values["photo_max_side"],
        photo_quality=values["photo_quality"],
        track_retention_days=values["track_retention_days"],
        position_interval=values["position_interval"],
        ack_timeout=values["ack_timeout"],
        max_clock_skew=values["max_clock_skew"],
        retention_days=values["retention_days"],
        https=https,
        trust_kernel_clock=values["trust_kernel_clock"] != "off",
        assume_clock_synchronised=values["trust_kernel_clock"] == "assume",
        bundle_dir=bundle_dir,
        secure_cookies=https is not None,
        login_throttle=ThrottleSettings(values["login_max_failures"], values["login_max_failures_per_address"], values["login_lockout"]),
        mqtt_tls=client_context(bundle_dir, "mqtt_client") if str(values["broker"]).startswith("mqtts://") else None,
        limits=Limits(
            {**Limits().per_stream, "rec": int(values["limit_records_mb"] * MB), "audit": int(values["limit_audit_mb"] * MB),
             "pos": int(values["limit_positions_mb"] * MB)},
            int(values["min_free_disk_mb"] * MB),
        ),
    )


def hq_config(args: argparse.Namespace | None, overrides: dict[str, Any] | None = None) -> HQConfig:
    values = settings.HQ.resolve(args, overrides)
    return HQConfig(
        data_dir=values["hq_data_dir"],
        keys=load_hq(values["hq_data_dir"], read_passphrase(values["hq_passphrase_file"])),
        broker=values["hq_broker"],
        mqtt_version=values["hq_mqtt_version"],
        worker=values["hq_worker"],
        host=values["hq_host"],
        port=values["hq_port"],
        directip_port=values["directip_port"],
        directip_gateways=values["directip_gateways"],
        directip_reject_log_interval=values["directip_reject_log_interval"],
        db=values["db"],
        mqtt_tls=client_context(values["hq_tls_dir"] or values["hq_data_dir"] / "workers" / values["hq_worker"], "worker")
        if str(values["hq_broker"]).startswith("mqtts://") else None,
        status_resend_after=values["status_resend_after"],
        max_clock_skew=values["hq_max_clock_skew"],
        sms_url=values["sms_url"],
        sms_token=_read_token(values["sms_token_file"]),
        sms_retry_min=values["sms_retry_min"],
        sms_retry_max=values["sms_retry_max"],
        tile_url=values["tile_url"],
        tile_attribution=values["tile_attribution"],
    )


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
    power = PowerSettings(values["ignition_gpio"], values["ignition_off_value"], values["ignition_poll"],
                          values["shutdown_sync_seconds"], values["poweroff_command"])
    power.check()
    return power
