"""What a garbage collection reads: every repository's links, and every stored blob.

Through the driver (:func:`read_repositories`, :func:`stored_blobs`): one walk each, which on an
object store is a paginated listing that carries every object's size and time. On a local
filesystem the walk would stat every entry (several hundred thousand for a store of 100,000
blobs), so :func:`scan_repositories` and :func:`scan_blobs` read directories only
(``os.scandir``, whose entries know whether they are directories without a stat), several at
once, and stat only what the collection asks about: link times for an online collection, and
the size and time of the blobs it is about to delete (:meth:`StoredBlob.info`).

A directory in the layout counts as its link (``_layers/sha256/<hex>/`` as that layer's link,
``_manifests/revisions/sha256/<hex>/`` as that revision): a directory whose ``link`` is missing
(being written, being deleted) then marks a little more, never less, and deleting a link that
is not there is nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from distblob.digest import CANONICAL, Digest
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
        return scan_blobs(local, paths.blobs_root())
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
                found[Digest.from_parts(parts[-4], parts[-2])] = StoredBlob(info.path, info)
        return found
    except PathNotFoundError:
        return {}


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A stored blob: its data's path, and its size and time when the listing gave them."""

    path: str
    known: FileInfo | None = None

    def info(self, driver: StorageDriver) -> FileInfo | None:
        """The data's size and time (a stat unless the listing gave them); ``None`` if gone."""
        if self.known is not None:
            return self.known
        try:
            return driver.stat(self.path)
        except PathNotFoundError:
            return None


def scan_repositories(os_root: str, *, times: bool, workers: int = 4) -> dict[str, RepositoryLinks]:
    """:func:`read_repositories` for a local ``repositories`` directory, by directory reads
    (see the module docstring); link times only with ``times``."""
    try:
        top = [e for e in os.scandir(os_root) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return {}
    repos: dict[str, RepositoryLinks] = {}

    def scan(entry: os.DirEntry[str]) -> list[RepositoryLinks]:
        found: list[RepositoryLinks] = []
        _scan_tree(entry.path, entry.name, times, found)
        return found

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="gc-scan") as pool:
        for found in pool.map(scan, top):
            for repo in found:
                repos[repo.name] = repo
    return repos


def _dirs(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return [e for e in entries if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _scan_tree(path: str, name: str, times: bool, found: list[RepositoryLinks]) -> None:
    """The repository at ``path`` (if it is one) and those below it."""
    children = _dirs(path)
    if any(child.name in ("_layers", "_manifests", "_uploads") for child in children):
        repo = RepositoryLinks(name)
        found.append(repo)
        for child in children:
            if child.name == "_layers":
                _scan_layers(child.path, repo, times)
            elif child.name == "_manifests":
                _scan_manifests(child.path, repo, times)
    for child in children:
        if not child.name.startswith("_"):
            _scan_tree(child.path, f"{name}/{child.name}", times, found)


def _link_digests(path: str) -> Iterator[tuple[Digest, str]]:
    """``<algorithm>/<hex>/`` directories below ``path``: each digest and its link's path."""
    for algorithm in _dirs(path):
        for encoded in _dirs(algorithm.path):
            with contextlib.suppress(DistblobError):
                yield Digest.from_parts(algorithm.name, encoded.name), f"{encoded.path}/link"


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _scan_layers(path: str, repo: RepositoryLinks, times: bool) -> None:
    for digest, link in _link_digests(path):
        if digest.algorithm == CANONICAL:
            repo.layers[digest] = digest  # see read_repositories
        else:
            try:
                with open(link, "rb") as file:
                    repo.layers[digest] = paths.parse_link(file.read())
            except OSError:
                continue
        if times and (when := _mtime(link)) is not None:
            repo.layer_times[digest] = when


def _scan_manifests(path: str, repo: RepositoryLinks, times: bool) -> None:
    for digest, link in _link_digests(f"{path}/revisions"):
        repo.revisions.add(digest)
        if times and (when := _mtime(link)) is not None:
            repo.revision_times[digest] = when
    for tag in _dirs(f"{path}/tags"):
        try:
            with open(f"{tag.path}/current/link", "rb") as file:
                repo.tags[tag.name] = paths.parse_link(file.read())
        except OSError:
            pass
        except DistblobError:
            repo.tags[tag.name] = None
        index = {digest for digest, _ in _link_digests(f"{tag.path}/index")}
        if index:
            repo.tag_index[tag.name] = index


def scan_blobs(os_root: str, root: str, *, workers: int = 4) -> dict[Digest, StoredBlob]:
    """:func:`stored_blobs` for a local ``blobs`` directory (``root`` its storage path): every
    ``<algorithm>/<hh>/<hex>/`` directory, by directory reads; sizes and times are left to
    :meth:`StoredBlob.info`."""
    found: dict[Digest, StoredBlob] = {}
    shards = [(a, s) for a in _dirs(os_root) for s in _dirs(a.path)]

    def scan(shard: tuple[os.DirEntry[str], os.DirEntry[str]]) -> list[tuple[Digest, str]]:
        algorithm, prefix = shard
        blobs = []
        for encoded in _dirs(prefix.path):
            with contextlib.suppress(DistblobError):
                digest = Digest.from_parts(algorithm.name, encoded.name)
                blobs.append((digest, f"{root}/{algorithm.name}/{prefix.name}/{encoded.name}/data"))
        return blobs

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="gc-scan") as pool:
        for blobs in pool.map(scan, shards):
            for digest, path in blobs:
                found[digest] = StoredBlob(path)
    return found


__all__ = [
    "RepositoryLinks",
    "StoredBlob",
    "read_repositories",
    "scan_blobs",
    "scan_repositories",
    "stored_blobs",
    "walk_blobs",
    "walk_repositories",
]
