"""Everything HQ needs to start, built by the CLI from the settings registry.

Defaults live in the registry (kit/settings.py) only; ``from_settings`` is
the one way to build the config (mobile_office/nodecli.py), for tests too.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit import settings
from kit.ratelimit import ThrottleSettings
from provisioning.keys import HQKeys
from sync.clock import Clock, SystemClock

_D = settings.HQ.defaults()

# Field: the setting it is (HQ's flags carry an hq_ prefix where the van has the same one).
SETTINGS_FIELDS = {"data_dir": "hq_data_dir", "broker": "hq_broker", "mqtt_version": "hq_mqtt_version", "worker": "hq_worker",
                   "host": "hq_host", "port": "hq_port", "directip_port": "directip_port", "directip_gateways": "directip_gateways",
                   "directip_reject_log_interval": "directip_reject_log_interval", "session_timeout": "hq_session_timeout",
                   "session_lifetime": "hq_session_lifetime",
                   "status_resend_after": "status_resend_after", "max_clock_skew": "hq_max_clock_skew", "ack_poll_interval": "ack_poll_interval", "sms_url": "sms_url",
                   "sms_retry_min": "sms_retry_min", "sms_retry_max": "sms_retry_max", "tile_url": "tile_url",
                   "tile_attribution": "tile_attribution", "db": "db",
                   "schedule_days": "schedule_days", "schedule_timezone": "schedule_timezone",
                   "retention_days": "hq_retention_days", "retention_interval": "hq_retention_interval",
                   "vault_index_interval": "vault_index_interval", "export_max_records": "export_max_records"}


@dataclass
class HQConfig:
    data_dir: Path
    keys: HQKeys
    broker: str = _D["hq_broker"]
    mqtt_version: str = _D["hq_mqtt_version"]
    worker: str = _D["hq_worker"]
    host: str = _D["hq_host"]
    port: int = _D["hq_port"]
    directip_port: int | None = _D["directip_port"]
    directip_gateways: tuple[str, ...] = _D["directip_gateways"]
    directip_reject_log_interval: float = _D["directip_reject_log_interval"]
    session_timeout: float = _D["hq_session_timeout"]
    session_lifetime: float = _D["hq_session_lifetime"]  # absolute: a session ends this long after its login
    # Built from the hq_login_* settings by the CLI; HTTPS from --hq-tls-cert or 'provision hq-cert'; the TLS proxy's addresses.
    login_throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    https: ssl.SSLContext | None = None  # None: plain HTTP (loopback, or behind a TLS-terminating proxy)
    trusted_proxies: frozenset[str] = frozenset()  # addresses whose X-Forwarded-Proto/-For HQ believes
    mqtt_tls: ssl.SSLContext | None = None
    clock: Clock = field(default_factory=SystemClock)
    # Application status downlink and SMS notices (hq/appstatus.py, hq/sms.py); map tiles (dashboard).
    status_resend_after: float = _D["status_resend_after"]
    max_clock_skew: float = _D["hq_max_clock_skew"]
    ack_poll_interval: float = _D["ack_poll_interval"]
    sms_url: str | None = _D["sms_url"]
    sms_token: str | None = None  # read from --sms-token-file
    sms_retry_min: float = _D["sms_retry_min"]
    sms_retry_max: float = _D["sms_retry_max"]
    tile_url: str = _D["tile_url"]
    tile_attribution: str = _D["tile_attribution"]
    db: str | None = _D["db"]  # postgresql:// URL; None: SQLite at data_dir/hq.db
    # The public schedule (hq/schedule.py).
    schedule_days: int = _D["schedule_days"]
    schedule_timezone: str = _D["schedule_timezone"]
    # The vault's keyed index, exports and retention (hq/vault.py, hq/export.py, hq/retention.py).
    retention_days: float = _D["hq_retention_days"]
    retention_interval: float = _D["hq_retention_interval"]
    vault_index_interval: float = _D["vault_index_interval"]
    export_max_records: int = _D["export_max_records"]

    @property
    def db_target(self) -> Path | str:
        return self.db or self.data_dir / "hq.db"

    @classmethod
    def from_settings(cls, values: Mapping[str, Any], **given: Any) -> HQConfig:
        """Resolved settings (``settings.HQ.resolve``) plus what is not a setting (keys, TLS context, SMS token, clock)."""
        return cls(**{**{f: values[s] for f, s in SETTINGS_FIELDS.items()}, **given})
