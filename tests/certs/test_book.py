"""The challenge book the ingress reads: RFC 8737 certificate, exact-ALPN match, HTTP-01 tokens."""

import hashlib
import ssl

from cryptography import x509

from wiregate.acme.book import (
    ACME_TLS_ALPN,
    ID_PE_ACME_IDENTIFIER,
    Book,
    tls_alpn_certificate,
)


def test_tls_alpn_certificate_carries_the_acme_identifier():
    cert_pem, _ = tls_alpn_certificate("a.example", "tok.thumb")
    cert = x509.load_pem_x509_certificate(cert_pem)
    ext = cert.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
    assert ext.critical
    assert ext.value.value == b"\x04\x20" + hashlib.sha256(b"tok.thumb").digest()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.example"]


def test_only_an_exact_acme_alpn_for_a_pending_name_gets_the_challenge():
    b = Book()
    b.add_tls_alpn("a.example", "tok.thumb")
    assert isinstance(b.alpn_context("a.example", (ACME_TLS_ALPN,)), ssl.SSLContext)
    assert b.alpn_context("a.example", ("h2", ACME_TLS_ALPN)) is None  # normal clients are never diverted
    assert b.alpn_context("a.example", ()) is None
    assert b.alpn_context("b.example", (ACME_TLS_ALPN,)) is None
    b.remove_tls_alpn("a.example")
    assert b.alpn_context("a.example", (ACME_TLS_ALPN,)) is None


def test_http01_answers_pending_tokens_only():
    b = Book()
    b.add_http01("tok", "tok.thumb")
    assert b.http01("/.well-known/acme-challenge/tok") == b"tok.thumb"
    assert b.http01("/.well-known/acme-challenge/other") is None
    assert b.http01("/.well-known/acme-challenge/") is None
    assert b.http01("/tok") is None
    b.remove_http01("tok")
    assert b.http01("/.well-known/acme-challenge/tok") is None
