"""Storage of certificates and the account key: 0600 keys, refusal of readable keys, atomic replacement."""

import datetime
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wiregate.acme.errors import AcmeError
from wiregate.acme.storage import (
    Store,
    cert_id,
    load_or_create_account_key,
    new_private_key,
)


def _cert(names, key_pem, days=90):
    key = serialization.load_pem_private_key(key_pem, None)
    now = datetime.datetime.now(datetime.UTC)
    subj = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    c = (x509.CertificateBuilder().subject_name(subj).issuer_name(subj).public_key(key.public_key())
         .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
         .sign(key, hashes.SHA256()))
    return c.public_bytes(serialization.Encoding.PEM)


def test_account_key_is_created_0600_and_reused(tmp_path):
    p = tmp_path / "acme-account.key"
    pem = load_or_create_account_key(p)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert load_or_create_account_key(p) == pem
    assert isinstance(serialization.load_pem_private_key(pem, None), ec.EllipticCurvePrivateKey)


def test_group_readable_account_key_is_refused_without_showing_it(tmp_path):
    p = tmp_path / "acme-account.key"
    pem = load_or_create_account_key(p)
    os.chmod(p, 0o640)
    with pytest.raises(AcmeError) as e:
        load_or_create_account_key(p)
    assert "0640" in str(e.value) and "chmod 600" in str(e.value)
    assert pem.decode().splitlines()[1] not in str(e.value)


def test_key_types():
    assert isinstance(serialization.load_pem_private_key(new_private_key("ec256"), None), ec.EllipticCurvePrivateKey)
    assert serialization.load_pem_private_key(new_private_key("rsa2048"), None).key_size == 2048


def test_saved_certificate_loads_back_with_its_key_0600(tmp_path):
    store = Store(tmp_path / "acme")
    names = ("a.example", "www.a.example")
    key = new_private_key("ec256")
    chain = _cert(names, key)
    s = store.save(names, chain, key)
    assert stat.S_IMODE(s.key_file.stat().st_mode) == 0o600
    got = store.load(names)
    assert got is not None and got.chain_pem == chain and got.not_after > got.not_before
    assert store.load(("other.example",)) is None
    assert cert_id(names) != cert_id(("a.example",))
    os.chmod(s.key_file, 0o644)
    with pytest.raises(AcmeError):
        store.load(names)


def test_a_key_that_does_not_match_its_chain_is_not_used(tmp_path):
    store = Store(tmp_path / "acme")
    names = ("a.example",)
    key = new_private_key("ec256")
    s = store.save(names, _cert(names, key), key)
    s.key_file.write_bytes(new_private_key("ec256"))  # as if stopped between writing the new key and its chain
    assert store.load(names) is None


def test_pending_order_is_kept_with_its_key_0600(tmp_path):
    store = Store(tmp_path / "acme")
    names = ("a.example",)
    key = new_private_key("ec256")
    store.save_pending(names, "https://ca/order/1", key)
    assert store.load_pending(names) == ("https://ca/order/1", key)
    assert stat.S_IMODE((store.dir(names) / "pending-key.pem").stat().st_mode) == 0o600
    assert store.load_pending(("b.example",)) is None
    store.clear_pending(names)
    assert store.load_pending(names) is None


def test_account_url_is_per_directory(tmp_path):
    store = Store(tmp_path / "acme")
    store.save_account_url("https://ca-a/dir", "https://ca-a/acct/1")
    assert store.account_url("https://ca-a/dir") == "https://ca-a/acct/1"
    assert store.account_url("https://ca-b/dir") is None
    store.forget_account()
    assert store.account_url("https://ca-a/dir") is None
