"""Everything HQ needs to start, built by the CLI from the settings registry."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from provisioning.keys import HQKeys
from sync.clock import Clock, SystemClock


@dataclass
class HQConfig:
    data_dir: Path
    keys: HQKeys
    broker: str = "mqtt://127.0.0.1:1883"
    mqtt_version: str = "5"
    worker: str = "hq-1"
    host: str = "0.0.0.0"
    port: int = 8090
    directip_port: int | None = None
    directip_gateways: tuple[str, ...] = ("127.0.0.1",)
    directip_reject_log_interval: float = 3600.0
    session_timeout: float = 1800.0
    mqtt_tls: ssl.SSLContext | None = None
    clock: Clock = field(default_factory=SystemClock)
    # Application status downlink and SMS notices (hq/appstatus.py, hq/sms.py); map tiles (dashboard).
    status_resend_after: float = 300.0
    max_clock_skew: float = 86400.0
    ack_poll_interval: float = 2.0
    sms_url: str | None = None
    sms_token: str | None = None
    sms_retry_min: float = 5.0
    sms_retry_max: float = 600.0
    tile_url: str = ""
    tile_attribution: str = ""
    db: str | None = None  # postgresql:// URL; None: SQLite at data_dir/hq.db

    @property
    def db_target(self) -> Path | str:
        return self.db or self.data_dir / "hq.db"
