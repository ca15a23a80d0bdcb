"""The native hashers: known answers, hashlib's shape, buffers, threads and saved states."""

from __future__ import annotations

import array
import hashlib
import itertools
import mmap
import os
import threading
from typing import Any

import blake3 as reference_blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distblob import errors
from distblob.hashing import Blake3, Sha256, Sha384, Sha512

NIST_SHA256 = {
    b"": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    b"abc": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq": (
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    ),
    b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
    b"klmnopqrlmnopqrsmnopqrstnopqrstu": (
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"
    ),
}
NIST_SHA512 = {
    b"": (
        "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
        "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
    ),
    b"abc": (
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
    ),
    b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
    b"klmnopqrlmnopqrsmnopqrstnopqrstu": (
        "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
        "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"
    ),
}
NIST_SHA384 = {
    b"": (
        "38b060a751ac96384cd9327eb1b1e36a21fdb71114be0743"
        "4c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b"
    ),
    b"abc": (
        "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded163"
        "1a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"
    ),
    b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
    b"klmnopqrlmnopqrsmnopqrstnopqrstu": (
        "09330c33f71147e83d192fc782cd1b4753111b173b3b05d2"
        "2fa08086e3b0f712fcc7c71a557e2db966c3e9fa91746039"
    ),
}
MILLION_A = {
    "sha256": "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
    "sha384": (
        "9d0e1809716474cb086e834e310a4a1ced149e9c00f248527972cec5704c2a5b"
        "07b8b3dc38ecc4ebae97ddd87f3d8985"
    ),
    "sha512": (
        "e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973eb"
        "de0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b"
    ),
}
# BLAKE3's test_vectors.json: input i % 251 of the given length, first 32 bytes of "hash".
BLAKE3_VECTORS = {
    0: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    1: "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
    1023: "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11",
    1024: "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
    1025: "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
    2048: "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a",
    2049: "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030",
    3072: "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2",
    4097: "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995",
    7169: "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817",
}
# The 1,025-byte vector's full 131-byte extended output (checks digest(length=...)).
BLAKE3_1025_XOF = (
    "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444f4c4a22b4b399155358a994e52"
    "bf255de60035742ec71bd08ac275a1b51cc6bfe332b0ef84b409108cda080e6269ed4b3e2c3f7d722aa4cdc98d16"
    "deb554e5627be8f955c98e1d5f9565a9194cad0c4285f93700062d9595adb992ae68ff12800ab67a"
)

SHA2 = [(Sha256, hashlib.sha256), (Sha384, hashlib.sha384), (Sha512, hashlib.sha512)]


def blake3_input(length: int) -> bytes:
    return bytes(i % 251 for i in range(length))


# -- known answers -----------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "want"), NIST_SHA256.items())
def test_nist_sha256(data: bytes, want: str) -> None:
    assert Sha256(data).hexdigest() == want


@pytest.mark.parametrize(("data", "want"), NIST_SHA384.items())
def test_nist_sha384(data: bytes, want: str) -> None:
    assert Sha384(data).hexdigest() == want


@pytest.mark.parametrize(("data", "want"), NIST_SHA512.items())
def test_nist_sha512(data: bytes, want: str) -> None:
    assert Sha512(data).hexdigest() == want


@pytest.mark.parametrize("cls", [Sha256, Sha384, Sha512])
def test_million_a_in_uneven_pieces(cls: type[Sha256] | type[Sha384] | type[Sha512]) -> None:
    data = b"a" * 1_000_000
    hasher = cls()
    for start in range(0, len(data), 9973):
        hasher.update(data[start : start + 9973])
    assert hasher.hexdigest() == MILLION_A[hasher.name]
    assert cls(data).hexdigest() == MILLION_A[hasher.name]


@pytest.mark.parametrize(("length", "want"), BLAKE3_VECTORS.items())
def test_blake3_official_vectors(length: int, want: str) -> None:
    assert Blake3(blake3_input(length)).hexdigest() == want


