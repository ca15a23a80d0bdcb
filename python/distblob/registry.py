"""``Registry`` and ``Repository``: a storage driver, an engine and the options, in one place.

Names are validated here (:meth:`Registry.repository`), so nothing below sees an unchecked one.
"""

from __future__ import annotations

import os

from distblob.errors import NameInvalidError, PathNotFoundError
from distblob.storage import paths
from distblob.storage.blobs import BlobStore, parse_digest
from distblob.storage.cache import BlobDescriptorCache, InMemoryBlobDescriptorCache
from distblob.storage.collection import Fence
from distblob.storage.driver import FilesystemDriver, InMemoryDriver, StorageDriver
from distblob.storage.engines import Engine, get_engine
from distblob.storage.leases import RedisUploadLeases
from distblob.storage.linked import DescriptorCache, LinkedBlobStore
from distblob.storage.manifests import ManifestStore
from distblob.storage.validation import ManifestValidation


class Registry:
    """A blob registry over one storage driver.

    - ``engine``: ``"native"`` (the Rust write path, default) or ``"python"`` (the reference),
      or an :class:`~distblob.storage.engines.Engine` instance.
    - ``resumable_digests``: save the upload's hash state (of its algorithm) on every writer
      close and resume from it;
      off, no states are written or read and resuming rehashes the data.
    - ``delete_enabled``: allow blob deletes (distribution's ``storage.delete.enabled``).
    - ``fsync``: sync data and directories per blob so a committed blob survives a crash. Off,
      nothing is synced per blob and :meth:`sync` makes everything durable at once.
    - ``redirect``: let drivers that can answer blob GETs with a redirect URL.
    - ``descriptor_cache``: the blob descriptor cache (:mod:`distblob.storage.cache`); by
      default a new :class:`~distblob.storage.cache.InMemoryBlobDescriptorCache`.
    - ``upload_leases``: leases in Redis that give an upload one writer at a time across
      replicas on an object store (:mod:`~distblob.storage.leases`); ``None``: locks within
      the process (and ``flock`` on a local filesystem) only.
    - ``read_only``: distribution's ``storage.maintenance.readonly``: the server refuses every
      write (405), as the Go registry does; the storage verbs themselves are not gated.
    - ``validation``: what pushed manifests must satisfy (:mod:`distblob.storage.validation`);
      by default distribution's storage layer's: any http(s) foreign-layer URL, every index
      child present (``distblob serve`` passes the config's, whose default allows no URL, as
      the Go registry's ``validation`` does).
    - ``tag_concurrency``: tags read at once when a manifest delete looks up its tags
      (``storage.tag.concurrencylimit``; 0: the number of CPUs).
    - ``redirect_base``: the ``redirect`` storage middleware's ``baseurl``: blob GETs are
      redirected to it joined with the blob's storage path.
    """

    def __init__(
        self,
        driver: StorageDriver,
        *,
        engine: str | Engine = "native",
        resumable_digests: bool = True,
        delete_enabled: bool = False,
        fsync: bool = True,
        redirect: bool = True,
        descriptor_cache: BlobDescriptorCache | None = None,
        upload_leases: RedisUploadLeases | None = None,
        read_only: bool = False,
        validation: ManifestValidation | None = None,
        tag_concurrency: int = 0,
        redirect_base: str | None = None,
    ) -> None:
        self.driver = driver
        self.engine = get_engine(engine) if isinstance(engine, str) else engine
        self.resumable_digests = resumable_digests
        self.delete_enabled = delete_enabled
        self.fsync = fsync
        self.redirect = redirect
        if descriptor_cache is None:
            descriptor_cache = InMemoryBlobDescriptorCache()
        self.descriptor_cache = descriptor_cache
        self.descriptors = DescriptorCache(descriptor_cache)
        self.upload_leases = upload_leases
        self.read_only = read_only
        # The storage layer's default, as Go's storage package: any http(s) foreign-layer URL.
        # ``distblob serve`` passes the config's (``validation``: none allowed by default).
        self.validation = validation if validation is not None else ManifestValidation()
        self.tag_concurrency = tag_concurrency or os.cpu_count() or 1
        self.redirect_base = redirect_base
        self.blobs = BlobStore(self)
        #: The server's side of online garbage collection (:mod:`distblob.storage.collection`).
        self.fence = Fence(driver)

    @classmethod
    def filesystem(cls, root: str | os.PathLike[str], **options: object) -> Registry:
        """A registry over a directory (created if missing), laid out as distribution's."""
        return cls(FilesystemDriver(root), **options)  # type: ignore[arg-type]

    @classmethod
    def in_memory(cls, **options: object) -> Registry:
        """A registry in memory, for tests and caches."""
        return cls(InMemoryDriver(), **options)  # type: ignore[arg-type]

    def repository(self, name: str) -> Repository:
        """The repository ``name``; ``NameInvalidError`` unless it is a valid OCI name."""
        return Repository(self, name)

    def catalog(self, n: int | None = None, last: str | None = None) -> list[str]:
        """Every repository name, sorted, as distribution's catalog pages them.

        A repository is a directory under ``repositories/`` holding ``_manifests`` or
        ``_layers`` (one holding only an upload in progress is not listed, as in distribution);
        names nest (``a/b`` and ``a/b/c`` can both be repositories). The order is
        distribution's: component by component, so ``a/b`` comes before ``a-b``. Only names
        strictly after ``last`` are returned, at most ``n`` of them (``n=0`` returns none).
        """
        if n is not None and n < 0:
            raise ValueError(f"n cannot be negative: {n}")
        names = sorted(self._repository_names(), key=_path_order)
        if last is not None:
            after = _path_order(last)
            names = [name for name in names if _path_order(name) > after]
        return names if n is None else names[:n]

    def uploading_repositories(self) -> list[str]:
        """The repositories holding an ``_uploads`` directory (what upload purging visits),
        listed in the catalog or not."""
        return sorted(self._repository_names(frozenset({"_uploads"})), key=_path_order)

    def _repository_names(self, markers: frozenset[str] | None = None) -> list[str]:
        markers = _REPOSITORY_MARKERS if markers is None else markers
        root = paths.repositories_root()
        found: list[str] = []
        pending = [root]
        while pending:
            directory = pending.pop()
            try:
                children = self.driver.list(directory)
            except PathNotFoundError:
                continue  # Not there (yet), or removed while listing.
            for child in children:
                base = child.rsplit("/", 1)[1]
                if base in markers and directory != root:
                    name = directory[len(root) + 1 :]
                    try:
                        found.append(paths.validate_repository_name(name))
                    except NameInvalidError:
                        continue  # Not a directory distblob or distribution would have made.
                elif not base.startswith("_"):
                    pending.append(child)  # Listing a file finds nothing; no stat needed.
        return list(dict.fromkeys(found))

    def is_linked(self, digest: str) -> bool:
        """Whether any repository links the blob ``digest``, as a layer or as a manifest."""
        dgst = parse_digest(digest)
        for name in self.catalog():
            for path in (
                paths.layer_link_path(name, dgst),
                paths.manifest_revision_link_path(name, dgst),
            ):
                try:
                    self.driver.stat(path)
                except PathNotFoundError:
                    continue
                return True
        return False

    def sync(self) -> None:
        """Make everything written so far durable (for batch jobs run with ``fsync=False``)."""
        self.driver.sync()

    def __repr__(self) -> str:
        return f"<Registry {self.driver.name} engine={self.engine.name}>"


#: What makes a directory under ``repositories/`` a repository.
_REPOSITORY_MARKERS = frozenset({"_manifests", "_layers"})


def _path_order(name: str) -> str:
    """The catalog's sort key: ``/`` before every other character, as distribution's walk
    (sorted directory by directory) finds repositories."""
    return name.replace("/", "\x00")


class Repository:
    """One repository: its name, its linked blob store and its manifests and tags."""

    def __init__(self, registry: Registry, name: str) -> None:
        self.registry = registry
        self.name = paths.validate_repository_name(name)
        self.blobs = LinkedBlobStore(registry, self.name)
        self.manifests = ManifestStore(self)

    def __repr__(self) -> str:
        return f"<Repository {self.name}>"


__all__ = ["Registry", "Repository"]
