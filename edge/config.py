"""Everything a node needs to start, built by the CLI from a bundle + settings."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from kit.ratelimit import ThrottleSettings
from sync.clock import Clock, SystemClock
from sync.outbox import Limits


@dataclass
class NodeConfig:
    node_id: str
    data_dir: Path
    sign_key: Ed25519PrivateKey
    hq_seal_public: X25519PublicKey
    hq_sign_public: Ed25519PublicKey
    keyslots: list[dict[str, Any]]
    node_seal_wrapped: bytes | None = None
    broker: str = "mqtt://127.0.0.1:1883"
    mqtt_version: str = "5"
    mqtt_keepalive: int = 30  # the broker sends the last will (offline) 1.5 keepalives after a power cut
    gpsd: tuple[str, int] | None = ("127.0.0.1", 2947)
    modem: str | None = None
    sbd_after: float = 300.0
    sbd_interval: float = 900.0
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    session_timeout: float = 900.0
    session_max_age: float = 43200.0
    lock_grace: float = 300.0
    password_min_length: int = 10
    photo_max_side: int = 1600  # photos of documents scaled on the tablet (edge/static/photos.js)
    photo_quality: float = 0.8
    track_retention_days: float = 7.0
    position_interval: float = 5.0
    ack_timeout: float = 10.0
    max_clock_skew: float = 30 * 86400.0
    secure_cookies: bool = False
    mqtt_tls: ssl.SSLContext | None = None  # mutual TLS to the broker (mqtts://)
    retention_days: float = 7.0
    limits: Limits = field(default_factory=Limits)
    shred_interval: float = 3600.0
    clock: Clock = field(default_factory=SystemClock)
    login_throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    bundle_dir: Path | None = None  # key rotation writes the new credentials here
    https: ssl.SSLContext | None = None  # the van UI's server TLS (bundle's ui.crt); None: plain HTTP
    trust_kernel_clock: bool = True  # chrony's "synchronised" flag (adjtimex) counts as trusted time
    assume_clock_synchronised: bool = False  # development and tests: the system clock is right though nothing disciplines it

    @property
    def floor_path(self) -> Path:
        """The latest trusted time seen, kept durably (kit.timesource): GPS time earlier than it is refused."""
        return self.data_dir / "time_floor.json"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "node.db"