def test_blake3_extended_output() -> None:
    hasher = Blake3(blake3_input(1025))
    assert hasher.hexdigest(len(BLAKE3_1025_XOF) // 2) == BLAKE3_1025_XOF
    assert hasher.digest(8) == bytes.fromhex(BLAKE3_1025_XOF[:16])


# -- hashlib's shape ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "name", "digest_size", "block_size"),
    [
        (Sha256, "sha256", 32, 64),
        (Sha384, "sha384", 48, 128),
        (Sha512, "sha512", 64, 128),
        (Blake3, "blake3", 32, 64),
    ],
)
def test_attributes_match_hashlib(cls: Any, name: str, digest_size: int, block_size: int) -> None:
    hasher = cls()
    assert (hasher.name, hasher.digest_size, hasher.block_size) == (name, digest_size, block_size)
    assert (cls.name, cls.digest_size, cls.block_size) == (name, digest_size, block_size)
    assert hasher.size == 0
    hasher.update(b"12345")
    assert hasher.size == 5
    assert len(hasher.digest()) == digest_size


@pytest.mark.parametrize("cls", [Sha256, Sha384, Sha512, Blake3])
def test_digest_does_not_end_hashing_and_copy_is_independent(cls: Any) -> None:
    hasher = cls(b"hello ")
    early = hasher.hexdigest()
    twin = hasher.copy()
    hasher.update(b"world")
    assert twin.hexdigest() == early
    assert hasher.hexdigest() == cls(b"hello world").hexdigest()
    assert hasher.hexdigest() == hasher.digest().hex()
    assert twin.size == 6 and hasher.size == 11


# -- buffers -----------------------------------------------------------------------------------


def buffers_of(payload: bytes) -> list[Any]:
    words = array.array("I")
    words.frombytes(payload)
    buffers: list[Any] = [
        payload,
        bytearray(payload),
        memoryview(payload),
        memoryview(bytearray(b"xx" + payload + b"yy"))[2:-2],
        words,
    ]
    if payload:  # an anonymous mmap cannot be empty
        region = mmap.mmap(-1, len(payload))
        region.write(payload)
        buffers.append(region)
    return buffers


@pytest.mark.parametrize("size", [0, 8, 2048, 1 << 20])  # below and above the GIL threshold
@pytest.mark.parametrize(("cls", "reference"), [*SHA2, (Blake3, reference_blake3.blake3)])
def test_every_contiguous_buffer_is_accepted(cls: Any, reference: Any, size: int) -> None:
    payload = os.urandom(size)
    want = reference(payload).hexdigest()
    for buffer in buffers_of(payload):
        hasher = cls()
        hasher.update(buffer)
        assert hasher.hexdigest() == want, type(buffer)
        assert hasher.size == size
        if isinstance(buffer, mmap.mmap):
            buffer.close()


@pytest.mark.parametrize("cls", [Sha256, Sha384, Sha512, Blake3])
def test_non_contiguous_and_non_buffers_are_refused(cls: Any) -> None:
    hasher = cls()
    with pytest.raises(BufferError):
        hasher.update(memoryview(bytes(range(100)))[::2])
    with pytest.raises(TypeError):
        hasher.update("text")
    with pytest.raises(TypeError):
        hasher.update(12)
    assert hasher.size == 0


def test_a_bytearray_cannot_be_resized_while_it_is_hashed() -> None:
    # The export pins the buffer for the duration of the call; afterwards it is free again.
    data = bytearray(1 << 20)
    Sha256().update(data)
    data.extend(b"more")
    assert len(data) == (1 << 20) + 4


