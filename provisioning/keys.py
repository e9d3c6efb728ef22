"""HQ keys and node enrolment bundles.

HQ directory::

    hq.json                 created, public keys; after a rotation the sealing keys' ids and files
    hq_seal.key             X25519 private key (opens records sealed by nodes), 0600
    hq_seal-<kid>.key       a later sealing key ('provision rotate-hq-seal'); the older ones stay to open older records
    hq_sign.key             Ed25519 private key (signs acks and downlink), 0600
    nodes/<node_id>.json    each enrolled node's public signing key, revoked flag
    https/hq.crt/.key       HQ's HTTPS certificate ('provision hq-cert')

Node bundle (copied to the van's SD card; ``mobile-office node --bundle``)::

    node.json               node id, HQ public keys, config settings
    node_sign.key           node's Ed25519 private key, 0600
    keyslots.json           the node key wrapped per administrator (scrypt) and to HQ; the van imports
                            the administrators' slots into its database at first start and then
                            rewrites this file with HQ's recovery slot only (edge/cardkeys.py)
    mqtt_client.crt/.key    the van's MQTT identity (CN = node id), ca.crt HQ's CA
    ui.crt/.key             the van UI's HTTPS certificate for its Wi-Fi names (if asked for)
    hq_seal.json            HQ's current sealing key when it rotated after enrolment (written by the van, see edge/rotation.py)

The node key itself is generated here, wrapped, and forgotten: it is never
written anywhere in plaintext.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from sync import crypto

from .ca import CA
from .errors import ProvisioningError
from .pem import PASSPHRASE_ENV, load_private

HQ_SEAL_FILE = "hq_seal.json"  # in a bundle; same name in edge/rotation.py
NODE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
ROLES = ("van_admin", "case_admin", "supervisor")


def b64e(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def b64d(s: str) -> bytes:
    return base64.b64decode(s.encode("ascii"))


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _pem(key: Ed25519PrivateKey | X25519PrivateKey, passphrase: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def read_passphrase(path: Path | None) -> bytes | None:
    """HQ's key passphrase: from a file (first line), else the MO_HQ_PASSPHRASE environment variable, else none."""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ProvisioningError(f"passphrase file unreadable: {path} ({exc.strerror})") from exc
        if not text or not text[0]:
            raise ProvisioningError(f"passphrase file is empty: {path}")
        return text[0].encode()
    env = os.environ.get(PASSPHRASE_ENV)
    return env.encode() if env else None


