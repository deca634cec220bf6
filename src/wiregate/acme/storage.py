"""Certificates, their keys and the ACME account on disk, under the home config directory.

    <storage_dir>/account.json              the account URL at the CA (not secret)
    <storage_dir>/<id>/fullchain.pem        leaf + chain, as the CA sent it
    <storage_dir>/<id>/privkey.pem          its key (0600; refused when group/world readable)
    <storage_dir>/<id>/meta.json            names, validity, the last error

`<id>` is the first name (`*.` written `_.`) plus a short hash of the whole name set, so a changed set of names is
a new certificate and never overwrites another's. A new certificate replaces the old files atomically (key first,
then the chain), and only after it was obtained: a failed renewal leaves them as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from wiregate.acme.errors import AcmeError
from wiregate.config.model import check_secret_mode, write_secret, write_text
from wiregate.errors import ConfigError

MAX_PEM = 1 << 16  # a chain of a few certificates; anything larger is not ours
MAX_META = 1 << 16
_SAFE = re.compile(r"[^a-z0-9.-]")


def cert_id(names: tuple[str, ...]) -> str:
    """The directory name for a set of names (stable, filesystem safe, distinct per set)."""
    digest = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:8]
    return f"{_SAFE.sub('_', names[0].replace('*', '_'))}-{digest}"


def new_private_key(key_type: str) -> bytes:
    """A fresh certificate key as PKCS#8 PEM: `ec256` (P-256) or `rsa2048`."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if key_type == "rsa2048":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif key_type == "ec256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise AcmeError(f"key_type: {key_type!r}: must be ec256 or rsa2048")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def read_bounded(path: Path, limit: int = MAX_PEM) -> bytes:
    """A small file's bytes; OSError when missing, AcmeError when larger than `limit`."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise AcmeError(f"{path}: larger than {limit} bytes")
    return data


@dataclass(frozen=True, slots=True)
class Stored:
    """A certificate found on disk."""

    names: tuple[str, ...]
    chain_pem: bytes
    not_before: float
    not_after: float
    cert_file: Path
    key_file: Path


def validity(chain_pem: bytes) -> tuple[float, float]:
    """(notBefore, notAfter) of the leaf (the first certificate) as UNIX seconds."""
    leaf = x509.load_pem_x509_certificate(chain_pem)
    return leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()


class Store:
    """The storage directory (created 0700)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def dir(self, names: tuple[str, ...]) -> Path:
        return self.root / cert_id(names)

    def paths(self, names: tuple[str, ...]) -> tuple[Path, Path]:
        """(fullchain.pem, privkey.pem) of a set of names."""
        d = self.dir(names)
        return d / "fullchain.pem", d / "privkey.pem"

    def load(self, names: tuple[str, ...]) -> Stored | None:
        """The stored certificate for exactly these names, or None (missing or unreadable: a new one is ordered).
        A key file that group/others can read is refused (AcmeError), never used."""
        cert_file, key_file = self.paths(names)
        if not cert_file.exists() or not key_file.exists():
            return None
        try:
            check_secret_mode(key_file, "acme certificate key")
        except ConfigError as exc:
            raise AcmeError(str(exc)) from None
        try:
            chain = read_bounded(cert_file)
            nb, na = validity(chain)
            leaf = x509.load_pem_x509_certificate(chain)
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            have = set(san.get_values_for_type(x509.DNSName))
            key = serialization.load_pem_private_key(read_bounded(key_file), password=None)
        except (OSError, ValueError, TypeError, AcmeError, x509.ExtensionNotFound):
            return None
        if not set(names) <= have or _spki(key.public_key()) != _spki(leaf.public_key()):
            # a stop between writing the new key and its chain: the pending order (same key) is fetched again
            return None
        return Stored(names, chain, nb, na, cert_file, key_file)

    def save(self, names: tuple[str, ...], chain_pem: bytes, key_pem: bytes) -> Stored:
        """Store a newly obtained certificate and its key (key 0600), replacing the previous pair."""
        cert_file, key_file = self.paths(names)
        cert_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        nb, na = validity(chain_pem)
        write_secret(key_file, key_pem.decode("ascii"))
        write_text(cert_file, chain_pem.decode("ascii"))
        self.save_meta(names, {"names": list(names), "not_before": nb, "not_after": na, "last_error": None})
        return Stored(names, chain_pem, nb, na, cert_file, key_file)

    def save_meta(self, names: tuple[str, ...], meta: dict) -> None:
        d = self.dir(names)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_text(d / "meta.json", json.dumps(meta, sort_keys=True) + "\n")

    def save_pending(self, names: tuple[str, ...], url: str, key_pem: bytes) -> None:
        """Remember an order in progress and its certificate key (0600), so a restart continues it."""
        d = self.dir(names)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret(d / "pending-key.pem", key_pem.decode("ascii"))
        write_text(d / "pending.json", json.dumps({"names": list(names), "order": url}) + "\n")

    def load_pending(self, names: tuple[str, ...]) -> tuple[str, bytes] | None:
        """(order URL, key PEM) of an order an earlier run left unfinished, or None."""
        d = self.dir(names)
        try:
            doc = json.loads(read_bounded(d / "pending.json", MAX_META))
            check_secret_mode(d / "pending-key.pem", "acme pending key")
            key = read_bounded(d / "pending-key.pem")
            serialization.load_pem_private_key(key, password=None)
        except (OSError, ValueError, TypeError, AcmeError, ConfigError):
            return None
        if not isinstance(doc, dict) or doc.get("names") != list(names) or not isinstance(doc.get("order"), str):
            return None
        return doc["order"], key

    def clear_pending(self, names: tuple[str, ...]) -> None:
        d = self.dir(names)
        (d / "pending.json").unlink(missing_ok=True)
        (d / "pending-key.pem").unlink(missing_ok=True)

    def account_url(self, directory: str) -> str | None:
        """The account URL registered at `directory` (None: none yet, or it was made at another CA)."""
        try:
            doc = json.loads(read_bounded(self.root / "account.json", MAX_META))
        except (OSError, ValueError, AcmeError):
            return None
        if not isinstance(doc, dict) or doc.get("directory") != directory:
            return None
        url = doc.get("url")
        return url if isinstance(url, str) else None

    def forget_account(self) -> None:
        """The CA no longer knows the stored account: register again next time."""
        (self.root / "account.json").unlink(missing_ok=True)

    def save_account_url(self, directory: str, url: str) -> None:
        self.ensure()
        write_text(self.root / "account.json", json.dumps({"directory": directory, "url": url}) + "\n")


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_or_create_account_key(path: Path) -> bytes:
    """The ACME account key (PEM, P-256): created 0600 when missing, refused when group/world readable."""
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        write_secret(path, pem.decode("ascii"))
        os.chmod(path, 0o600)
        return pem
    try:
        check_secret_mode(path, "acme.account_key_file")
    except ConfigError as exc:
        raise AcmeError(str(exc)) from None
    try:
        pem = read_bounded(path, 16384)
        serialization.load_pem_private_key(pem, password=None)
    except (OSError, ValueError, TypeError):  # never echo the content
        raise AcmeError(f"acme.account_key_file: {str(path)!r}: does not hold a PEM private key") from None
    return pem
