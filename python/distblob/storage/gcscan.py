"""What a garbage collection reads: every repository's links, and every stored blob.

Through the driver (:func:`read_repositories`, :func:`stored_blobs`): one walk each, which on an
object store is a paginated listing that carries every object's size and time. On a local
filesystem the walk would stat every entry (several hundred thousand for a store of 100,000
blobs), so :func:`scan_repositories` and :func:`scan_blobs` read directories only, in
parallel, in the native core (``rust/scan.rs``: ``getdents``, whose entries say whether they are
directories without a stat), and stat only what the collection asks about: link times for an
online collection, and the size and time of the blobs it is about to delete
(:meth:`StoredBlob.info`).

A directory in the layout counts as its link (``_layers/sha256/<hex>/`` as that layer's link,
``_manifests/revisions/sha256/<hex>/`` as that revision): a directory whose ``link`` is missing
(being written, being deleted) then marks a little more, never less, and deleting a link that
is not there is nothing.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from distblob import _native
from distblob.digest import ALGORITHMS, CANONICAL, Digest
from distblob.errors import DistblobError, PathNotFoundError
from distblob.storage import paths
from distblob.storage.driver import FileInfo, StorageDriver


@dataclass
class RepositoryLinks:
    """What one repository links, read from its directory."""

    name: str
    revisions: set[Digest] = field(default_factory=set)
    tags: dict[str, Digest | None] = field(default_factory=dict)  # tag -> current
    tag_index: dict[str, set[Digest]] = field(default_factory=dict)
    layers: dict[Digest, Digest | None] = field(default_factory=dict)  # path digest -> target
    #: When each revision link and each layer link was written (the storage's time).
    revision_times: dict[Digest, float] = field(default_factory=dict)
    layer_times: dict[Digest, float] = field(default_factory=dict)


def read_repositories(driver: StorageDriver, *, times: bool = True) -> dict[str, RepositoryLinks]:
    """Every repository's revisions, tags and layer links, from one walk (link times too), or
    from :func:`scan_repositories` on a local filesystem (link times only with ``times``)."""
    local = driver.local_path(paths.repositories_root())
    if local is not None:
        return scan_repositories(local, times=times)
    return walk_repositories(driver)


def walk_repositories(driver: StorageDriver) -> dict[str, RepositoryLinks]:
    """:func:`read_repositories` through the driver's walk, whatever the driver."""
    root = paths.repositories_root()
    try:
        entries = list(driver.walk(root))
    except PathNotFoundError:
        return {}
    repos: dict[str, RepositoryLinks] = {}
    for entry in entries:
        if entry.is_dir or not entry.path.endswith("/link"):
            continue
        parts = entry.path[len(root) + 1 :].split("/")
        marker = next((i for i, part in enumerate(parts) if part.startswith("_")), None)
        if not marker:
            continue
        repo = repos.setdefault("/".join(parts[:marker]), RepositoryLinks("/".join(parts[:marker])))
        rest = parts[marker:]
        try:
            if rest[0] == "_layers" and len(rest) == 4:
                path_digest = Digest.from_parts(rest[1], rest[2])
                if path_digest.algorithm == CANONICAL:
                    # A link under a canonical digest names that digest: distribution and
                    # distblob write no other (an alias names its canonical blob from another
                    # algorithm's path). Not reading it saves a read per layer.
                    repo.layers[path_digest] = path_digest
                else:
                    repo.layers[path_digest] = paths.parse_link(driver.get_content(entry.path))
                repo.layer_times[path_digest] = entry.mod_time
            elif rest[:2] == ["_manifests", "revisions"] and len(rest) == 5:
                digest = Digest.from_parts(rest[2], rest[3])
                repo.revisions.add(digest)
                repo.revision_times[digest] = entry.mod_time
            elif rest[:2] == ["_manifests", "tags"] and rest[3:] == ["current", "link"]:
                repo.tags[rest[2]] = paths.parse_link(driver.get_content(entry.path))
            elif rest[:2] == ["_manifests", "tags"] and len(rest) == 7 and rest[3] == "index":
                index = repo.tag_index.setdefault(rest[2], set())
                index.add(Digest.from_parts(rest[4], rest[5]))
        except (DistblobError, PathNotFoundError):
            continue  # not a path distribution would write, or gone meanwhile
    return repos


