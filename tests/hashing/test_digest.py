"""Digest strings: the OCI grammar, registered algorithms and computing digests."""

from __future__ import annotations

import hashlib

import blake3 as reference_blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distblob import Digest, digester, errors
from distblob.hashing import Blake3, Sha256, Sha384, Sha512

EMPTY256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_a_valid_digest_is_a_str_with_parts() -> None:
    digest = Digest.parse(EMPTY256)
    assert digest == EMPTY256 and isinstance(digest, str)
    assert digest.algorithm == "sha256"
    assert digest.encoded == EMPTY256.split(":")[1]
    assert Digest(digest) is digest
    assert {digest: 1}[EMPTY256] == 1
    assert repr(digest) == f"Digest('{EMPTY256}')"


@pytest.mark.parametrize(
    "value",
    [
        "sha512:" + "ab" * 64,
        "blake3:" + "0f" * 32,
        EMPTY256,
    ],
)
def test_registered_algorithms(value: str) -> None:
    assert Digest.parse(value) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "algorithm:encoded"),
        ("sha256", "algorithm:encoded"),
        ("sha256:", "algorithm:encoded"),
        (":abc", "algorithm:encoded"),
        ("SHA256:" + "a" * 64, "algorithm:encoded"),
        ("sha256:" + "A" * 64, "lowercase"),
        ("sha256:" + "g" * 64, "lowercase"),
        ("sha256:" + "a" * 63, "64 hex"),
        ("sha256:" + "a" * 65, "64 hex"),
        ("sha512:" + "a" * 64, "128 hex"),
        ("blake3:" + "a" * 128, "64 hex"),
        ("sha256:../../../etc/passwd", "algorithm:encoded"),
        ("sha256:" + "a" * 62 + "/x", "algorithm:encoded"),
        ("sha256 :" + "a" * 64, "algorithm:encoded"),
        ("sha256:" + "a" * 64 + "\n", "algorithm:encoded"),
        ("sha256::" + "a" * 64, "algorithm:encoded"),
    ],
)
def test_invalid_digests(value: str, reason: str) -> None:
    with pytest.raises(errors.DigestInvalidError, match=reason) as caught:
        Digest.parse(value)
    assert caught.value.digest == value
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("value", ["md5:" + "a" * 32, "sha224:" + "a" * 56, "sha256+b64u:abc="])
def test_unsupported_algorithms(value: str) -> None:
    with pytest.raises(errors.DigestUnsupportedError):
        Digest.parse(value)


def test_not_a_string() -> None:
    with pytest.raises(TypeError):
        Digest(b"sha256:abc")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("algorithm", "reference"),
    [
        ("sha256", hashlib.sha256),
        ("sha384", hashlib.sha384),
        ("sha512", hashlib.sha512),
        ("blake3", reference_blake3.blake3),
    ],
)
def test_from_bytes(algorithm: str, reference: object) -> None:
    data = b"distblob" * 1000
    digest = Digest.from_bytes(data, algorithm)
    assert digest == f"{algorithm}:{reference(data).hexdigest()}"  # type: ignore[operator]
    assert Digest.from_bytes(memoryview(data), algorithm) == digest


def test_digester_returns_native_hashers() -> None:
    assert isinstance(digester(), Sha256)
    assert isinstance(digester("sha384"), Sha384)
    assert isinstance(digester("sha512"), Sha512)
    assert isinstance(digester("blake3"), Blake3)
    with pytest.raises(errors.DigestUnsupportedError):
        digester("md5")


@given(st.text(max_size=140))
def test_any_text_is_a_digest_or_a_typed_error(value: str) -> None:
    try:
        digest = Digest.parse(value)
    except (errors.DigestInvalidError, errors.DigestUnsupportedError):
        return
    assert digest.algorithm in {"sha256", "sha384", "sha512", "blake3"}
    assert set(digest.encoded) <= set("0123456789abcdef")


@given(st.sampled_from(["sha256", "sha384", "sha512", "blake3"]), st.binary(max_size=300))
def test_computed_digests_parse(algorithm: str, data: bytes) -> None:
    digest = Digest.from_bytes(data, algorithm)
    assert Digest.parse(str(digest)) == digest
