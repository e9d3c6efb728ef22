"""One settings registry: it validates config, builds ``--help`` and the docs.

Each setting is declared once with its type, default and help text.  The
same declaration is used by argparse (flags), by the config-file loader (a
node's enrolment bundle carries a JSON config) and by ``docs/config.md``.
Bad values fail fast with one clear line naming the setting.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ConfigError(Exception):
    """A setting has a bad value; the message is one line for the operator."""


def port(value: str) -> int:
    n = int(value)
    if not 0 <= n <= 65535:
        raise ValueError("port must be 0..65535")
    return n


def positive_float(value: str) -> float:
    f = float(value)
    if f <= 0:
        raise ValueError("must be > 0")
    return f


def positive_int(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise ValueError("must be > 0")
    return n


def time_zone(value: str) -> str:
    """An IANA time zone name this machine knows (tzdata)."""
    try:
        ZoneInfo(value)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        raise ValueError("expected an IANA time zone such as Europe/Kyiv") from exc
    return value


def fraction(value: str) -> float:
    f = float(value)
    if not 0 < f <= 1:
        raise ValueError("must be > 0 and <= 1")
    return f


def host_port(value: str) -> tuple[str, int]:
    host, sep, p = value.rpartition(":")
    if not sep or not host:
        raise ValueError("expected HOST:PORT")
    return host, port(p)


def mqtt_url(value: str) -> str:
    if not value.startswith(("mqtt://", "mqtts://")):
        raise ValueError("expected mqtt://host:port or mqtts://host:port")
    rest = value.split("://", 1)[1]
    host_port(rest if ":" in rest else rest + ":1883")
    return value


def http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        raise ValueError("expected http://host[:port]/path or https://...")
    return value


def tile_url(value: str) -> str:
    if value and not (value.startswith(("http://", "https://", "/")) and all(p in value for p in ("{z}", "{x}", "{y}"))):
        raise ValueError("expected a URL template with {z}, {x} and {y}")
    return value


def db_url(value: str) -> str:
    # the password belongs in ~/.pgpass or PGPASSWORD, not on a command line that `ps` shows
    if not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("expected postgresql://user@host:port/dbname (leave unset for SQLite in --hq-data-dir)")
    return value


def address_list(value: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in value.split(",") if p.strip())
    if not parts:
        raise ValueError("expected one or more addresses separated by commas")
    return parts


@dataclass(frozen=True)
class Setting:
    name: str  # snake_case key in config files; flag is --name-with-dashes
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def convert(self, raw: Any) -> Any:
        if raw is None:
            return None
        if not isinstance(raw, str):
            raw = str(raw)
        if self.choices and raw not in self.choices:
            raise ConfigError(f"{self.flag}: '{raw}' is not one of {', '.join(self.choices)}")
        try:
            return self.parse(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{self.flag}: bad value '{raw}': {exc}") from exc


@dataclass
class SettingGroup:
    title: str
    settings: list[Setting] = field(default_factory=list)

    def add_arguments(self, parser: argparse.ArgumentParser, only: Iterable[str] | None = None) -> None:
        group = parser.add_argument_group(self.title)
        for s in self.settings:
            if only is not None and s.name not in only:
                continue
            default_txt = "" if s.default is None else f" (default: {s.default})"
            group.add_argument(
                s.flag,
                dest=s.name,
                default=None,
                metavar=s.metavar,
                choices=s.choices,
                help=s.help + default_txt,
            )

    def resolve(self, args: argparse.Namespace | None, file_values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Flags override the config file, which overrides defaults."""
        out: dict[str, Any] = {}
        file_values = file_values or {}
        for s in self.settings:
            raw = getattr(args, s.name, None) if args is not None else None
            if raw is None:
                raw = file_values.get(s.name)
            if raw is None and isinstance(s.default, str) and s.parse is address_list:
                raw = s.default  # written as text in the docs, used parsed
            out[s.name] = s.default if raw is None else s.convert(raw)
        return out

    def defaults(self) -> dict[str, Any]:
        """Every setting at its default: what a config built with no flags and no file holds."""
        return self.resolve(None)

    def setting(self, name: str) -> Setting:
        """One declaration by name (code that takes a default from the registry)."""
        for s in self.settings:
            if s.name == name:
                return s
        raise KeyError(name)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| flag / config key | default | meaning |", "|---|---|---|"]
        for s in self.settings:
            d = "" if s.default is None else f"`{s.default}`"
            lines.append(f"| `{s.flag}` / `{s.name}` | {d} | {s.help} |")
        return "\n".join(lines) + "\n"


