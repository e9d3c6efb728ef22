"""HQ's certificate authority: the broker's server certificate, client certificates, the CRL.

Identities are the certificates' common names: a van's node id, or an HQ
worker's name (``hq-...``).  Mosquitto takes the CN as the username
(``use_identity_as_username``) and the username as the client id
(``use_username_as_clientid``), so no certificate can take another
identity's session; the ACL gives each identity its topics.

The CRL is signed with a long validity and re-signed on a schedule
(``provision refresh-crl``, deploy/mobile-office-crl.timer) and on every
``revoke``; each broker directory written by ``broker-config`` is recorded
(``ca/brokers.json``) and gets the new CRL, then the broker reloads it
(SIGHUP to the pid in its pid file, or the configured reload command).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import pwd
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kit.files import write_atomic
from kit.settings import BROKER

from .errors import ProvisioningError
from .pem import load_private

CA_DAYS = 3650
CERT_DAYS = 825
CRL_DAYS: int = BROKER.setting("crl_days").default
MAX_PACKET: int = BROKER.setting("broker_max_packet").default


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


@dataclass
class CA:
    directory: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.crt"

    @classmethod
    def create(cls, directory: Path, name: str = "ЦНАП Mobile Office HQ CA", passphrase: bytes | None = None) -> CA:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_atomic(directory / "ca.key", _key_pem(key, passphrase), 0o600)
        (directory / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / "revoked.json").write_text("[]\n")
        ca = cls(directory, key, cert)
        ca.write_crl()
        return ca

    @classmethod
    def load(cls, directory: Path, passphrase: bytes | None = None) -> CA:
        if not (directory / "ca.key").exists() or not (directory / "ca.crt").exists():
            raise ProvisioningError(f"no certificate authority in {directory}: run 'provision init-hq' first")
        key = load_private(directory / "ca.key", passphrase)
        cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ProvisioningError("the CA key is not an EC key")
        return cls(directory, key, cert)

    def issue(self, common_name: str, out_dir: Path, stem: str, server_names: list[str] | None = None) -> tuple[Path, Path]:
        """A key and certificate for a client (node, HQ worker) or, with server_names, for a server."""
        out_dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5)).not_valid_after(_now() + dt.timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if server_names:
            sans: list[x509.GeneralName] = []
            for n in server_names:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(n)))
                except ValueError:
                    sans.append(x509.DNSName(n))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        key_path, cert_path = out_dir / f"{stem}.key", out_dir / f"{stem}.crt"
        write_atomic(key_path, _key_pem(key), 0o600)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._record(common_name, cert.serial_number)
        return key_path, cert_path

    def _record(self, cn: str, serial: int) -> None:
        issued_path = self.directory / "issued.json"
        issued = json.loads(issued_path.read_text()) if issued_path.exists() else {}
        issued.setdefault(cn, []).append(serial)
        issued_path.write_text(json.dumps(issued, indent=2) + "\n")

    def revoke(self, common_name: str, crl_days: int = CRL_DAYS) -> int:
        """Revoke every certificate issued to this identity; returns how many (the brokers are not told: see publish_crl)."""
        issued_path = self.directory / "issued.json"
        issued = json.loads(issued_path.read_text()) if issued_path.exists() else {}
        serials = issued.get(common_name, [])
        revoked = set(json.loads((self.directory / "revoked.json").read_text()))
        revoked.update(serials)
        (self.directory / "revoked.json").write_text(json.dumps(sorted(revoked)) + "\n")
        self.write_crl(crl_days)
        return len(serials)

    def write_crl(self, days: int = CRL_DAYS) -> Path:
        revoked = json.loads((self.directory / "revoked.json").read_text())
        # Long validity: a broker whose CRL lapses refuses every van and every HQ worker, so a missed refresh must not
        # be what stops the fleet; the timer re-signs it daily.
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(_now() - dt.timedelta(minutes=5)).next_update(_now() + dt.timedelta(days=days)))
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(_now() - dt.timedelta(minutes=1)).build()
            )
        crl = builder.sign(self.key, hashes.SHA256())
        path = self.directory / "crl.pem"
        write_atomic(path, crl.public_bytes(serialization.Encoding.PEM))
        return path

    # -- the brokers this CA configured --------------------------------------
    @property
    def _brokers_path(self) -> Path:
        return self.directory / "brokers.json"

    def brokers(self) -> dict[str, dict[str, str | None]]:
        """Broker directories written by broker_config: {dir: {"reload_command": ... or None}}."""
        p = self._brokers_path
        return dict(json.loads(p.read_text())) if p.exists() else {}

    def _remember_broker(self, out: Path, reload_command: str | None) -> None:
        brokers = self.brokers()
        brokers[str(out)] = {"reload_command": reload_command}
        write_atomic(self._brokers_path, (json.dumps(brokers, indent=2) + "\n").encode(), 0o600)

    def publish_crl(self, days: int = CRL_DAYS) -> list[str]:
        """Re-sign the CRL, copy it into every recorded broker directory and make each broker reload it.

        Returns one line per broker for the operator; raises ProvisioningError if a broker could not be told
        (the CRL is written either way: the next reload or restart picks it up).
        """
        data = self.write_crl(days).read_bytes()
        lines, failures = [], []
        for directory, conf in sorted(self.brokers().items()):
            out = Path(directory)
            if not out.is_dir():
                failures.append(f"{out}: the broker directory is gone (run broker-config again)")
                continue
            write_atomic(out / "crl.pem", data)
            try:
                lines.append(f"{out}: {reload_broker(out, conf.get('reload_command'))}")
            except ProvisioningError as exc:
                failures.append(f"{out}: {exc}")
        if failures:
            raise ProvisioningError("CRL written, but not every broker reloaded it: " + "; ".join(failures))
        return lines


def reload_broker(out: Path, command: str | None) -> str:
    """Make the broker of ``out`` re-read its CRL (and certificates): the reload command, else SIGHUP to its pid file.

    Mosquitto re-reads ``crlfile`` on SIGHUP (tests/provisioning/test_broker_acl.py proves it against the real
    broker), so new connections are checked against the new list without dropping anybody.
    """
    if command:
        r = subprocess.run(shlex.split(command), capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise ProvisioningError(f"reload command {command!r} exited with {r.returncode}: {r.stderr.strip()[:200]}")
        return f"reloaded ({command})"
    pid_file = out / "run" / "mosquitto.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        raise ProvisioningError(f"no running broker found ({pid_file} missing): start it, or pass --broker-reload-command") from None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        comm = ""
    if comm != "mosquitto":
        # a stale pid file: the number may belong to another process by now
        raise ProvisioningError(f"the pid in {pid_file} ({pid}) is not a running mosquitto: start the broker")
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise ProvisioningError(f"cannot signal the broker (pid {pid}): {exc.strerror}") from exc
    return f"broker pid {pid} reloaded (SIGHUP)"


ACL = """\
# Generated by `mobile-office provision broker-config`. Identities are certificate CNs.
# Every van: only its own uplink and status, only its own downlink, and the broadcast.
pattern write mo/v1/%u/up/#
pattern readwrite mo/v1/%u/status
pattern read mo/v1/%u/down/#
pattern read mo/v1/all/down/#
"""


def hq_acl(worker: str) -> str:
    return (f"\nuser {worker}\n"
            "topic read mo/v1/+/up/#\ntopic read $share/hq/mo/v1/+/up/#\ntopic read mo/v1/+/status\n"
            "topic write mo/v1/+/down/#\ntopic write mo/v1/all/down/#\n")


def broker_config(ca: CA, out: Path, port: int, host: str, server_names: list[str], workers: list[str], run_as: str = "mosquitto",
                  max_packet: int = MAX_PACKET, crl_days: int = CRL_DAYS, reload_command: str | None = None) -> Path:
    """A directory that `mosquitto -c out/mosquitto.conf` runs as is.

    Started as root, Mosquitto drops to ``run_as`` before it reads its key: the
    key, the persistence directory and the pid file's directory are given to
    that user.  The directory is recorded so that ``revoke`` and
    ``refresh-crl`` bring it the new CRL and reload the broker.
    """
    out.mkdir(parents=True, exist_ok=True)
    key, cert = ca.issue(server_names[0], out, "server", server_names=server_names)
    (out / "ca.crt").write_bytes(ca.cert_path.read_bytes())
    write_atomic(out / "crl.pem", ca.write_crl(crl_days).read_bytes())
    (out / "acl").write_text(ACL + "".join(hq_acl(w) for w in workers))
    (out / "data").mkdir(exist_ok=True)
    (out / "run").mkdir(exist_ok=True)
    if os.geteuid() == 0 and run_as != "root":
        try:
            pw = pwd.getpwnam(run_as)
        except KeyError as exc:
            raise ProvisioningError(f"no system user {run_as!r} to run the broker as (install mosquitto, or pass --run-as)") from exc
        for p in (key, out / "data", out / "run"):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    conf = out / "mosquitto.conf"
    conf.write_text(
        "# Generated by `mobile-office provision broker-config`: mTLS, identity from the certificate, per-van ACL, CRL.\n"
        f"user {run_as}\nper_listener_settings false\nallow_anonymous false\n"
        f"acl_file {out / 'acl'}\npersistence true\npersistence_location {out / 'data'}/\n"
        f"pid_file {out / 'run' / 'mosquitto.pid'}\n"
        # Anything far above the largest envelope (64 KiB batches, the catalogue) is hostile: cut it off.
        f"max_packet_size {max_packet}\n"
        f"listener {port} {host}\nprotocol mqtt\n"
        f"cafile {out / 'ca.crt'}\ncertfile {cert}\nkeyfile {key}\ncrlfile {out / 'crl.pem'}\n"
        # The client id is the certificate's identity: a van cannot take hq-1's or another van's session.
        "require_certificate true\nuse_identity_as_username true\nuse_username_as_clientid true\ntls_version tlsv1.2\n"
    )
    ca._remember_broker(out, reload_command)
    return conf
