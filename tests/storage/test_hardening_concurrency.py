"""Concurrency: many writers, many repositories, deletes racing commits, two server processes.

- 32 *processes* commit the same content at once: one blob, every commit succeeds (the thread
  version is in ``test_blobstore_uploads.py``).
- Uploads into many repositories at once, from threads: every blob right, every upload removed.
- A delete racing a commit, interleaved deterministically at each step of the commit (see
  :func:`test_repository_delete_racing_a_commit` and
  :func:`test_blob_delete_racing_a_commit_loses_nothing` for the behaviour).
- Two ``distblob serve`` processes on one root serve one upload's PATCHes alternately, many
  times, with random chunk sizes.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from distblob import Descriptor, Digest, Registry
from distblob.descriptor import DEFAULT_MEDIA_TYPE
from distblob.errors import BlobUnknownError
from distblob.storage import paths
from distblob.storage.linked import LinkedBlobStore
from support.blobstore import files_under, payload, sha256, uploads_left
from support.goregistry import sha256_digest
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(120)

DATA = payload(300_000, seed=7)
DIGEST = sha256(DATA)


# -- 32 processes, one content ------------------------------------------------------------------


def _commit_in_process(root: str, index: int, barrier: Any, out: Any) -> None:
    """Create an upload, write DATA, wait for everyone, commit; report the outcome."""
    try:
        repo = Registry.filesystem(root).repository(f"proc{index % 8}/app")
        writer = repo.blobs.create()
        writer.write(DATA)
        barrier.wait(timeout=60)
        descriptor = writer.commit(Descriptor(digest=DIGEST))
        out.put((index, descriptor.to_json()))
    except BaseException as error:  # reported to the parent
        out.put((index, f"error: {error!r}"))


def test_32_processes_commit_the_same_content(tmp_path: Path) -> None:
    count = 32
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(count)
    out = context.Queue()
    procs = [
        context.Process(target=_commit_in_process, args=(str(tmp_path), i, barrier, out))
        for i in range(count)
    ]
    for proc in procs:
        proc.start()
    results = dict(out.get(timeout=90) for _ in range(count))
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    expected = Descriptor(DEFAULT_MEDIA_TYPE, len(DATA), DIGEST).to_json()
    assert results == dict.fromkeys(range(count), expected)
    registry = Registry.filesystem(tmp_path)
    assert files_under(registry.driver, paths.blobs_root()) == {paths.blob_data_path(DIGEST)}
    assert registry.blobs.get(DIGEST) == DATA
    for i in range(8):
        repo = registry.repository(f"proc{i}/app")
        assert repo.blobs.get(DIGEST) == DATA
        assert uploads_left(registry.driver, repo.name) == []


# -- many repositories at once ------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["native", "python"])
def test_uploads_into_many_repositories_at_once(tmp_path: Path, engine: str) -> None:
    registry = Registry.filesystem(tmp_path, engine=engine, fsync=False)
    count = 48
    blobs = [payload(random.Random(i).randrange(1, 200_000), seed=i) for i in range(count)]
    errors: list[BaseException] = []

    def upload(index: int) -> None:
        try:
            rng = random.Random(index)
            repo = registry.repository(f"many/r{index}")
            data = blobs[index]
            writer = repo.blobs.create()
            offset = 0
            while offset < len(data):
                n = rng.randrange(1, 70_000)
                writer.write(data[offset : offset + n])
                offset += n
                if rng.random() < 0.5:
                    writer.close()
                    writer = repo.blobs.resume(writer.id)
            writer.commit(Descriptor(digest=sha256(data)))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    for index, data in enumerate(blobs):
        repo = registry.repository(f"many/r{index}")
        assert hashlib.sha256(repo.blobs.get(sha256(data))).hexdigest() == sha256(data).encoded
        assert uploads_left(registry.driver, repo.name) == []
    assert len(files_under(registry.driver, paths.blobs_root())) == len({sha256(b) for b in blobs})


# -- a delete racing a commit -------------------------------------------------------------------
#
# commit = size/digest checks -> move the data into blobs/ (skipped if the blob is there) ->
# link into the repository -> remove the upload. Deletes come in two kinds:
#
# - a repository delete (DELETE /v2/<name>/blobs/<digest>, LinkedBlobStore.delete) removes the
#   repository's link only. Whatever the interleaving, the outcome is one of the two serial
#   orders: the delete before the commit (the blob stays linked) or after it (unlinked); the
#   data under blobs/ is never touched, so nothing is lost either way.
# - a blob delete (BlobStore.delete, garbage collection's verb) removes the data. If it lands
#   after the commit's existence check (which skipped the move because the blob was there) and
#   before the commit's final check (after the link), the commit puts the upload's data in
#   place after all: a commit that returns leaves its link naming a stored blob with the right
#   bytes. (Before this was fixed the commit returned success, left a link to nothing and removed
#   the only copy.) A blob delete after the commit returns is an ordinary delete.

COMMIT_STEPS = ("before_move", "before_link", "after_link")


def _hooked_commit(
    registry: Registry, repo_name: str, step: str, action: Callable[[], None]
) -> Descriptor:
    """Commit DATA into ``repo_name``, running ``action`` once at ``step`` of the commit."""
    repo = registry.repository(repo_name)
    writer = repo.blobs.create()
    writer.write(DATA)
    blobs = registry.blobs
    original_move = blobs.move_into_place
    original_link = LinkedBlobStore.link
    fired = False

    def fire(at: str) -> None:
        nonlocal fired
        if at == step and not fired:
            fired = True
            action()

    def move(source: str, digest: Digest, size: int | None = None) -> Any:
        fire("before_move")
        return original_move(source, digest, size)

    def link(self: LinkedBlobStore, digest: Digest, *, target: Digest | None = None) -> None:
        fire("before_link")
        original_link(self, digest, target=target)
        fire("after_link")

    blobs.move_into_place = move  # type: ignore[method-assign]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LinkedBlobStore, "link", link)
        try:
            return writer.commit(Descriptor(digest=DIGEST))
        finally:
            del blobs.move_into_place
            assert fired


@pytest.mark.parametrize("step", COMMIT_STEPS)
@pytest.mark.parametrize("already_stored", [False, True])
def test_repository_delete_racing_a_commit(tmp_path: Path, step: str, already_stored: bool) -> None:
    registry = Registry.filesystem(tmp_path, delete_enabled=True)
    repo = registry.repository("race/repo")
    if already_stored:
        repo.blobs.put(DATA)

    def delete() -> None:
        # Not linked yet: the delete is a 404 (BlobUnknownError), the commit then links.
        with contextlib.suppress(BlobUnknownError):
            repo.blobs.delete(DIGEST)

    descriptor = _hooked_commit(registry, "race/repo", step, delete)
    assert descriptor.digest == DIGEST
    # The data is never lost; the link follows the serial order the step implies.
    assert registry.blobs.get(DIGEST) == DATA
    deleted_last = step == "after_link"
    assert repo.blobs.exists(DIGEST) is not deleted_last
    if not deleted_last:
        assert repo.blobs.get(DIGEST) == DATA
    assert uploads_left(registry.driver, "race/repo") == []


@pytest.mark.parametrize("step", COMMIT_STEPS)
def test_blob_delete_racing_a_commit_loses_nothing(tmp_path: Path, step: str) -> None:
    registry = Registry.filesystem(tmp_path, delete_enabled=True)
    other = registry.repository("race/other")
    other.blobs.put(DATA)  # stored already: the commit skips its move

    descriptor = _hooked_commit(registry, "race/repo", step, lambda: registry.blobs.delete(DIGEST))
    assert descriptor.digest == DIGEST
    repo = registry.repository("race/repo")
    # The commit returned: its link names a stored blob with the right bytes (the delete landed
    # before the commit's final check, so the commit put its own copy in place).
    assert repo.blobs.get(DIGEST) == DATA
    assert files_under(registry.driver, paths.blobs_root()) == {paths.blob_data_path(DIGEST)}
    # A blob delete after the commit returned is an ordinary delete.
    registry.blobs.delete(DIGEST)
    with pytest.raises(BlobUnknownError):
        repo.blobs.stat(DIGEST)
    assert uploads_left(registry.driver, "race/repo") == []


def test_threads_racing_commits_and_repository_deletes(tmp_path: Path) -> None:
    """Free-running: commits and deletes of one digest in one repository, at once."""
    registry = Registry.filesystem(tmp_path, delete_enabled=True, fsync=False)
    errors: list[BaseException] = []

    def committer(index: int) -> None:
        try:
            for _ in range(10):
                writer = registry.repository("race/free").blobs.create()
                writer.write(DATA)
                assert writer.commit(Descriptor(digest=DIGEST)).digest == DIGEST
        except BaseException as error:
            errors.append(error)

    def deleter() -> None:
        repo = registry.repository("race/free")
        try:
            for _ in range(40):
                with contextlib.suppress(BlobUnknownError):
                    repo.blobs.delete(DIGEST)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=committer, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=deleter) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert registry.blobs.get(DIGEST) == DATA  # the data is never deleted by a repository delete
    assert uploads_left(registry.driver, "race/free") == []


# -- two server processes, one upload ---------------------------------------------------------


def test_two_servers_alternate_many_times_with_random_chunks(tmp_path: Path) -> None:
    rng = random.Random(99)
    data = rng.randbytes(3_000_000)
    with (
        DistblobServer(tmp_path) as first,
        DistblobServer(tmp_path, secret=first.secret) as second,
        first.client() as one,
        second.client() as two,
    ):
        clients = (one, two)
        location = one.start_upload("lib/alternate-many")
        offset = 0
        turn = 0
        while offset < len(data) - 1:
            size = min(rng.choice((1, 7, 4096, 65_537, rng.randrange(1, 300_000))), len(data))
            size = min(size, len(data) - 1 - offset) or 1
            location = clients[turn % 2].patch(location, data[offset : offset + size], offset)
            offset += size
            turn += 1
            # Every so often the other server reports the status: the size must agree.
            if turn % 7 == 0:
                location, end = clients[(turn + 1) % 2].upload_status(location)
                assert end == offset - 1
        assert turn >= 20
        clients[turn % 2].finish(location, sha256_digest(data), data[offset:])
        for client in clients:
            assert client.get_blob("lib/alternate-many", sha256_digest(data)).body == data