def load_json_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: line {exc.lineno}: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    return data


NODE = SettingGroup(
    "van node",
    [
        Setting("data_dir", Path, Path("./data/node"), "directory of the node's database and keys", "DIR"),
        Setting("http_host", str, "0.0.0.0", "address the van UI listens on", "ADDR"),
        Setting("http_port", port, 8080, "port of the van UI", "PORT"),
        Setting("broker", mqtt_url, "mqtt://127.0.0.1:1883", "MQTT broker of HQ", "URL"),
        Setting("mqtt_version", str, "5", "MQTT protocol version to speak", choices=("5", "3.1.1")),
        Setting("gpsd", host_port, ("127.0.0.1", 2947), "gpsd to read positions from", "HOST:PORT"),
        Setting("modem", str, None, "serial device of the satellite modem (none: no satellite link)", "DEVICE"),
        Setting("sbd_after", positive_float, 300.0, "seconds without MQTT before heartbeats go by satellite", "SECONDS"),
        Setting("sbd_interval", positive_float, 900.0, "seconds between satellite heartbeats while MQTT is down", "SECONDS"),
        Setting("ack_timeout", positive_float, 10.0, "seconds before an unacknowledged batch is sent again", "SECONDS"),
        Setting("uplink_auth", str, "mac", "how the van authenticates what it sends HQ: mac (HMAC under the key it shares with HQ, "
                "30x cheaper for HQ to check) or signature (Ed25519, for an HQ older than this version)", choices=("mac", "signature")),
        Setting("max_clock_skew", positive_float, 30 * 86400.0, "seconds a message from HQ may be stamped ahead of the van's clock; "
                "further ahead, it is refused and its clock never taken (the van may boot with a stale clock)", "SECONDS"),
        Setting("position_interval", positive_float, 5.0, "seconds between positions sent to HQ", "SECONDS"),
        Setting("session_timeout", positive_float, 900.0, "idle seconds before an administrator is logged out", "SECONDS"),
        Setting("session_max_age", positive_float, 43200.0, "seconds after login an administrator is logged out however active (a shift)",
                "SECONDS"),
        Setting("lock_grace", positive_float, 300.0, "seconds after the last administrator's session ended before the store locks "
                "again (the node key leaves memory)", "SECONDS"),
        Setting("password_min_length", positive_int, 10, "shortest administrator password accepted (common passwords are refused too)", "N"),
        Setting("limit_records_mb", positive_float, 512.0, "records waiting for HQ: past this, intake is refused (never dropped)", "MB"),
        Setting("limit_audit_mb", positive_float, 128.0, "audit entries waiting for HQ: past this, intake is refused", "MB"),
        Setting("limit_positions_mb", positive_float, 32.0, "raw GPS waiting for HQ: past this, the oldest unsent points are thinned", "MB"),
        Setting("limit_events_mb", positive_float, 64.0, "events (trips, queue, visits) waiting for HQ: past this, they are refused", "MB"),
        Setting("limit_files_mb", positive_float, 2048.0, "document files waiting for HQ: past this, new files are refused", "MB"),
        Setting("photo_max_side", positive_int, 1600, "photos of documents are scaled on the tablet to at most this many pixels on the "
                "long side before upload (the administrator may keep the original)", "PIXELS"),
        Setting("photo_quality", fraction, 0.8, "JPEG quality of a photo scaled on the tablet (0..1)", "Q"),
        Setting("min_free_disk_mb", positive_float, 64.0, "disk space always kept free: intake is refused before it is used", "MB"),
        Setting("retention_days", positive_float, 7.0, "days the van keeps personal data HQ has acknowledged, then shreds it", "DAYS"),
        Setting("track_retention_days", positive_float, 7.0, "days the van keeps its own GPS track (it leads to people's doors)", "DAYS"),
        Setting("login_max_failures", positive_int, 5, "failed logins for one username before it is locked out for a while", "N"),
        Setting("login_max_failures_per_address", positive_int, 20, "failed logins from one client address before it is locked out", "N"),
        Setting("login_lockout", positive_float, 300.0, "first lockout after too many failed logins; doubles each time, up to --login-max-lockout", "SECONDS"),
        Setting("login_max_lockout", positive_float, 3600.0, "longest lockout after repeated failed logins", "SECONDS"),
        Setting("login_window", positive_float, 900.0, "failed logins older than this are forgotten", "SECONDS"),
        Setting("shred_interval", positive_float, 3600.0, "seconds between runs of the shredder of expired personal data", "SECONDS"),
        Setting("ignition_gpio", Path, None, "file whose content is the ignition line (e.g. /sys/class/gpio/gpio17/value); "
                "none: no ignition input (SIGPWR still means ignition off)", "FILE"),
        Setting("ignition_off_value", str, "0", "content of --ignition-gpio that means the ignition is off", "VALUE"),
        Setting("ignition_poll", positive_float, 0.5, "seconds between reads of the ignition input", "SECONDS"),
        Setting("shutdown_sync_seconds", positive_float, 20.0, "on ignition off: at most this long to deliver what is pending to HQ", "SECONDS"),
        Setting("poweroff_command", str, None, "on ignition off, after the flush and the last sync: run this (e.g. 'systemctl poweroff')",
                "COMMAND"),
        Setting("trust_kernel_clock", str, "on", "trust the kernel's 'synchronised' flag that chrony sets (off: only GPS time is"
                " trusted, e.g. for a node run under libfaketime, whose clock is not the kernel's; assume: take the system clock as"
                " synchronised, for a development machine or test whose clock is right though nothing disciplines it)",
                choices=("on", "off", "assume")),
        Setting("mqtt_keepalive", positive_int, 30, "MQTT keepalive; the broker publishes the van's last will (offline) "
                "1.5 keepalives after a power cut", "SECONDS"),
        Setting("https", str, "auto", "serve the van UI over HTTPS with the bundle's ui.crt/ui.key (auto: when the bundle has them)",
                choices=("auto", "on", "off")),
    ],
)

