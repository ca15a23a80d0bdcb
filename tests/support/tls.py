"""A throw-away PKI for TLS tests, made with ``cryptography``: a CA, a server certificate for
127.0.0.1 and localhost, a client certificate, and a second CA with a client of its own (one the
server does not trust). Everything is written as PEM files under one directory, plus the
directories skopeo reads with ``--cert-dir`` (containers-certs.d: ``ca.crt``, and
``client.cert`` with ``client.key``)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: PrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _issue(
    subject: str,
    key: PrivateKey,
    issuer: tuple[x509.Certificate, PrivateKey] | None,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    names: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name = issuer[0].subject if issuer else _name(subject)
    signer = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            critical=False,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


@dataclass(frozen=True)
class PKI:
    """The files of :func:`make_pki`."""

    root: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: A CA the server is not told about, and a client certificate it signed.
    other_ca: Path
    stranger_cert: Path
    stranger_key: Path
    #: Keys that belong to no certificate here (one of the server key's type, one not), and
    #: the server key under a passphrase.
    unrelated_key: Path
    unrelated_rsa_key: Path
    encrypted_server_key: Path

    def tls_config(self, **extra: object) -> dict[str, object]:
        """An ``http.tls`` section with the server's certificate and key, plus ``extra``."""
        return {"certificate": str(self.server_cert), "key": str(self.server_key), **extra}

    def cert_dir(self, name: str, *, client: bool) -> Path:
        """A directory for skopeo's ``--cert-dir``: the CA, and the client's certificate and
        key when ``client``."""
        path = self.root / name
        path.mkdir(exist_ok=True)
        (path / "ca.crt").write_bytes(self.ca.read_bytes())
        if client:
            (path / "client.cert").write_bytes(self.client_cert.read_bytes())
            (path / "client.key").write_bytes(self.client_key.read_bytes())
        return path

    def client_context(
        self,
        *,
        client: bool = False,
        stranger: bool = False,
        maximum: ssl.TLSVersion | None = None,
        ciphers: str | None = None,
    ) -> ssl.SSLContext:
        """A client context trusting the CA, presenting the client certificate (or the
        stranger's), at most TLS version ``maximum``, offering TLS 1.2 ``ciphers`` only."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if client:
            context.load_cert_chain(self.client_cert, self.client_key)
        if stranger:
            context.load_cert_chain(self.stranger_cert, self.stranger_key)
        if maximum is not None:
            context.maximum_version = maximum
        if ciphers is not None:
            context.set_ciphers(ciphers)
        return context


def make_pki(root: Path) -> PKI:
    """Write a fresh :class:`PKI` under ``root`` (the server key is RSA, so that the RSA cipher
    suites apply; the others are P-256)."""
    root.mkdir(parents=True, exist_ok=True)

    def write(name: str, data: bytes) -> Path:
        path = root / name
        path.write_bytes(data)
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("distblob test CA", ca_key, None, ca=True)
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server_cert = _issue(
        "127.0.0.1",
        server_key,
        (ca_cert, ca_key),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        names=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _issue("ci", client_key, (ca_cert, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_cert = _issue("another CA", other_key, None, ca=True)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger_cert = _issue(
        "stranger", stranger_key, (other_cert, other_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return PKI(
        root=root,
        ca=write("ca.crt", _pem_cert(ca_cert)),
        server_cert=write("server.crt", _pem_cert(server_cert)),
        server_key=write("server.key", _pem_key(server_key)),
        client_cert=write("client.crt", _pem_cert(client_cert)),
        client_key=write("client.key", _pem_key(client_key)),
        other_ca=write("other-ca.crt", _pem_cert(other_cert)),
        stranger_cert=write("stranger.crt", _pem_cert(stranger_cert)),
        stranger_key=write("stranger.key", _pem_key(stranger_key)),
        unrelated_key=write("unrelated.key", _pem_key(ec.generate_private_key(ec.SECP256R1()))),
        unrelated_rsa_key=write(
            "unrelated-rsa.key",
            _pem_key(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ),
        encrypted_server_key=write("server-encrypted.key", _pem_key(server_key, b"secret")),
    )
