"""The blob store conformance suite, part 3: resumable digests, for every engine and driver.

The native engine saves the running hash at ``_uploads/<id>/hashstates/<alg>/<offset>`` on every
close, in Go's format, and resumes from the newest usable state without rehashing; the python
engine saves none and rehashes. Either way, whatever is wrong with the saved states, a resumed
upload commits to the right digest.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable

import pytest

from distblob import Descriptor, Digest, Registry, Repository
from distblob.errors import PathNotFoundError
from distblob.hashing import Blake3, Sha256, Sha384, Sha512
from distblob.storage import paths
from distblob.storage.driver import StorageDriver
from support.blobstore import payload, sha256, state_offsets, tree, upload_dir

DATA = payload(5000, seed=5)
#: Where the scenario below closes the upload, so where the native engine saves states.
CLOSES = (1000, 2500, 3200)


def saves_states(combination: tuple[str, str]) -> bool:
    return combination[0] == "native"


def has_hash_states(driver: StorageDriver, repo: Repository, upload_id: str) -> bool:
    return any("/hashstates" in path for path in tree(driver, upload_dir(repo, upload_id)))


def test_an_empty_upload_never_saves_a_state(repo: Repository, blob_driver: StorageDriver) -> None:
    writer = repo.blobs.create()
    writer.close()
    for _ in range(2):  # a status request resumes and closes it
        writer = repo.blobs.resume(writer.id)
        assert writer.size == 0
        writer.close()
    assert state_offsets(blob_driver, repo, writer.id, "sha256") == {}


def test_a_state_on_every_close(
    repo: Repository, blob_driver: StorageDriver, blob_combination: tuple[str, str]
) -> None:
    writer = repo.blobs.create()
    writer.close()
    written = 0
    # A fresh upload saves no state at 0 (Go does): a resume at size 0 has nothing to restore.
    assert state_offsets(blob_driver, repo, writer.id, "sha256") == {}
    saved: list[int] = []
    for offset in (*CLOSES, len(DATA)):
        writer = repo.blobs.resume(writer.id)
        assert writer.size == written
        # With a state, nothing is rehashed: the hash covers the whole data already.
        assert writer.hashed == (written if saves_states(blob_combination) else 0)
        writer.write(DATA[written:offset])
        written = offset
        writer.close()
        saved.append(offset)
        states = state_offsets(blob_driver, repo, writer.id, "sha256")
        if saves_states(blob_combination):
            assert sorted(states) == saved
            for at, state in states.items():
                assert len(state) == 108
                assert state[:4] == b"sha\x03"
                assert int.from_bytes(state[-8:], "big") == at
                assert state == Sha256(DATA[:at]).marshal_binary()
        else:
            assert not has_hash_states(blob_driver, repo, writer.id)

    if saves_states(blob_combination):
        # Closing again, or closing a resumed upload without writing, saves nothing new.
        again = repo.blobs.resume(writer.id)
        again.close()
        again.close()
        assert sorted(state_offsets(blob_driver, repo, writer.id, "sha256")) == saved

    final = repo.blobs.resume(writer.id)
    assert final.commit(Descriptor(digest=sha256(DATA))).digest == sha256(DATA)
    assert tree(blob_driver, upload_dir(repo, writer.id)) == {}


@pytest.mark.parametrize("algorithm", ["sha384", "sha512", "blake3"])
def test_states_of_other_algorithms(
    repo: Repository,
    blob_driver: StorageDriver,
    blob_combination: tuple[str, str],
    algorithm: str,
) -> None:
    writer = repo.blobs.create(algorithm=algorithm)
    writer.write(DATA[:3000])
    writer.close()
    states = state_offsets(blob_driver, repo, writer.id, algorithm)
    resumed = repo.blobs.resume(writer.id)
    if saves_states(blob_combination) and algorithm in ("sha384", "sha512"):
        # Go's crypto/sha512 format, with its magic for each of the two.
        sha2 = Sha384 if algorithm == "sha384" else Sha512
        assert states == {3000: sha2(DATA[:3000]).marshal_binary()}
        assert len(states[3000]) == 204
        assert states[3000][:4] == (b"sha\x04" if algorithm == "sha384" else b"sha\x07")
        assert resumed.hashed == 3000
    elif saves_states(blob_combination):
        # BLAKE3 states are distblob's own format: the subtrees and the last bytes.
        assert states == {3000: Blake3(DATA[:3000]).marshal_binary()}
        assert states[3000][:4] == b"b3\x00\x01"
        assert resumed.hashed == 3000
    else:
        # The python engine saves none.
        assert not has_hash_states(blob_driver, repo, writer.id)
        assert resumed.hashed == 0
    resumed.write(DATA[3000:])
    expected = Digest.from_bytes(DATA, algorithm)
    assert resumed.commit(Descriptor(digest=expected)).digest == expected


def test_resumable_digests_off(
    make_registry: Callable[..., Registry], blob_driver: StorageDriver
) -> None:
    off = make_registry(resumable_digests=False).repository("library/test")
    writer = off.blobs.create()
    writer.write(DATA[:2000])
    writer.close()
    assert not has_hash_states(blob_driver, off, writer.id)
    resumed = off.blobs.resume(writer.id)
    assert resumed.hashed == 0
    resumed.write(DATA[2000:])
    assert resumed.commit(Descriptor(digest=sha256(DATA))).digest == sha256(DATA)

    # States another registry saved are not read either, and no new ones are written.
    on = make_registry().repository("library/test")
    other = on.blobs.create()
    other.write(DATA[:2000])
    other.close()
    before = state_offsets(blob_driver, on, other.id, "sha256")
    resumed = off.blobs.resume(other.id)
    assert resumed.hashed == 0
    resumed.write(DATA[2000:])
    resumed.close()
    assert state_offsets(blob_driver, on, other.id, "sha256") == before
    assert off.blobs.resume(other.id).commit(Descriptor(digest=sha256(DATA))).size == len(DATA)


# -- damaged states --------------------------------------------------------------------------------


def upload_with_states(repo: Repository) -> str:
    """An upload of ``DATA[:3200]`` closed at each of CLOSES; returns its id."""
    writer = repo.blobs.create()
    written = 0
    for offset in CLOSES:
        writer.write(DATA[written:offset])
        written = offset
        writer.close()
        writer = repo.blobs.resume(writer.id)
    writer.close()
    return writer.id


def state_path(repo: Repository, upload_id: str, offset: int | str) -> str:
    return f"{paths.upload_hash_states_root(repo.name, upload_id, 'sha256')}/{offset}"


GOOD = Sha256(DATA[:3200]).marshal_binary()


def forged_hash_words(state: bytes) -> bytes:
    """Right magic, size and length, wrong hash words."""
    return state[:4] + bytes(32) + state[36:]


#: Ways to damage the newest state (at 3200), each a function of the good state.
DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda state: state[:50],
    "empty": lambda state: b"",
    "random-bytes": lambda state: random.Random(7).randbytes(len(state)),
    "wrong-magic": lambda state: b"sha\x02" + state[4:],  # SHA-224's
    "one-byte-too-long": lambda state: state + b"\x00",
    "sha512-state": lambda state: Sha512(DATA[:3200]).marshal_binary(),
    "length-below-name": lambda state: Sha256(DATA[:2500]).marshal_binary(),
    "length-above-name": lambda state: Sha256(DATA[:4000]).marshal_binary(),
    "length-above-data": lambda state: Sha256(DATA).marshal_binary(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_state_falls_back_to_an_older_one(
    repo: Repository,
    blob_driver: StorageDriver,
    blob_combination: tuple[str, str],
    damage: str,
) -> None:
    upload_id = upload_with_states(repo)
    blob_driver.put_content(state_path(repo, upload_id, 3200), DAMAGE[damage](GOOD))
    resumed = repo.blobs.resume(upload_id)
    assert resumed.size == 3200
    assert resumed.hashed == (2500 if saves_states(blob_combination) else 0)
    resumed.close()
    if saves_states(blob_combination):
        # Closing saved a good state in the damaged one's place.
        assert blob_driver.get_content(state_path(repo, upload_id, 3200)) == GOOD
    resumed = repo.blobs.resume(upload_id)
    resumed.write(DATA[3200:])
    assert resumed.commit(Descriptor(digest=sha256(DATA))).digest == sha256(DATA)
    assert tree(blob_driver, upload_dir(repo, upload_id)) == {}


def test_every_state_damaged_means_rehashing(repo: Repository, blob_driver: StorageDriver) -> None:
    upload_id = upload_with_states(repo)
    for offset in CLOSES:
        blob_driver.put_content(state_path(repo, upload_id, offset), b"\xff" * 108)
    resumed = repo.blobs.resume(upload_id)
    assert (resumed.size, resumed.hashed) == (3200, 0)
    resumed.write(DATA[3200:])
    assert resumed.commit(Descriptor(digest=sha256(DATA))).digest == sha256(DATA)


def test_states_past_the_data_and_stray_files_are_skipped(
    repo: Repository, blob_driver: StorageDriver, blob_combination: tuple[str, str]
) -> None:
    upload_id = upload_with_states(repo)
    # A state for an offset larger than the data (say the data was truncated), and files that
    # are no state at all.
    blob_driver.put_content(state_path(repo, upload_id, 4000), Sha256(DATA[:4000]).marshal_binary())
    blob_driver.put_content(state_path(repo, upload_id, "notes"), b"not a state")
    blob_driver.put_content(state_path(repo, upload_id, "-1"), GOOD)
    resumed = repo.blobs.resume(upload_id)
    assert resumed.hashed == (3200 if saves_states(blob_combination) else 0)
    resumed.write(DATA[3200:])
    assert resumed.commit(Descriptor(digest=sha256(DATA))).digest == sha256(DATA)


def test_only_a_state_past_the_data_means_rehashing(
    repo: Repository, blob_driver: StorageDriver
) -> None:
    upload_id = upload_with_states(repo)
    with contextlib.suppress(PathNotFoundError):  # the python engine saved none
        blob_driver.delete(paths.upload_hash_states_root(repo.name, upload_id, "sha256"))
    blob_driver.put_content(state_path(repo, upload_id, 4000), Sha256(DATA[:4000]).marshal_binary())
    resumed = repo.blobs.resume(upload_id)
    assert (resumed.size, resumed.hashed) == (3200, 0)
    resumed.write(DATA[3200:])
    assert resumed.commit(Descriptor(digest=sha256(DATA))).digest == sha256(DATA)


def test_data_beyond_the_newest_state_is_hashed_on_resume(
    repo: Repository, blob_driver: StorageDriver, blob_combination: tuple[str, str]
) -> None:
    """Bytes that reached the data file after the last saved state (a writer that never
    closed) are read back and hashed, not lost."""
    upload_id = upload_with_states(repo)
    with blob_driver.writer(paths.upload_data_path(repo.name, upload_id), append=True) as file:
        file.write(DATA[3200:4100])
    resumed = repo.blobs.resume(upload_id)
    assert resumed.size == 4100
    assert resumed.hashed == (3200 if saves_states(blob_combination) else 0)
    resumed.write(DATA[4100:])
    assert resumed.commit(Descriptor(digest=sha256(DATA))).digest == sha256(DATA)


def test_a_forged_state_does_not_make_a_wrong_blob(
    repo: Repository, blob_driver: StorageDriver
) -> None:
    """A state that restores (right magic, size and length) but holds the wrong hash: the
    commit must not trust it over the data."""
    upload_id = upload_with_states(repo)
    blob_driver.put_content(state_path(repo, upload_id, 3200), forged_hash_words(GOOD))
    resumed = repo.blobs.resume(upload_id)
    resumed.write(DATA[3200:])
    assert resumed.commit(Descriptor(digest=sha256(DATA))).digest == sha256(DATA)
    assert repo.blobs.get(sha256(DATA)) == DATA
