"""The SIP front's TLS certificate: the configured pair, or a self-signed one made once.

``sip.tls_certificate`` / ``sip.tls_private_key`` name PEM files (a carrier may check the
certificate: use one from a public CA for the host name the trunk dials). Both empty: a
self-signed pair under ``<data_dir>/front/tls/`` (directory 0700, key 0600), made at the
first start with TLS on and reused afterwards; it is made again when it no longer loads,
expires within :data:`RENEW_BEFORE`, or does not name the front's current addresses. Either
way the pair is checked here, before Kamailio starts: a certificate that does not load or a
key that does not belong to it is a :class:`~hitl_sip.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from hitl_sip.config import Config
from hitl_sip.errors import ConfigError

log = logging.getLogger(__name__)

CERT_FILE = "front.crt"
KEY_FILE = "front.key.pem"
VALIDITY = datetime.timedelta(days=730)
RENEW_BEFORE = datetime.timedelta(days=30)
COMMON_NAME = "hitl-sip SIP front"


@dataclass(frozen=True)
class TlsPair:
    certificate: Path
    private_key: Path
    self_signed: bool  # made here, not configured


def tls_pair(config: Config, directory: Path, public_address: str | None) -> TlsPair:
    """The front's certificate and key: ``sip.tls_certificate`` / ``sip.tls_private_key``
    when set (checked), else the self-signed pair in ``directory`` (made when missing or
    stale). ``public_address``: the profile's ``[nat] public_address``, named in the
    certificate with ``sip.host``."""
    sip = config.sip
    return pair_for(config, "sip", sip.tls_certificate, sip.tls_private_key,
                    directory=directory, names=_names(sip.host, public_address),
                    what="SIP front")


def pair_for(config: Config, section: str, certificate: str, private_key: str, *,
             directory: Path, names: list[str], what: str) -> TlsPair:
    """``<section>.tls_certificate`` / ``tls_private_key`` when set (checked; ConfigError
    naming the key otherwise), else a self-signed pair for ``names`` in ``directory``."""
    if certificate:
        pair = TlsPair(config.resolve_path(certificate), config.resolve_path(private_key),
                       self_signed=False)
        problem = _check(pair, section)
        if problem:
            raise ConfigError(problem[0], problem[1])
        return pair
    pair = TlsPair(directory / CERT_FILE, directory / KEY_FILE, self_signed=True)
    reason = _stale(pair, names)
    if reason:
        log.info("%s: making a self-signed TLS certificate for %s in %s (%s)", what,
                 ", ".join(names), directory, reason)
        _make_self_signed(directory, pair, names)
    return pair


def host_names(host: str) -> list[str]:
    """What a listener's self-signed certificate names: its address, else localhost."""
    return _names(host, None)


def _names(host: str, public_address: str | None) -> list[str]:
    """What the certificate names: the public address, the bound address, else localhost."""
    names = [n for n in (public_address, host) if n and n not in ("0.0.0.0", "::")]
    return list(dict.fromkeys(names)) or ["localhost", "127.0.0.1"]


def _check(pair: TlsPair, section: str = "sip") -> tuple[str, str] | None:
    """``(key, problem)`` when the configured pair cannot serve, else None."""
    try:
        cert = x509.load_pem_x509_certificate(pair.certificate.read_bytes())
    except (OSError, ValueError) as e:
        return f"{section}.tls_certificate", f"{pair.certificate}: not a PEM certificate ({e})"
    try:
        key = serialization.load_pem_private_key(pair.private_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        return (f"{section}.tls_private_key",
                f"{pair.private_key}: not an unencrypted PEM private key ({e})")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, public)
            != cert.public_key().public_bytes(serialization.Encoding.DER, public)):
        return (f"{section}.tls_private_key",
                f"{pair.private_key} is not the key of {pair.certificate}")
    if cert.not_valid_after_utc <= datetime.datetime.now(datetime.UTC):
        return (f"{section}.tls_certificate",
                f"{pair.certificate} expired on {cert.not_valid_after_utc}")
    return None


def _stale(pair: TlsPair, names: list[str]) -> str:
    """Why the self-signed pair must be made (again); "" when it can be reused."""
    if not (pair.certificate.is_file() and pair.private_key.is_file()):
        return "none yet"
    problem = _check(pair)
    if problem:
        return problem[1]
    cert = x509.load_pem_x509_certificate(pair.certificate.read_bytes())
    if cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < RENEW_BEFORE:
        return "it expires soon"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "it names no address"
    named = {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    named |= set(san.get_values_for_type(x509.DNSName))
    if not set(names) <= named:
        return "the front's addresses changed"
    return ""


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _make_self_signed(directory: Path, pair: TlsPair, names: list[str]) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, COMMON_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                              x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    _write(pair.private_key, key_pem, 0o600)
    _write(pair.certificate, cert.public_bytes(serialization.Encoding.PEM), 0o600)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` whole (a crash leaves the old file or the new one, never half)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
