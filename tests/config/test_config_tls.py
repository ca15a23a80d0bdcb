"""``http.tls``: the keys distblob serves, what it refuses and why, and the files checked when
the config is read (each fault a ConfigError naming its key)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from distblob.config import TLS, ConfigError, parse_config
from distblob.server.tls import server_context
from support.tls import PKI, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def config_with(tls: object) -> dict[str, Any]:
    return {"version": 0.1, "http": {"addr": "127.0.0.1:5000", "tls": tls}}


def refused(tls: object) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(tls))
    return caught.value


def test_the_section_is_read_into_the_tree(pki: PKI) -> None:
    config = parse_config(
        config_with(
            pki.tls_config(
                clientcas=[str(pki.ca), str(pki.other_ca)],
                minimumtls="tls1.3",
                ciphersuites=["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"],
            )
        )
    )
    assert (
        config.tls
        == config.http.tls
        == TLS(
            certificate=str(pki.server_cert),
            key=str(pki.server_key),
            clientcas=(str(pki.ca), str(pki.other_ca)),
            minimumtls="tls1.3",
            ciphersuites=("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"),
        )
    )


@pytest.mark.parametrize("section", [None, {}, {"letsencrypt": {}}])
def test_an_empty_section_is_plain_http_as_in_distribution(section: object) -> None:
    assert parse_config(config_with(section)).tls is None


def test_the_defaults(pki: PKI) -> None:
    tls = parse_config(config_with(pki.tls_config())).tls
    assert tls is not None and (tls.clientcas, tls.minimumtls, tls.ciphersuites) == (
        (),
        "tls1.2",
        (),
    )
    context = server_context(tls)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] != "TLSv1.3"}
    # The Go registry 2.8.2's default TLS 1.2 suites: ECDHE with AES-GCM or ChaCha20.
    assert tls12 == {
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
    }


def test_letsencrypt_is_refused_with_the_reason(pki: PKI) -> None:
    error = refused(pki.tls_config(letsencrypt={"cachefile": "/x", "email": "a@b"}))
    assert error.key == "http.tls.letsencrypt"
    assert "ACME" in error.reason


def test_an_unknown_key_is_named(pki: PKI) -> None:
    assert refused(pki.tls_config(certfile="x")).key == "http.tls.certfile"


@pytest.mark.parametrize(
    ("drop", "key"), [("certificate", "http.tls.certificate"), ("key", "http.tls.key")]
)
def test_certificate_and_key_go_together(pki: PKI, drop: str, key: str) -> None:
    section = pki.tls_config()
    del section[drop]
    assert refused(section).key == key


def test_an_unreadable_certificate_or_key_is_named(pki: PKI, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    error = refused(pki.tls_config(certificate=missing))
    assert (error.key, missing in error.reason) == ("http.tls.certificate", True)
    assert refused(pki.tls_config(key=missing)).key == "http.tls.key"


def test_a_certificate_file_without_a_certificate(pki: PKI) -> None:
    error = refused(pki.tls_config(certificate=str(pki.server_key)))
    assert error.key == "http.tls.certificate"
    assert "no PEM certificate" in error.reason


@pytest.mark.parametrize("which", ["unrelated_key", "unrelated_rsa_key"])
def test_a_key_that_is_not_the_certificates(pki: PKI, which: str) -> None:
    error = refused(pki.tls_config(key=str(getattr(pki, which))))
    assert error.key == "http.tls.key"
    assert "not the key of the certificate" in error.reason


def test_an_encrypted_key_is_refused_without_asking_for_a_passphrase(pki: PKI) -> None:
    error = refused(pki.tls_config(key=str(pki.encrypted_server_key)))
    assert (error.key, "encrypted" in error.reason) == ("http.tls.key", True)


def test_a_key_file_without_a_key(pki: PKI) -> None:
    assert refused(pki.tls_config(key=str(pki.ca))).key == "http.tls.key"


def test_clientcas(pki: PKI, tmp_path: Path) -> None:
    tls = parse_config(config_with(pki.tls_config(clientcas=[str(pki.ca)]))).tls
    assert tls is not None and server_context(tls).verify_mode == ssl.CERT_REQUIRED
    assert refused(pki.tls_config(clientcas=str(pki.ca))).key == "http.tls.clientcas"
    assert refused(pki.tls_config(clientcas=[""])).key == "http.tls.clientcas"
    error = refused(pki.tls_config(clientcas=[str(tmp_path / "none.crt")]))
    assert error.key == "http.tls.clientcas"
    error = refused(pki.tls_config(clientcas=[str(pki.client_key)]))
    assert (error.key, "no PEM CA certificate" in error.reason) == ("http.tls.clientcas", True)


@pytest.mark.parametrize("version", ["tls1.0", "tls1.1"])
def test_tls_1_0_and_1_1_are_refused_with_the_reason(pki: PKI, version: str) -> None:
    error = refused(pki.tls_config(minimumtls=version))
    assert (error.key, "RFC 8996" in error.reason) == ("http.tls.minimumtls", True)


@pytest.mark.parametrize("version", ["TLS1.2", "1.3", "tls13", 1.2])
def test_other_spellings_of_the_minimum_are_refused(pki: PKI, version: object) -> None:
    assert refused(pki.tls_config(minimumtls=version)).key == "http.tls.minimumtls"


def test_tls_1_3_minimum(pki: PKI) -> None:
    tls = parse_config(config_with(pki.tls_config(minimumtls="tls1.3"))).tls
    assert tls is not None
    assert server_context(tls).minimum_version == ssl.TLSVersion.TLSv1_3


def test_cipher_suites_are_gos_names_mapped_to_openssls(pki: PKI) -> None:
    names = ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_AES_256_CBC_SHA"]
    tls = parse_config(config_with(pki.tls_config(ciphersuites=names))).tls
    assert tls is not None
    context = server_context(tls)
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] != "TLSv1.3"}
    assert tls12 == {"ECDHE-RSA-AES128-GCM-SHA256", "AES256-SHA"}


def test_only_tls_1_3_suites_leave_tls_1_2_nothing(pki: PKI) -> None:
    names = ["TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"]
    tls = parse_config(config_with(pki.tls_config(ciphersuites=names))).tls
    assert tls is not None
    assert server_context(tls).minimum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("TLS_RSA_WITH_RC4_128_SHA", "insecure"),
        ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "insecure"),
        ("ECDHE-RSA-AES128-GCM-SHA256", "unknown"),  # OpenSSL's name, not Go's
        ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "unknown"),  # Go 2.8.2 refuses it too
    ],
)
def test_suites_that_are_refused(pki: PKI, name: str, why: str) -> None:
    error = refused(pki.tls_config(ciphersuites=[name]))
    assert (error.key, why in error.reason, name in error.reason) == (
        "http.tls.ciphersuites",
        True,
        True,
    )
