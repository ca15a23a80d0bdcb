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

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distblob.digest import Digest
from distblob.errors import BlobUnknownError, DistblobError, PathNotFoundError
from distblob.storage import paths
from distblob.storage.cache import forget
from distblob.storage.driver import StorageDriver

if TYPE_CHECKING:
    from distblob.registry import Registry


class GCError(Exception):
    """Marking could not complete; nothing was deleted."""


@dataclass
class RepositoryLinks:
    """What one repository links, read from its directory."""

    name: str
    revisions: set[Digest] = field(default_factory=set)
    tags: dict[str, Digest | None] = field(default_factory=dict)  # tag -> current
    tag_index: dict[str, set[Digest]] = field(default_factory=dict)
    layers: dict[Digest, Digest | None] = field(default_factory=dict)  # path digest -> target


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


def read_repositories(driver: StorageDriver) -> dict[str, RepositoryLinks]:
    """Every repository's revisions, tags and layer links, from one walk."""
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
                repo.layers[path_digest] = paths.parse_link(driver.get_content(entry.path))
            elif rest[:2] == ["_manifests", "revisions"] and len(rest) == 5:
                repo.revisions.add(Digest.from_parts(rest[2], rest[3]))
            elif rest[:2] == ["_manifests", "tags"] and rest[3:] == ["current", "link"]:
                repo.tags[rest[2]] = paths.parse_link(driver.get_content(entry.path))
            elif rest[:2] == ["_manifests", "tags"] and len(rest) == 7 and rest[3] == "index":
                index = repo.tag_index.setdefault(rest[2], set())
                index.add(Digest.from_parts(rest[4], rest[5]))
        except (DistblobError, PathNotFoundError):
            continue  # not a path distribution would write, or gone meanwhile
    return repos


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
        if isinstance(descriptor, dict) and isinstance(descriptor.get("digest"), str):
            try:
                yield Digest(descriptor["digest"])
            except DistblobError:
                continue


def plan(
    registry: Registry, *, delete_untagged: bool = False, manifests_only: bool = False
) -> Plan:
    """Mark, and list what the sweep deletes; raises :class:`GCError` if a manifest is unusable.

    Reads only: a dry run is this call alone.
    """
    driver = registry.driver
    repos = read_repositories(driver)
    result = Plan()
    marked = result.marked
    untagged: list[tuple[str, Digest]] = []
    # Manifests whose references were marked, per repository. Kept apart from ``marked``: a
    # child marked by another repository's walk (where it is no revision, so it was not walked
    # there) must still be walked here. distribution's garbage-collect skips it, which with
    # --delete-untagged deletes the layers of a tagged multi-arch image.
    walked: set[tuple[str, Digest]] = set()

    def mark_manifest(repo: RepositoryLinks, digest: Digest) -> None:
        pending = [digest]
        while pending:
            current = pending.pop()
            if (repo.name, current) in walked:
                continue
            walked.add((repo.name, current))
            try:
                raw = driver.get_content(paths.blob_data_path(current))
                manifest = json.loads(raw)
            except (PathNotFoundError, ValueError) as exc:
                raise GCError(f"{repo.name}@{current}: cannot read the manifest: {exc}") from None
            for child in references(manifest):
                marked.add(child)
                if child in repo.revisions:
                    pending.append(child)

    for name in sorted(repos):
        repo = repos[name]
        tagged = {d for d in repo.tags.values() if d is not None}
        for digest in sorted(repo.revisions):
            if delete_untagged and digest not in tagged:
                untagged.append((name, digest))
                continue
            marked.add(digest)
            mark_manifest(repo, digest)
        if not manifests_only:
            for path_digest, target in repo.layers.items():
                marked.add(path_digest)
                if target is not None:
                    marked.add(target)

    result.manifests = [(name, d) for name, d in untagged if d not in marked]
    result.blobs = sorted(d for d in registry.blobs.enumerate() if d not in marked)
    if manifests_only:
        for name in sorted(repos):
            for path_digest, target in sorted(repos[name].layers.items()):
                if path_digest not in marked and (target is None or target not in marked):
                    result.layer_links.append((name, path_digest))
    return result


def sweep(registry: Registry, result: Plan) -> int:
    """Delete what :func:`plan` listed, clearing each deletion from the descriptor cache.

    Returns how many clears the cache still holds unapplied (a Redis cache that was
    unreachable keeps them in storage, for the next registry to start or to see Redis come back
    to apply); 0 when every entry of what was deleted is gone.
    """
    driver, cache = registry.driver, registry.descriptor_cache
    # Tag index entries as they are now: the plan names revisions, not their index entries.
    repos = read_repositories(driver)
    for name, digest in result.manifests:
        for tag, index in repos[name].tag_index.items():
            if digest in index:
                _delete_link(driver, paths.manifest_tag_index_entry_link_path(name, tag, digest))
        _delete_link(driver, paths.manifest_revision_link_path(name, digest))
        forget(cache.repository_scoped(name), digest)
    # Layer links before the data they name: a registry whose in-memory cache trusts an entry
    # while the link is there (distblob.storage.linked) never sees a link to data that is gone.
    # The storage primitives below clear the cache after each removal, gone already or not; a
    # shared (Redis) cache must not go on answering for what is deleted.
    for name, digest in result.layer_links:
        with contextlib.suppress(BlobUnknownError):
            registry.repository(name).blobs.unlink(digest)
    for digest in result.blobs:
        with contextlib.suppress(BlobUnknownError):
            registry.blobs.remove(digest)
    pending: int = getattr(cache, "pending", 0)
    return pending


def _delete_link(driver: StorageDriver, link: str) -> None:
    """Remove a link's directory; gone already is fine."""
    with contextlib.suppress(PathNotFoundError):
        driver.delete(link.rsplit("/", 1)[0])


__all__ = ["GCError", "Plan", "RepositoryLinks", "plan", "read_repositories", "references", "sweep"]
