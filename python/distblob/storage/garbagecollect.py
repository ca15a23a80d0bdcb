"""Garbage collection: mark what the registry's repositories reference, sweep the other blobs.

distribution's ``MarkAndSweep`` (``registry/storage/garbagecollect.go``), run by ``distblob gc``
(:mod:`distblob.commands.gc`), which prints :func:`plan`'s result and hands it to :func:`sweep`.

Mark: for every repository, every manifest revision is marked with what it references
(``config``, ``layers``, ``blobs``, and an index's ``manifests``, which are followed recursively
when they are revisions of the repository too). Manifests are read straight from storage:
revision link path, blob data, JSON. With ``delete_untagged`` a revision that no tag's
``current`` link names is not a root; unless something marked references it, its revision link
and its tag index entries are removed, as distribution's ``RemoveManifest`` does.

One deliberate difference: distribution marks from manifests only, then deletes every other blob
and the layer links to it. Blobs that ``distblob ingest`` stored are linked into a repository
without any manifest, so by default every blob linked in a repository's ``_layers`` is a root
too, and layer links stay. ``manifests_only`` gives distribution's exact behaviour.

One fix: distribution skips a reference already marked, even one marked by another repository's
walk, where it was not a revision and so was not followed. With ``delete_untagged`` that deletes
the layers of a multi-arch image whose child manifest is untagged in the repository that tags the
index. Here each repository follows its own revisions whatever is already marked.

Sweep: every blob not marked is deleted (its ``blobs/<alg>/<hh>/<hex>`` directory), after the
layer links ``manifests_only`` removes, so no link outlives the data it names; each deletion is
cleared from the blob descriptor cache, a shared (Redis) one included. A manifest that cannot be
read stops the collection before anything is deleted (:class:`GCError`), since whatever it
references cannot be marked. As with distribution, run it while nothing pushes to the registry.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from distblob import _native
from distblob.digest import ALGORITHMS, Digest
from distblob.errors import DistblobError, PathNotFoundError
from distblob.storage import paths
from distblob.storage.cache import forget
from distblob.storage.driver import FileInfo, StorageDriver
from distblob.storage.gcscan import (
    RepositoryLinks,
    local_file,
    read_repositories,
    stored_blobs,
)

if TYPE_CHECKING:
    from distblob.registry import Registry


class GCError(Exception):
    """Marking could not complete; nothing was deleted."""


@dataclass
class Plan:
    """What a collection marked and what its sweep deletes (a dry run's whole answer)."""

    #: Every digest marked: manifests, what they reference and (unless ``manifests_only``)
    #: what layer links name.
    marked: set[Digest] = field(default_factory=set)
    #: The blobs to delete, sorted.
    blobs: list[Digest] = field(default_factory=list)
    #: The untagged manifest revisions to remove, as ``(repository, digest)``.
    manifests: list[tuple[str, Digest]] = field(default_factory=list)
    #: The layer links to remove (``manifests_only`` only), as ``(repository, digest)``.
    layer_links: list[tuple[str, Digest]] = field(default_factory=list)
    #: The size of each blob to delete.
    sizes: dict[Digest, int] = field(default_factory=dict)
    #: Unmarked blobs, revisions and links kept because they are younger than the grace period.
    young: int = 0
    #: Manifests read while marking, and the blobs stored when the sweep was planned.
    manifests_read: int = 0
    stored: int = 0
    #: Seconds spent listing repositories, reading manifests and listing blobs.
    times: dict[str, float] = field(default_factory=dict)
    #: The repositories as read (the online sweep removes tag index entries from them).
    repositories: dict[str, RepositoryLinks] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        """The bytes the blobs to delete hold."""
        return sum(self.sizes.values())


def references(manifest: Any) -> Iterator[Digest]:
    """The digests a manifest (image, index, artifact) references."""
    if not isinstance(manifest, dict):
        return
    config = manifest.get("config")
    descriptors = [config] if isinstance(config, dict) else []
    for key in ("layers", "manifests", "blobs"):
        value = manifest.get(key)
        if isinstance(value, list):
            descriptors.extend(value)
    for descriptor in descriptors:
        if isinstance(descriptor, dict) and isinstance(value := descriptor.get("digest"), str):
            if _SHA256.fullmatch(value):
                # The common case, checked as Digest checks it in one match.
                yield str.__new__(Digest, value)
                continue
            try:
                yield Digest(value)
            except DistblobError:
                continue


#: A canonical digest, as :class:`~distblob.digest.Digest` accepts it.
_SHA256: Final = re.compile(r"sha256:[0-9a-f]{64}")


def read_manifests(
    driver: StorageDriver, digests: Iterable[Digest], workers: int
) -> dict[Digest, list[Digest] | str]:
    """What each manifest references, read ``workers`` at a time; an error's text for one
    that cannot be read."""

    ordered = sorted(set(digests))
    local = driver.local_path(paths.ROOT)
    if local is not None:
        # On a local filesystem the native core reads and parses them, in parallel.
        files = [local_file(local, paths.blob_data_path(d)) for d in ordered]
        rows = _native.read_references(files, sorted(ALGORITHMS.items()))
        return {
            digest: [str.__new__(Digest, d) for d in found] if found is not None else str(why)
            for digest, (found, why) in zip(ordered, rows, strict=True)
        }

    def read(digest: Digest) -> list[Digest] | str:
        try:
            raw = driver.get_content(paths.blob_data_path(digest))
            return list(references(json.loads(raw)))
        except (PathNotFoundError, ValueError) as exc:
            return f"cannot read the manifest: {exc}"

    if workers <= 1 or len(ordered) < 64:
        return {digest: read(digest) for digest in ordered}
    with ThreadPoolExecutor(workers, thread_name_prefix="gc-mark") as pool:
        return dict(zip(ordered, pool.map(read, ordered), strict=True))


def plan(
    registry: Registry,
    *,
    delete_untagged: bool = False,
    manifests_only: bool = False,
    cutoff: float | None = None,
    workers: int = 1,
) -> Plan:
    """Mark, and list what the sweep deletes; raises :class:`GCError` if a manifest is unusable.

    Reads only: a dry run is this call alone. With ``cutoff`` (a time of the storage's clock),
    whatever was written after it is young, and kept whether marked or not: revision links
    (which then mark like tagged ones), layer links (which then mark their blobs, even with
    ``manifests_only``) and blobs. ``workers`` threads read manifests and list at once.
    """
    driver = registry.driver

    def young(when: float) -> bool:
        # At the cutoff counts as young: an object store's times are whole seconds, so one
        # written just after the collection started can show the start's own second.
        return cutoff is not None and when >= cutoff

    started = time.monotonic()
    # Link times decide only what a grace period keeps: layer links with manifests_only,
    # revisions with delete_untagged (otherwise every one is a root anyway).
    times = cutoff is not None and (manifests_only or delete_untagged)
    local = driver.local_path(paths.ROOT) is not None
    if local:
        # Directory reads on a local filesystem: Python's own work, which threads would only
        # contend for.
        repos = read_repositories(driver, times=times)
        stored = stored_blobs(driver)
    else:
        with ThreadPoolExecutor(2, thread_name_prefix="gc-list") as pool:
            # The two listings overlap: most of their time is waiting on storage.
            blobs_future = pool.submit(stored_blobs, driver)
            repos = read_repositories(driver, times=times)
            stored = blobs_future.result()
    listed = time.monotonic()
    result = Plan(repositories=repos, stored=len(stored))
    result.times["list"] = time.monotonic() - started
    marked = result.marked

    roots: dict[str, list[Digest]] = {}
    untagged: list[tuple[str, Digest]] = []
    for name in sorted(repos):
        repo = repos[name]
        tagged = {d for d in repo.tags.values() if d is not None}
        for digest in sorted(repo.revisions):
            if delete_untagged and digest not in tagged:
                if not young(repo.revision_times.get(digest, 0.0)):
                    untagged.append((name, digest))
                    continue
                result.young += 1
            roots.setdefault(name, []).append(digest)
        for path_digest, target in repo.layers.items():
            if manifests_only and not young(repo.layer_times.get(path_digest, 0.0)):
                continue
            if manifests_only:
                result.young += 1
            marked.add(path_digest)
            if target is not None:
                marked.add(target)

    # Every revision of every repository is read once (a digest names the same bytes
    # wherever it is a revision), in parallel; marking then walks what they reference.
    wanted = {d for repo in repos.values() for d in repo.revisions}
    read = read_manifests(driver, wanted, workers)
    result.manifests_read = len(read)
    result.times["read"] = time.monotonic() - listed
    # Manifests whose references were marked, per repository. Kept apart from ``marked``: a
    # child marked by another repository's walk (where it is no revision, so it was not walked
    # there) must still be walked here. distribution's garbage-collect skips it, which with
    # --delete-untagged deletes the layers of a tagged multi-arch image.
    walked: set[tuple[str, Digest]] = set()
    for name, digests in roots.items():
        repo = repos[name]
        pending = list(digests)
        marked.update(digests)
        while pending:
            current = pending.pop()
            if (name, current) in walked:
                continue
            walked.add((name, current))
            children = read.get(current)
            if children is None:  # a child revision that appeared after the listing
                children = read_manifests(driver, [current], 1)[current]
            if isinstance(children, str):
                raise GCError(f"{name}@{current}: {children}")
            for child in children:
                marked.add(child)
                if child in repo.revisions:
                    pending.append(child)

    result.manifests = [(name, d) for name, d in untagged if d not in marked]
    kept = set(marked)
    unmarked = [(d, blob) for d, blob in stored.items() if d not in marked]
    infos: Iterable[FileInfo | None]
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="gc-stat") as pool:
        if local:  # cheap enough in turn
            infos = [blob.info(driver, digest) for digest, blob in unmarked]
        else:  # stats over the network overlap
            infos = pool.map(lambda item: item[1].info(driver, item[0]), unmarked)
        for (digest, _), info in zip(unmarked, infos, strict=True):
            if info is None:
                continue  # gone since the listing
            if young(info.mod_time):
                result.young += 1
                kept.add(digest)
                continue
            result.blobs.append(digest)
            result.sizes[digest] = info.size
    result.blobs.sort()
    if manifests_only:
        for name in sorted(repos):
            repo = repos[name]
            for path_digest, target in sorted(repo.layers.items()):
                if path_digest in kept or (target is not None and target in kept):
                    continue
                result.layer_links.append((name, path_digest))
    return result