def _raw_pub(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass
class HQKeys:
    directory: Path
    seal: X25519PrivateKey
    sign: Ed25519PrivateKey
    passphrase: bytes | None = None  # HQ's private keys (and the CA's) are encrypted with it when set
    older_seals: list[X25519PrivateKey] = field(default_factory=list)  # before rotations: they open older records

    @property
    def seal_ring(self) -> list[X25519PrivateKey]:
        """Every sealing key HQ holds, the current one first (sync/crypto.py picks the one a wrap names)."""
        return [self.seal, *self.older_seals]

    @property
    def seal_public(self) -> X25519PublicKey:
        return self.seal.public_key()

    @property
    def sign_public(self) -> Ed25519PublicKey:
        return self.sign.public_key()

    def node_keys(self) -> dict[str, Ed25519PublicKey]:
        """Signing keys of enrolled, unrevoked nodes."""
        out = {}
        for p in sorted((self.directory / "nodes").glob("*.json")):
            doc = json.loads(p.read_text(encoding="utf-8"))
            if not doc.get("revoked"):
                out[doc["node_id"]] = Ed25519PublicKey.from_public_bytes(b64d(doc["sign_public"]))
        return out

    def node_seal_keys(self) -> dict[str, X25519PublicKey]:
        """Sealing keys of enrolled, unrevoked nodes (downlink with personal data is sealed to them)."""
        out = {}
        for p in sorted((self.directory / "nodes").glob("*.json")):
            doc = json.loads(p.read_text(encoding="utf-8"))
            if not doc.get("revoked") and doc.get("seal_public"):
                out[doc["node_id"]] = X25519PublicKey.from_public_bytes(b64d(doc["seal_public"]))
        return out


def init_hq(directory: Path, passphrase: bytes | None = None) -> HQKeys:
    """Create HQ's keys; refuses to overwrite an existing HQ.  With a passphrase every private key is encrypted on disk."""
    if (directory / "hq.json").exists():
        raise ProvisioningError(f"HQ keys already exist in {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "nodes").mkdir(exist_ok=True)
    seal, sign = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    _write_private(directory / "hq_seal.key", _pem(seal, passphrase))
    _write_private(directory / "hq_sign.key", _pem(sign, passphrase))
    _write_json(directory / "hq.json", {"created": time.time(), "seal_public": b64e(_raw_pub(seal.public_key())), "sign_public": b64e(_raw_pub(sign.public_key()))})
    CA.create(directory / "ca", passphrase=passphrase)
    return HQKeys(directory, seal, sign, passphrase)


def load_hq(directory: Path, passphrase: bytes | None = None) -> HQKeys:
    if not (directory / "hq.json").exists():
        raise ProvisioningError(f"no HQ keys in {directory}: run 'mobile-office provision init-hq --hq-dir {directory}' first")
    doc = json.loads((directory / "hq.json").read_text(encoding="utf-8"))
    files = [str(k["file"]) for k in doc.get("seal_keys", [])] or ["hq_seal.key"]  # the last one is current
    seals = [load_private(directory / f, passphrase) for f in reversed(files)]
    return HQKeys(directory, seals[0], load_private(directory / "hq_sign.key", passphrase), passphrase, seals[1:])


def rotate_hq_seal(hq: HQKeys) -> tuple[str, X25519PublicKey]:
    """A new sealing key for HQ: new records are sealed to it once the vans have it; the old keys stay to open older ones.

    Returns the new key's id (hex) and public key; the vans get them in the signed ``hq_seal_key`` command.
    """
    doc = json.loads((hq.directory / "hq.json").read_text(encoding="utf-8"))
    keys = doc.get("seal_keys") or [{"kid": crypto.key_id(hq.seal_ring[-1].public_key()).hex(), "file": "hq_seal.key",
                                     "public": doc["seal_public"], "created": doc.get("created")}]
    new = X25519PrivateKey.generate()
    kid = crypto.key_id(new.public_key()).hex()
    name = f"hq_seal-{kid}.key"
    _write_private(hq.directory / name, _pem(new, hq.passphrase))  # fsynced before hq.json names it
    keys.append({"kid": kid, "file": name, "public": b64e(_raw_pub(new.public_key())), "created": time.time()})
    doc.update({"seal_keys": keys, "seal_public": keys[-1]["public"]})
    _write_json(hq.directory / "hq.json", doc)
    hq.older_seals.insert(0, hq.seal)
    hq.seal = new
    return kid, new.public_key()


def hq_seal_command_args(hq: HQKeys) -> dict[str, Any]:
    """Arguments of the ``hq_seal_key`` command: HQ's current sealing public key and its id."""
    return {"kid": crypto.key_id(hq.seal_public).hex(), "public": b64e(_raw_pub(hq.seal_public))}


@dataclass
class AdminAccount:
    username: str
    password: str
    role: str = "van_admin"
    must_change: bool = False  # a printed one-time password: changed at the first login


@dataclass
class Keyslot:
    kind: str  # "admin" or "hq"
    wrapped: bytes
    username: str | None = None
    role: str | None = None
    salt: bytes = b""
    n: int = crypto.SCRYPT_N
    v: int = 1  # crypto.SLOT_VERSION of the associated data; bundles older than the role binding have none
    must_change: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "username": self.username, "role": self.role, "salt": b64e(self.salt), "n": self.n, "wrapped": b64e(self.wrapped),
                "v": self.v, "must_change": self.must_change}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Keyslot:
        # a bundle written before "n" was recorded used 2^15
        return cls(d["kind"], b64d(d["wrapped"]), d.get("username"), d.get("role"), b64d(d.get("salt", "")), int(d.get("n", 2**15)),
                   int(d.get("v", 1)), bool(d.get("must_change", False)))

    def config(self) -> dict[str, Any]:
        """The slot as the node's configuration carries it (edge/config.py ``keyslots``)."""
        return {"kind": self.kind, "username": self.username, "role": self.role, "salt": self.salt, "n": self.n, "wrapped": self.wrapped,
                "v": self.v, "must_change": self.must_change}


def keyslot_context(node_id: str, kind: str, username: str | None) -> bytes:
    return f"keyslot|{node_id}|{kind}|{username or ''}".encode()


def node_seal_context(node_id: str) -> bytes:
    return f"node-seal|{node_id}".encode()


def make_admin_slot(node_id: str, node_key: bytes, account: AdminAccount, n: int = crypto.SCRYPT_N) -> Keyslot:
    salt = os.urandom(16)
    kek = crypto.kek_from_password(account.password, salt, n)
    wrapped = crypto.wrap_with_key(node_key, kek, crypto.admin_slot_context(node_id, account.username, account.role))
    return Keyslot("admin", wrapped, account.username, account.role, salt, n, crypto.SLOT_VERSION, account.must_change)


@dataclass
class NodeBundle:
    directory: Path
    node_id: str
    sign: Ed25519PrivateKey
    hq_seal_public: X25519PublicKey
    hq_sign_public: Ed25519PublicKey
    keyslots: list[Keyslot]
    settings: dict[str, Any] = field(default_factory=dict)
    node_seal_wrapped: bytes | None = None  # the node's X25519 private key, wrapped under the node key


def default_ui_names(node_id: str) -> list[str]:
    """Names the van's tablets reach its UI by: mDNS name, the hotspot's address (NetworkManager's shared mode), loopback."""
    return [f"{node_id}.local", "10.42.0.1", "localhost", "127.0.0.1"]


def add_node(hq: HQKeys, node_id: str, out_dir: Path, admins: list[AdminAccount], settings: dict[str, Any] | None = None,
             ui_names: list[str] | None = None) -> NodeBundle:
    """Write a van's enrolment bundle.  With ``ui_names`` it also holds the UI's HTTPS certificate for those names."""
    if not NODE_ID_RE.match(node_id) or node_id.startswith("hq-") or node_id == "all":
        raise ProvisioningError("node id: 1-32 characters, lowercase Latin letters, digits and '-', e.g. van-01 (not 'all', not 'hq-...')")
    record = hq.directory / "nodes" / f"{node_id}.json"
    if record.exists():
        raise ProvisioningError(f"node {node_id} is already enrolled at this HQ")
    if not admins:
        raise ProvisioningError("a node needs at least one administrator")
    for a in admins:
        if a.role not in ROLES:
            raise ProvisioningError(f"unknown role {a.role!r}; one of {', '.join(ROLES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    sign = Ed25519PrivateKey.generate()
    node_key = crypto.random_key()
    slots = [make_admin_slot(node_id, node_key, a) for a in admins]
    slots.append(Keyslot("hq", crypto.wrap_to_public(node_key, hq.seal_public, keyslot_context(node_id, "hq", None))))
    # The node's sealing key (HQ seals home-visit assignments to it) is kept wrapped under the node key:
    # it opens only after an administrator logs in, like the records.
    seal = X25519PrivateKey.generate()
    seal_raw = seal.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    seal_wrapped = crypto.wrap_with_key(seal_raw, node_key, node_seal_context(node_id))
    del node_key, seal_raw
    _write_private(out_dir / "node_sign.key", _pem(sign))
    if (hq.directory / "ca" / "ca.crt").exists():
        # the van's MQTT identity: a client certificate whose CN is its node id (the broker's ACL keys on it)
        ca = CA.load(hq.directory / "ca", hq.passphrase)
        ca.issue(node_id, out_dir, "mqtt_client")
        (out_dir / "ca.crt").write_bytes(ca.cert_path.read_bytes())
        if ui_names:
            # The local UI's server certificate: tablets trust HQ's CA once and then verify every van.
            ca.issue(node_id, out_dir, "ui", server_names=ui_names)  # CN = node id: revoked with the van
    _write_json(out_dir / "keyslots.json", [s.to_json() for s in slots])
    _write_json(
        out_dir / "node.json",
        {
            "node_id": node_id,
            "hq_seal_public": b64e(_raw_pub(hq.seal_public)),
            "hq_sign_public": b64e(_raw_pub(hq.sign_public)),
            "node_seal_wrapped": b64e(seal_wrapped),
            "settings": settings or {},
        },
    )
    _write_json(record, {"node_id": node_id, "sign_public": b64e(_raw_pub(sign.public_key())),
                         "seal_public": b64e(_raw_pub(seal.public_key())), "enrolled": time.time(), "revoked": False})
    return load_bundle(out_dir)


def load_bundle(directory: Path) -> NodeBundle:
    try:
        doc = json.loads((directory / "node.json").read_text(encoding="utf-8"))
        slots = [Keyslot.from_json(d) for d in json.loads((directory / "keyslots.json").read_text(encoding="utf-8"))]
    except FileNotFoundError as exc:
        raise ProvisioningError(f"not an enrolment bundle: {directory} ({exc.filename} missing)") from exc
    except (ValueError, KeyError) as exc:
        raise ProvisioningError(f"enrolment bundle {directory} is damaged: {exc}") from exc
    hq_seal = doc["hq_seal_public"]
    if (directory / HQ_SEAL_FILE).exists():  # HQ's sealing key rotated after enrolment: the van keeps the newest it was sent
        hq_seal = json.loads((directory / HQ_SEAL_FILE).read_text(encoding="utf-8"))["public"]
    return NodeBundle(
        directory,
        doc["node_id"],
        load_private(directory / "node_sign.key"),
        X25519PublicKey.from_public_bytes(b64d(hq_seal)),
        Ed25519PublicKey.from_public_bytes(b64d(doc["hq_sign_public"])),
        slots,
        doc.get("settings", {}),
        b64d(doc["node_seal_wrapped"]) if doc.get("node_seal_wrapped") else None,
    )


def revoke_node(hq: HQKeys, node_id: str) -> int:
    """Refuse a lost van everywhere: HQ stops accepting its signature, the broker its certificate."""
    record = hq.directory / "nodes" / f"{node_id}.json"
    if not record.exists():
        raise ProvisioningError(f"no node {node_id} is enrolled at this HQ")
    doc = json.loads(record.read_text(encoding="utf-8"))
    doc["revoked"] = True
    doc["revoked_at"] = time.time()
    _write_json(record, doc)
    return CA.load(hq.directory / "ca", hq.passphrase).revoke(node_id) if (hq.directory / "ca" / "ca.key").exists() else 0


def list_nodes(hq: HQKeys) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((hq.directory / "nodes").glob("*.json"))]


def one_time_password() -> str:
    return secrets.token_urlsafe(9)
