"""Helpers of the blob store conformance suite (``tests/test_blobstore*.py``).

They look at storage only through the driver (or, for the filesystem, the OS), so that a test can
say "nothing under ``blobs/`` changed" or "nothing was written outside the root" the same way for
every engine and driver.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import random
from collections.abc import Iterator

from distblob import Digest, Repository
from distblob.errors import PathNotFoundError
from distblob.interfaces import FileRegion
from distblob.storage import paths
from distblob.storage.driver import FilesystemDriver, StorageDriver

#: The digest of no bytes at all.
EMPTY_SHA256 = Digest("sha256:" + hashlib.sha256(b"").hexdigest())


def payload(size: int, seed: int = 0) -> bytes:
    """``size`` reproducible pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> Digest:
    """hashlib's SHA-256 of ``data``, as a digest (the reference, not the code under test)."""
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


def uploads_left(driver: StorageDriver, repository: str) -> list[str]:
    """The upload directories left in ``repository`` (none also when an object store dropped
    the emptied ``_uploads`` directory)."""
    try:
        return driver.list(paths.uploads_root(repository))
    except PathNotFoundError:
        if driver.keeps_empty_directories:
            raise
        return []


def tree(driver: StorageDriver, root: str = "/") -> dict[str, int]:
    """Every path below ``root`` with its size (``-1`` for a directory); empty if ``root`` is
    missing."""
    try:
        return {info.path: -1 if info.is_dir else info.size for info in driver.walk(root)}
    except PathNotFoundError:
        return {}


def blob_tree(driver: StorageDriver) -> dict[str, int]:
    """Everything under ``blobs/``."""
    return tree(driver, paths.blobs_root())


def files_under(driver: StorageDriver, root: str) -> set[str]:
    """The files (not directories) below ``root``."""
    return {path for path, size in tree(driver, root).items() if size >= 0}


def surroundings(tmp_path: pathlib.Path, *, skip: pathlib.Path) -> dict[str, tuple[int, int]]:
    """What lies around a driver root at ``skip`` inside ``tmp_path``: every path below
    ``tmp_path`` except the root's tree, and every entry of ``tmp_path``'s parent (pytest's
    directory of this session's tests), each with its size and modification time.

    A directory's modification time changes when an entry is added to or removed from it, so a
    file written anywhere in ``tmp_path``, beside it, or directly in a sibling test's directory
    shows. (The siblings are not walked: that would cost as much as every test before.)
    """
    out: dict[str, tuple[int, int]] = {}

    def note(path: str) -> None:
        info = os.lstat(path)
        out[path] = (info.st_size, info.st_mtime_ns)

    for entry in os.scandir(tmp_path.parent):
        note(entry.path)
    for parent, dirnames, filenames in os.walk(tmp_path):
        dirnames[:] = [name for name in dirnames if pathlib.Path(parent, name) != skip]
        for name in (*dirnames, *filenames):
            note(os.path.join(parent, name))
    return out


@contextlib.contextmanager
def unchanged(driver: StorageDriver, tmp_path: pathlib.Path) -> Iterator[None]:
    """Assert that the block changes nothing the driver stores and, for a filesystem driver,
    nothing outside its root (see :func:`surroundings`)."""
    root = pathlib.Path(driver.root) if isinstance(driver, FilesystemDriver) else tmp_path / "root"
    before = tree(driver)
    before_outside = surroundings(tmp_path, skip=root)
    yield
    assert tree(driver) == before
    assert surroundings(tmp_path, skip=root) == before_outside


def read_region(driver: StorageDriver, region: FileRegion) -> bytes:
    """The bytes a serve plan's region names, read through the driver (and, when the region
    gives one, through its local path too, which must agree)."""
    with driver.reader(region.path, region.offset) as reader:
        data = reader.read(region.length)
    if region.local_path is not None:
        with open(region.local_path, "rb") as file:
            file.seek(region.offset)
            assert file.read(region.length) == data
    return data


def upload_dir(repo: Repository, upload_id: str) -> str:
    return paths.upload_dir_path(repo.name, upload_id)


def state_offsets(
    driver: StorageDriver, repo: Repository, upload_id: str, algorithm: str
) -> dict[int, bytes]:
    """The hash states saved for an upload, by offset."""
    root = paths.upload_hash_states_root(repo.name, upload_id, algorithm)
    try:
        names = driver.list(root)
    except PathNotFoundError:
        return {}
    return {int(name.rsplit("/", 1)[1]): driver.get_content(name) for name in names}


__all__ = [
    "EMPTY_SHA256",
    "blob_tree",
    "files_under",
    "payload",
    "read_region",
    "sha256",
    "state_offsets",
    "surroundings",
    "tree",
    "unchanged",
    "upload_dir",
]