# -- threads -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "reference"), [*SHA2, (Blake3, reference_blake3.blake3)])
def test_one_hasher_shared_by_many_threads(cls: Any, reference: Any) -> None:
    # Every thread feeds the same block, so the digest is known whatever the interleaving; a
    # borrow error or a lost update would change it or raise.
    block = os.urandom(64 * 1024 + 3)
    threads, rounds = 8, 40
    hasher = cls()
    failures: list[BaseException] = []

    def feed() -> None:
        try:
            for _ in range(rounds):
                hasher.update(block)
                hasher.hexdigest()
                hasher.copy()
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=feed) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    assert hasher.size == len(block) * threads * rounds
    assert hasher.hexdigest() == reference(block * threads * rounds).hexdigest()


@pytest.mark.parametrize("max_threads", [1, 2, 4, Blake3.AUTO])
def test_blake3_threads_give_the_same_digest(max_threads: int) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    hasher = Blake3(max_threads=max_threads)
    hasher.update(data[:100_000])
    hasher.update(data[100_000:])
    assert hasher.max_threads == max_threads
    assert hasher.hexdigest() == reference_blake3.blake3(data).hexdigest()


@pytest.mark.parametrize("bad", [0, -2])
def test_blake3_rejects_impossible_thread_counts(bad: int) -> None:
    with pytest.raises(ValueError, match="max_threads"):
        Blake3(max_threads=bad)


# -- saved states ------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=4096),
    cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=6),
    restore_at=st.sets(st.integers(min_value=0, max_value=6)),
)
def test_any_split_with_any_save_points_matches_hashlib(
    data: bytes, cuts: list[int], restore_at: set[int]
) -> None:
    bounds = sorted({0, len(data), *(min(cut, len(data)) for cut in cuts)})
    for cls, reference in SHA2:
        hasher = cls()
        for index, (start, end) in enumerate(itertools.pairwise(bounds)):
            if index in restore_at:
                hasher = cls.unmarshal_binary(hasher.marshal_binary())
            hasher.update(data[start:end])
        restored = cls.unmarshal_binary(hasher.marshal_binary())
        assert hasher.hexdigest() == reference(data).hexdigest()
        assert restored.hexdigest() == reference(data).hexdigest()
        assert restored.size == len(data)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=20_000), cuts=st.lists(st.integers(0, 20_000), max_size=5))
def test_blake3_any_split_matches_the_reference(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(min(cut, len(data)) for cut in cuts)})
    hasher = Blake3()
    for start, end in itertools.pairwise(bounds):
        hasher.update(data[start:end])
    assert hasher.hexdigest() == reference_blake3.blake3(data).hexdigest()


def test_states_match_go_byte_for_byte(go_upload: dict[str, Any], go_fixtures: Any) -> None:
    """At every offset where the Go registry saved a state, ours is identical and resumes."""
    data: bytes = go_upload["data"]
    states = go_fixtures / "upload" / "hashstates" / "sha256"
    offsets: list[int] = go_upload["offsets_with_state"]
    assert sorted(int(p.name) for p in states.iterdir()) == sorted(offsets)
    for offset in offsets:
        go_state = (states / str(offset)).read_bytes()
        ours = Sha256(data[:offset])
        assert ours.marshal_binary() == go_state, f"state at offset {offset} differs"
        resumed = Sha256.unmarshal_binary(go_state)
        assert resumed.size == offset
        resumed.update(data[offset:])
        assert f"sha256:{resumed.hexdigest()}" == go_upload["digest"]


def test_go_state_is_the_documented_layout() -> None:
    hasher = Sha256(b"x" * 70)
    state = hasher.marshal_binary()
    assert len(state) == 108 and state[:4] == b"sha\x03"
    assert state[36:42] == b"x" * 6 and state[42:100] == bytes(58)
    assert int.from_bytes(state[100:], "big") == 70
    assert len(Sha512(b"y").marshal_binary()) == 204


Sha2Class = type[Sha256] | type[Sha384] | type[Sha512]


