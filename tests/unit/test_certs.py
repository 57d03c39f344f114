"""The SIP front's TLS certificate: a self-signed pair made once and kept private, or the
configured pair, checked before Kamailio starts (``kamailio -c`` reads neither)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hitl_sip.config import Config, load_config
from hitl_sip.errors import ConfigError
from hitl_sip.front.certs import tls_pair


def config(**overrides: str) -> Config:
    return load_config(None, env={}, overrides={"sip.host": "0.0.0.0",
                                                "sip.transports": "udp,tls", **overrides})


def names_in(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ({str(a) for a in san.get_values_for_type(x509.IPAddress)}
            | set(san.get_values_for_type(x509.DNSName)))


def write_pair(directory: Path, *, days: int = 365) -> tuple[Path, Path]:
    """A certificate and key made here, valid for ``days``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sip.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("203.0.113.7"))]), critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "c.pem", directory / "k.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_a_self_signed_pair_is_made_private_and_names_the_public_address(tmp_path: Path) -> None:
    directory = tmp_path / "front" / "tls"
    pair = tls_pair(config(), directory, "203.0.113.7")
    assert pair.self_signed and pair.certificate.parent == directory
    assert directory.stat().st_mode & 0o777 == 0o700
    assert pair.private_key.stat().st_mode & 0o777 == 0o600
    assert names_in(pair.certificate) == {"203.0.113.7"}
    key = serialization.load_pem_private_key(pair.private_key.read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(pair.certificate.read_bytes())
    assert key.public_key() == cert.public_key()
    assert cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(
        days=365)


def test_the_self_signed_pair_is_reused_until_the_addresses_change(tmp_path: Path) -> None:
    first = tls_pair(config(), tmp_path, "sip.example.com")
    made = (first.certificate.read_bytes(), first.private_key.read_bytes())
    again = tls_pair(config(), tmp_path, "sip.example.com")
    assert (again.certificate.read_bytes(), again.private_key.read_bytes()) == made
    moved = tls_pair(config(**{"sip.host": "10.0.0.5"}), tmp_path, "sip.example.com")
    assert names_in(moved.certificate) == {"sip.example.com", "10.0.0.5"}
    assert moved.private_key.read_bytes() != made[1]
    assert names_in(tls_pair(config(), tmp_path / "bare", None).certificate) == {
        "localhost", "127.0.0.1"}


def test_a_self_signed_pair_that_expires_soon_or_is_damaged_is_made_again(
        tmp_path: Path) -> None:
    pair = tls_pair(config(), tmp_path, "203.0.113.7")
    cert, key = write_pair(tmp_path / "other", days=10)  # names 203.0.113.7 too
    pair.certificate.write_bytes(cert.read_bytes())
    pair.private_key.write_bytes(key.read_bytes())
    renewed = tls_pair(config(), tmp_path, "203.0.113.7")
    assert renewed.certificate.read_bytes() != cert.read_bytes()
    renewed.private_key.write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n")
    repaired = tls_pair(config(), tmp_path, "203.0.113.7")
    assert serialization.load_pem_private_key(repaired.private_key.read_bytes(), password=None)


def test_a_configured_pair_is_used_as_it_is(tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path)
    c = config(**{"sip.tls_certificate": str(cert), "sip.tls_private_key": str(key)})
    pair = tls_pair(c, tmp_path / "tls", "203.0.113.7")
    assert (pair.certificate, pair.private_key, pair.self_signed) == (cert, key, False)
    assert not (tmp_path / "tls").exists()


@pytest.mark.parametrize("broken", ["certificate", "key", "other-key", "expired"])
def test_a_configured_pair_that_cannot_serve_names_its_key(tmp_path: Path, broken: str) -> None:
    cert, key = write_pair(tmp_path / "a", days=-1 if broken == "expired" else 365)
    _, other_key = write_pair(tmp_path / "b")
    if broken == "certificate":
        cert.write_text("not a certificate\n")
    elif broken == "key":
        key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    elif broken == "other-key":
        key = other_key
    c = config(**{"sip.tls_certificate": str(cert), "sip.tls_private_key": str(key)})
    with pytest.raises(ConfigError) as e:
        tls_pair(c, tmp_path / "tls", None)
    expected = "sip.tls_certificate" if broken in ("certificate", "expired") else (
        "sip.tls_private_key")
    assert e.value.key == expected, e.value