@dataclass
class Removed:
    """What :func:`remove` deleted (as the plan listed it)."""

    blobs: int = 0
    bytes: int = 0
    manifests: int = 0
    layer_links: int = 0

    def add(self, other: Removed) -> None:
        self.blobs += other.blobs
        self.bytes += other.bytes
        self.manifests += other.manifests
        self.layer_links += other.layer_links


def remove(registry: Registry, result: Plan, digests: Iterable[Digest]) -> Removed:
    """Delete what ``result`` lists for ``digests``: untagged revisions (with their tag index
    entries), then layer links, then blob data, each kind in one bulk delete
    (:meth:`~distblob.storage.driver.StorageDriver.delete_files`), clearing every deletion
    from the descriptor caches after it.

    Links go before the data they name: a registry whose in-memory cache trusts an entry while
    the link is there (distblob.storage.linked) never sees a link to data that is gone; a
    shared (Redis) cache must not go on answering for what is deleted.
    """
    wanted = set(digests)
    driver, cache = registry.driver, registry.descriptor_cache
    done = Removed()
    files: list[str] = []
    revisions = [(name, d) for name, d in result.manifests if d in wanted]
    for name, digest in revisions:
        repo = result.repositories.get(name)
        for tag, index in repo.tag_index.items() if repo is not None else ():
            if digest in index:
                files.append(paths.manifest_tag_index_entry_link_path(name, tag, digest))
        files.append(paths.manifest_revision_link_path(name, digest))
    driver.delete_files(files)
    for name, digest in revisions:
        registry.descriptors.clear(name, str(digest))
    done.manifests = len(revisions)
    links = [(name, d) for name, d in result.layer_links if d in wanted]
    driver.delete_files([paths.layer_link_path(name, d) for name, d in links])
    for name, digest in links:
        forget(cache.repository_scoped(name), digest)
    done.layer_links = len(links)
    blobs = [d for d in result.blobs if d in wanted]
    driver.delete_files([paths.blob_data_path(d) for d in blobs])
    for digest in blobs:
        forget(cache, digest)
    done.blobs = len(blobs)
    done.bytes = sum(result.sizes.get(d, 0) for d in blobs)
    return done


def sweep(registry: Registry, result: Plan) -> int:
    """Delete everything :func:`plan` listed (:func:`remove`), offline.

    Returns how many clears the cache still holds unapplied (a Redis cache that was
    unreachable keeps them in storage, for the next registry to start or to see Redis come back
    to apply); 0 when every entry of what was deleted is gone.
    """
    everything = {d for _, d in result.manifests} | {d for _, d in result.layer_links}
    remove(registry, result, everything | set(result.blobs))
    pending: int = getattr(registry.descriptor_cache, "pending", 0)
    return pending


__all__ = [
    "GCError",
    "Plan",
    "Removed",
    "RepositoryLinks",
    "plan",
    "read_manifests",
    "read_repositories",
    "references",
    "remove",
    "stored_blobs",
    "sweep",
]