def corrupt_states() -> list[tuple[str, Sha2Class, bytes]]:
    good256 = Sha256(b"some data").marshal_binary()
    good384 = Sha384(b"some data").marshal_binary()
    good512 = Sha512(b"some data").marshal_binary()
    impossible_length = good256[:100] + (1 << 62).to_bytes(8, "big")
    not_initial = good256[:4] + bytes([good256[4] ^ 1]) + good256[5:]
    return [
        ("empty", Sha256, b""),
        ("truncated", Sha256, good256[:-1]),
        ("extended", Sha256, good256 + b"\0"),
        ("magic only", Sha256, b"sha\x03"),
        ("sha224 magic", Sha256, b"sha\x02" + good256[4:]),
        ("sha512 state", Sha256, good512),
        ("sha256 state", Sha512, good256),
        ("sha512/256 magic", Sha512, b"sha\x06" + good512[4:]),
        ("sha384 state", Sha512, good384),
        ("sha512 state", Sha384, good512),
        ("sha256 state", Sha384, good256),
        ("random", Sha256, os.urandom(108)),
        ("random", Sha512, os.urandom(204)),
        ("impossible length", Sha256, impossible_length),
        ("chaining values changed before one block", Sha256, not_initial),
    ]


@pytest.mark.parametrize(("case", "cls", "state"), corrupt_states())
def test_unusable_states_raise_hash_state_error(case: str, cls: Sha2Class, state: bytes) -> None:
    with pytest.raises(errors.HashStateError) as caught:
        cls.unmarshal_binary(state)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, errors.DistblobError)


def test_stale_bytes_after_the_pending_ones_are_accepted() -> None:
    # Older Go versions left stale bytes in the block buffer; readers must ignore them.
    state = bytearray(Sha256(b"abc").marshal_binary())
    state[40:100] = b"\xee" * 60
    assert Sha256.unmarshal_binary(state).hexdigest() == hashlib.sha256(b"abc").hexdigest()


@settings(max_examples=80, deadline=None)
@given(
    data=st.binary(max_size=12_000),
    cuts=st.lists(st.integers(0, 12_000), max_size=5),
    threads=st.sampled_from([1, 2, Blake3.AUTO]),
)
def test_blake3_states_resume_anywhere(data: bytes, cuts: list[int], threads: int) -> None:
    bounds = sorted({0, len(data), *(min(cut, len(data)) for cut in cuts)})
    hasher = Blake3(max_threads=threads)
    for start, end in itertools.pairwise(bounds):
        hasher = Blake3.unmarshal_binary(hasher.marshal_binary(), max_threads=threads)
        hasher.update(data[start:end])
    assert hasher.size == len(data)
    assert hasher.hexdigest() == reference_blake3.blake3(data).hexdigest()
    assert hasher.hexdigest(100) == reference_blake3.blake3(data).hexdigest(length=100)


def test_blake3_state_of_a_large_input() -> None:
    data = os.urandom(5 * 1024 * 1024 + 12_345)
    first = Blake3(data[: 3 * 1024 * 1024 + 7], max_threads=2)
    resumed = Blake3.unmarshal_binary(first.marshal_binary(), max_threads=2)
    resumed.update(data[3 * 1024 * 1024 + 7 :])
    assert resumed.hexdigest() == reference_blake3.blake3(data).hexdigest()


@pytest.mark.parametrize(
    "state",
    [b"", b"b3\x00\x01", b"b3\x00\x02" + bytes(11), os.urandom(64)],
    ids=["empty", "magic only", "wrong magic", "random"],
)
def test_bad_blake3_states(state: bytes) -> None:
    with pytest.raises(errors.HashStateError):
        Blake3.unmarshal_binary(state)
    good = bytearray(Blake3(b"x" * 5000).marshal_binary())
    good[5] ^= 0x01  # the length no longer matches the contents
    with pytest.raises(errors.HashStateError):
        Blake3.unmarshal_binary(bytes(good))
