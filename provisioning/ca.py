"""HQ's certificate authority: the broker's server certificate, client certificates, the CRL.

Identities are the certificates' common names: a van's node id, or an HQ
worker's name (``hq-...``).  Mosquitto takes the CN as the username
(``use_identity_as_username``), and the ACL gives each identity its topics.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import ProvisioningError
from .pem import load_private

CA_DAYS = 3650
CERT_DAYS = 825


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


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
        _write_private(directory / "ca.key", _key_pem(key, passphrase))
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
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._record(common_name, cert.serial_number)
        return key_path, cert_path

    def _record(self, cn: str, serial: int) -> None:
        issued_path = self.directory / "issued.json"
        issued = json.loads(issued_path.read_text()) if issued_path.exists() else {}
        issued.setdefault(cn, []).append(serial)
        issued_path.write_text(json.dumps(issued, indent=2) + "\n")

    def revoke(self, common_name: str) -> int:
        """Revoke every certificate issued to this identity; returns how many."""
        issued_path = self.directory / "issued.json"
        issued = json.loads(issued_path.read_text()) if issued_path.exists() else {}
        serials = issued.get(common_name, [])
        revoked = set(json.loads((self.directory / "revoked.json").read_text()))
        revoked.update(serials)
        (self.directory / "revoked.json").write_text(json.dumps(sorted(revoked)) + "\n")
        self.write_crl()
        return len(serials)

    def write_crl(self) -> Path:
        revoked = json.loads((self.directory / "revoked.json").read_text())
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(_now() - dt.timedelta(minutes=5)).next_update(_now() + dt.timedelta(days=30)))
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(_now() - dt.timedelta(minutes=1)).build()
            )
        crl = builder.sign(self.key, hashes.SHA256())
        path = self.directory / "crl.pem"
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return path


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


def broker_config(ca: CA, out: Path, port: int, host: str, server_names: list[str], workers: list[str], run_as: str = "mosquitto") -> Path:
    """A directory that `mosquitto -c out/mosquitto.conf` runs as is.

    Started as root, Mosquitto drops to ``run_as`` before it reads its key: the
    key and the persistence directory are given to that user.
    """
    out.mkdir(parents=True, exist_ok=True)
    key, cert = ca.issue(server_names[0], out, "server", server_names=server_names)
    (out / "ca.crt").write_bytes(ca.cert_path.read_bytes())
    (out / "crl.pem").write_bytes(ca.write_crl().read_bytes())
    (out / "acl").write_text(ACL + "".join(hq_acl(w) for w in workers))
    (out / "data").mkdir(exist_ok=True)
    if os.geteuid() == 0 and run_as != "root":
        try:
            pw = pwd.getpwnam(run_as)
        except KeyError as exc:
            raise ProvisioningError(f"no system user {run_as!r} to run the broker as (install mosquitto, or pass --run-as)") from exc
        for p in (key, out / "data"):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    conf = out / "mosquitto.conf"
    conf.write_text(
        "# Generated by `mobile-office provision broker-config`: mTLS, identity from the certificate, per-van ACL, CRL.\n"
        f"user {run_as}\nper_listener_settings false\nallow_anonymous false\n"
        f"acl_file {out / 'acl'}\npersistence true\npersistence_location {out / 'data'}/\n"
        f"listener {port} {host}\nprotocol mqtt\n"
        f"cafile {out / 'ca.crt'}\ncertfile {cert}\nkeyfile {key}\ncrlfile {out / 'crl.pem'}\n"
        "require_certificate true\nuse_identity_as_username true\ntls_version tlsv1.2\n"
    )
    return conf
