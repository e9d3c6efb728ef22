"""Everything a node needs to start, built by the CLI from a bundle + settings.

Defaults live in the settings registry (kit/settings.py) only: a field that
is a setting takes its default from there, and ``from_settings`` builds the
whole config from resolved settings, the one way production, tests and
benches build it (mobile_office/nodecli.py).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from kit import settings
from kit.ratelimit import ThrottleSettings
from sync.clock import Clock, SystemClock
from sync.outbox import Limits

_D = settings.NODE.defaults()

# Fields that are settings of the same name.
SETTINGS_FIELDS = ("data_dir", "broker", "mqtt_version", "gpsd", "modem", "sbd_after", "sbd_interval", "http_host", "http_port",
                   "session_timeout", "session_max_age", "lock_grace", "password_min_length", "track_retention_days", "position_interval",
                   "ack_timeout", "uplink_auth", "max_clock_skew", "mqtt_keepalive", "retention_days", "shred_interval", "photo_max_side",
                   "photo_quality")


@dataclass
class NodeConfig:
    node_id: str
    data_dir: Path
    sign_key: Ed25519PrivateKey
    hq_seal_public: X25519PublicKey
    hq_sign_public: Ed25519PublicKey
    keyslots: list[dict[str, Any]]
    node_seal_wrapped: bytes | None = None
    broker: str = _D["broker"]
    mqtt_version: str = _D["mqtt_version"]
    mqtt_keepalive: int = _D["mqtt_keepalive"]  # the broker sends the last will (offline) 1.5 keepalives after a power cut
    gpsd: tuple[str, int] | None = _D["gpsd"]
    modem: str | None = _D["modem"]
    sbd_after: float = _D["sbd_after"]
    sbd_interval: float = _D["sbd_interval"]
    http_host: str = _D["http_host"]
    http_port: int = _D["http_port"]
    session_timeout: float = _D["session_timeout"]
    session_max_age: float = _D["session_max_age"]
    lock_grace: float = _D["lock_grace"]
    password_min_length: int = _D["password_min_length"]
    photo_max_side: int = _D["photo_max_side"]  # photos of documents scaled on the tablet (edge/static/photos.js)
    photo_quality: float = _D["photo_quality"]
    track_retention_days: float = _D["track_retention_days"]
    position_interval: float = _D["position_interval"]
    ack_timeout: float = _D["ack_timeout"]
    uplink_auth: str = _D["uplink_auth"]
    max_clock_skew: float = _D["max_clock_skew"]
    secure_cookies: bool = False  # follows https (nodecli)
    mqtt_tls: ssl.SSLContext | None = None  # mutual TLS to the broker (mqtts://)
    retention_days: float = _D["retention_days"]
    limits: Limits = field(default_factory=Limits)
    shred_interval: float = _D["shred_interval"]
    clock: Clock = field(default_factory=SystemClock)
    login_throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    bundle_dir: Path | None = None  # key rotation writes the new credentials here
    https: ssl.SSLContext | None = None  # the van UI's server TLS (bundle's ui.crt); None: plain HTTP
    trust_kernel_clock: bool = _D["trust_kernel_clock"] != "off"  # chrony's "synchronised" flag (adjtimex) counts as trusted time
    assume_clock_synchronised: bool = _D["trust_kernel_clock"] == "assume"  # development and tests: the clock is right though nothing disciplines it

    @property
    def floor_path(self) -> Path:
        """The latest trusted time seen, kept durably (kit.timesource): GPS time earlier than it is refused."""
        return self.data_dir / "time_floor.json"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "node.db"

    @classmethod
    def from_settings(cls, values: Mapping[str, Any], **given: Any) -> NodeConfig:
        """Resolved settings (``settings.NODE.resolve``) plus what is not a setting (identity and keys, TLS contexts, clock)."""
        fields = {name: values[name] for name in SETTINGS_FIELDS}
        derived = {"limits": Limits.from_settings(values), "login_throttle": ThrottleSettings.from_settings(values),
                   "trust_kernel_clock": values["trust_kernel_clock"] != "off", "assume_clock_synchronised": values["trust_kernel_clock"] == "assume"}
        return cls(**{**fields, **derived, **given})