def stored_blobs(driver: StorageDriver) -> dict[Digest, StoredBlob]:
    """Every stored blob, from one walk of ``blobs/`` (with its size and time), or from
    :func:`scan_blobs` on a local filesystem."""
    local = driver.local_path(paths.blobs_root())
    if local is not None:
        return scan_blobs(local)
    return walk_blobs(driver)


def walk_blobs(driver: StorageDriver) -> dict[Digest, StoredBlob]:
    """:func:`stored_blobs` through the driver's walk, whatever the driver."""
    try:
        entries = driver.walk(paths.blobs_root())
        found: dict[Digest, StoredBlob] = {}
        for info in entries:
            if info.is_dir or not info.path.endswith("/data"):
                continue
            parts = info.path.split("/")
            with contextlib.suppress(DistblobError):
                found[Digest.from_parts(parts[-4], parts[-2])] = StoredBlob(info)
        return found
    except PathNotFoundError:
        return {}


def local_file(local: str, path: str) -> str:
    """The OS path of the layout's ``path`` when ``local`` is the OS path of the layout's root
    (:data:`~distblob.storage.paths.ROOT`, checked once by the driver): no confinement check
    per file, for a collection's hundreds of thousands."""
    return local + path[len(paths.ROOT) :]


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """Where to learn a stored blob's size and time: from the listing (``known``), from the
    local layout whose root is ``local`` (one instance shared by every blob of a scan), or
    from the driver."""

    known: FileInfo | None = None
    local: str | None = None

    def info(self, driver: StorageDriver, digest: Digest) -> FileInfo | None:
        """The data's size and time; ``None`` if it is gone."""
        if self.known is not None:
            return self.known
        path = paths.blob_data_path(digest)
        try:
            if self.local is not None:
                found = os.stat(local_file(self.local, path))
                return FileInfo(path, found.st_size, found.st_mtime, False)
            return driver.stat(path)
        except (PathNotFoundError, FileNotFoundError, NotADirectoryError):
            return None


def _algorithms() -> list[tuple[str, int]]:
    return sorted(ALGORITHMS.items())


def _digest(value: str) -> Digest:
    # Checked by the scan as Digest checks it (a known algorithm, lowercase hex of its length).
    return str.__new__(Digest, value)


def scan_repositories(os_root: str, *, times: bool) -> dict[str, RepositoryLinks]:
    """:func:`read_repositories` for a local ``repositories`` directory, by the native scan
    (directory reads in parallel, see the module docstring); link times only with ``times``."""
    repos: dict[str, RepositoryLinks] = {}
    rows = _native.scan_repositories(os_root, _algorithms(), CANONICAL, times)
    for name, layers, revisions, tags in rows:
        repo = repos[name] = RepositoryLinks(name)
        for value, when, content in layers:
            digest = _digest(value)
            if content is None:
                repo.layers[digest] = digest  # a canonical link names itself
            else:
                try:
                    repo.layers[digest] = paths.parse_link(content.encode())
                except DistblobError:
                    continue
            if when is not None:
                repo.layer_times[digest] = when
        for value, when, _ in revisions:
            digest = _digest(value)
            repo.revisions.add(digest)
            if when is not None:
                repo.revision_times[digest] = when
        for tag, current, index in tags:
            if current is not None:
                try:
                    repo.tags[tag] = paths.parse_link(current.encode())
                except DistblobError:
                    repo.tags[tag] = None
            if index:
                repo.tag_index[tag] = {_digest(value) for value in index}
    return repos


def scan_blobs(os_root: str) -> dict[Digest, StoredBlob]:
    """:func:`stored_blobs` for a local ``blobs`` directory, by the native scan; sizes and times
    are left to :meth:`StoredBlob.info`."""
    # The layout's root, for local_file: os_root is its blobs directory.
    where = StoredBlob(local=os_root.removesuffix(paths.blobs_root()[len(paths.ROOT) :]))
    rows = _native.scan_blobs(os_root, _algorithms())
    return dict.fromkeys((_digest(f"{a}:{encoded}") for a, encoded in rows), where)


__all__ = [
    "RepositoryLinks",
    "StoredBlob",
    "local_file",
    "read_repositories",
    "scan_blobs",
    "scan_repositories",
    "stored_blobs",
    "walk_blobs",
    "walk_repositories",
]