HQ = SettingGroup(
    "HQ",
    [
        Setting("hq_data_dir", Path, Path("./data/hq"), "directory of HQ's database and keys", "DIR"),
        Setting("hq_host", str, "0.0.0.0", "address the HQ dashboard listens on", "ADDR"),
        Setting("hq_port", port, 8090, "port of the HQ dashboard", "PORT"),
        Setting("hq_broker", mqtt_url, "mqtt://127.0.0.1:1883", "MQTT broker HQ ingests from", "URL"),
        Setting("hq_mqtt_version", str, "5", "MQTT protocol version HQ speaks", choices=("5", "3.1.1")),
        Setting("hq_worker", str, "hq-1", "this ingest worker's name (MQTT client id)", "NAME"),
        Setting("hq_tls_dir", Path, None, "directory with this worker's worker.crt/.key and ca.crt, for an mqtts:// broker", "DIR"),
        Setting("directip_port", port, None, "TCP port of the Iridium DirectIP MO receiver (none: no satellite ingest)", "PORT"),
        Setting("hq_session_timeout", positive_float, 1800.0, "idle seconds before an HQ user is logged out", "SECONDS"),
        Setting("ack_poll_interval", positive_float, 2.0, "seconds between HQ's checks for vans' acknowledgements of what it sent down", "SECONDS"),
        Setting("hq_max_clock_skew", positive_float, 86400.0, "seconds a van's envelope may be stamped ahead of HQ's clock; "
                "further ahead, its items are quarantined and alerted, its clock never taken", "SECONDS"),
        Setting("directip_gateways", address_list, "127.0.0.1", "addresses the DirectIP receiver accepts connections from, "
                "comma-separated: Iridium's gateway addresses from the service agreement (others are closed unanswered)", "ADDRS"),
        Setting("directip_reject_log_interval", positive_float, 3600.0, "a refused DirectIP address is logged once per this "
                "period (a scan cannot flood the log)", "SECONDS"),
        Setting("status_resend_after", positive_float, 300.0, "seconds before an application status not yet confirmed by its van is sent again", "SECONDS"),
        Setting("sms_url", http_url, None, "SMS gateway endpoint (POST JSON {id, to, text}); none: no SMS notices", "URL"),
        Setting("sms_token_file", Path, None, "file holding the SMS gateway's bearer token (kept off the command line)", "FILE"),
        Setting("sms_retry_min", positive_float, 5.0, "first wait before an undelivered SMS is tried again (doubles each time)", "SECONDS"),
        Setting("sms_retry_max", positive_float, 600.0, "longest wait between SMS attempts", "SECONDS"),
        Setting("tile_url", tile_url, "", "map tile server, e.g. https://tile.example.ua/{z}/{x}/{y}.png; empty: the tile-free map", "URL"),
        Setting("schedule_days", positive_int, 14, "days ahead the public schedule (/public/schedule, .ics, .json) publishes the vans' planned stops", "DAYS"),
        Setting("schedule_timezone", time_zone, "Europe/Kyiv", "time zone of the planned stops' time windows (IANA name), for the public schedule", "ZONE"),
        Setting("tile_attribution", str, "", "attribution the tile server requires, shown on the map (e.g. © OpenStreetMap contributors)", "TEXT"),
        Setting("db", db_url, None, "HQ's database on PostgreSQL (password via ~/.pgpass or PGPASSWORD); none: SQLite hq.db in --hq-data-dir, which keeps the keys either way", "URL"),
        Setting("hq_retention_days", positive_float, 1826.0, "days HQ keeps a case's personal data after it is closed (issued or "
                "refused), then crypto-shreds it; default five years (docs/hq.md: Retention)", "DAYS"),
        Setting("hq_retention_interval", positive_float, 3600.0, "seconds between HQ's retention rounds", "SECONDS"),
        Setting("vault_index_interval", positive_float, 30.0, "seconds between rounds of HQ's keyed identifier index over new records", "SECONDS"),
        Setting("export_max_records", positive_int, 10000, "most records one export to the back office may hold (narrow the filter)", "N"),
        Setting("hq_passphrase_file", Path, None, "file whose first line is the passphrase of HQ's private keys "
                "(default: $MO_HQ_PASSPHRASE; none: keys unencrypted)", "FILE"),
        Setting("hq_tls_cert", Path, None, "HTTPS certificate (PEM, chain) of the dashboard and API; default: DIR/https/hq.crt when "
                "'provision hq-cert' made one, else plain HTTP (refused on a non-loopback address without --hq-behind-proxy)", "FILE"),
        Setting("hq_tls_key", Path, None, "private key of --hq-tls-cert (default: the key in the certificate's own file)", "FILE"),
        Setting("hq_behind_proxy", address_list, None, "HQ sits behind a TLS-terminating proxy at these addresses (comma-separated): "
                "plain HTTP is allowed on any address and X-Forwarded-Proto is believed from them only", "ADDR[,ADDR]"),
        Setting("hq_session_lifetime", positive_float, 43200.0, "seconds after a login when its HQ session ends however active it is", "SECONDS"),
        Setting("hq_login_max_failures", positive_int, 5, "failed HQ logins for one username before it is locked out for a while", "N"),
        Setting("hq_login_max_failures_per_address", positive_int, 20, "failed HQ logins from one client address before it is locked out", "N"),
        Setting("hq_login_lockout", positive_float, 300.0, "first HQ lockout after too many failed logins; doubles each time, up to an hour",
                "SECONDS"),
    ],
)


# `provision broker-config`, `revoke` and `refresh-crl`: the broker HQ configures.
BROKER = SettingGroup(
    "broker (provision)",
    [
        Setting("crl_days", positive_int, 365, "days a signed CRL stays valid at the broker (re-signed daily by "
                "mobile-office-crl.timer and on every revoke; a lapsed CRL makes Mosquitto refuse everybody)", "DAYS"),
        Setting("broker_max_packet", positive_int, 1024 * 1024, "largest MQTT packet the broker accepts; a client sending a "
                "larger one is disconnected (envelopes are at most 64 KiB)", "BYTES"),
        Setting("broker_reload_command", str, None, "command that makes the broker re-read its CRL after revoke/refresh-crl "
                "(e.g. 'systemctl reload mosquitto'); none: SIGHUP to the pid in the broker directory's run/mosquitto.pid",
                "COMMAND"),
    ],
)


def all_groups() -> Iterable[SettingGroup]:
    return (NODE, HQ, BROKER)


def docs_markdown() -> str:
    parts = ["# Configuration", "", "Generated from `kit/settings.py` (`mobile-office config-docs`).", ""]
    parts += [g.markdown() for g in all_groups()]
    return "\n".join(parts)
