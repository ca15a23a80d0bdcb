"""A repository's manifests and tags: distribution's ``manifestStore`` and ``tagStore``.

Manifests are blobs like any other: the body goes to ``blobs/<alg>/<xx>/<hex>/data`` through the
global blob store, and the repository knows it through
``_manifests/revisions/<alg>/<hex>/link`` — never through ``_layers``, as in distribution. A tag
is a directory ``_manifests/tags/<tag>`` with ``current/link`` (what it points to now) and
``index/<alg>/<hex>/link`` (everything it ever pointed to). Every link holds ``sha256:<hex>``
with no newline, so a tree written here reads in the Go registry and back.

Four media types are accepted: the OCI image manifest and index and Docker's schema 2 manifest
and manifest list. The media type of a stored manifest is read back from its body's
``mediaType``; an OCI body may lack one, so the type it was pushed with is also kept in the
registry's :class:`~distblob.storage.linked.DescriptorCache` (in memory), and without that (after
a restart) it is sniffed from the body: ``manifests`` means an index, ``layers`` an image.

Errors: an unknown tag or digest is :class:`~distblob.errors.ManifestUnknownError`; a body that
does not parse or validate, or does not match the digest it is pushed under, is
:class:`~distblob.errors.ManifestInvalidError`; a missing config, layer or (for an index) child
manifest is :class:`~distblob.errors.ManifestBlobUnknownError`. A reference is a digest when it
holds a ``:`` (tags cannot), and a malformed one raises the blob store's digest errors
(:class:`~distblob.errors.BlobInvalidDigestError`,
:class:`~distblob.errors.BlobDigestUnsupportedError`), which an HTTP layer reports as
``DIGEST_INVALID`` like distribution; a malformed tag raises
:class:`~distblob.errors.TagInvalidError`.

Referrers (OCI 1.1) are found by reading every revision of the repository: simple and always
right, and cheap for the repository sizes this is meant for; an index can come later.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from distblob.descriptor import Descriptor
from distblob.digest import CANONICAL, Digest
from distblob.errors import (
    BlobUnknownError,
    DigestInvalidError,
    DigestUnsupportedError,
    DistblobError,
    ManifestBlobUnknownError,
    ManifestInvalidError,
    ManifestUnknownError,
    NameUnknownError,
    PathNotFoundError,
    UnsupportedError,
)
from distblob.storage import paths
from distblob.storage.blobs import parse_digest
from distblob.storage.collection import Need
from distblob.storage.writer import REPAIRS

if TYPE_CHECKING:
    from distblob.registry import Repository

#: The OCI image manifest.
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
#: The OCI image index.
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
#: Docker's image manifest, schema 2.
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
#: Docker's manifest list (its multi-platform index).
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"

#: Every media type :meth:`ManifestStore.put` accepts.
MANIFEST_MEDIA_TYPES: Final = frozenset(
    {OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST}
)
_INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
# Content-Types that say nothing about the manifest (clients send them when they do not know).
_GENERIC_TYPES: Final = frozenset({"", "application/json", "application/octet-stream"})


def is_digest_reference(reference: str) -> bool:
    """Whether ``reference`` names a digest rather than a tag (tags cannot hold a ``:``)."""
    return ":" in reference


class ManifestStore:
    """The manifests and tags of one repository."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self.registry = repository.registry
        self.name = repository.name
        self.driver = repository.registry.driver

    # -- links -------------------------------------------------------------------------------

    def _read_link(self, path: str, reference: str) -> Digest:
        """The digest a link file names; ``ManifestUnknownError(reference)`` if none."""
        try:
            raw = self.driver.get_content(path)
        except PathNotFoundError:
            raise ManifestUnknownError(reference) from None
        try:
            return Digest(raw.decode("ascii").strip())
        except (UnicodeDecodeError, DigestInvalidError, DigestUnsupportedError):
            # A link that names nothing readable links nothing.
            raise ManifestUnknownError(reference) from None

    def _write_link(self, path: str, digest: Digest) -> None:
        self.driver.put_content(path, str(digest).encode("ascii"), fsync=self.registry.fsync)

    def _revision(self, digest: Digest, reference: str) -> Digest:
        """The digest the revision link of ``digest`` names, if the repository has it."""
        return self._read_link(paths.manifest_revision_link_path(self.name, digest), reference)

    def _digest_of(self, reference: str) -> Digest:
        """The manifest digest ``reference`` (a tag or a digest) names in this repository."""
        if is_digest_reference(reference):
            return self._revision(parse_digest(reference), reference)
        return self._revision(self.resolve(reference), reference)

    # -- reading -----------------------------------------------------------------------------

    def get(self, reference: str) -> tuple[bytes, Descriptor]:
        """The manifest's body and descriptor; ``ManifestUnknownError`` if there is none."""
        digest = self._digest_of(reference)
        try:
            body = self.registry.blobs.get(digest)
        except BlobUnknownError:
            raise ManifestUnknownError(reference) from None
        return body, self._describe(digest, body)

    def stat(self, reference: str) -> Descriptor:
        """The manifest's descriptor (media type, size, digest); ``ManifestUnknownError``."""
        digest = self._digest_of(reference)
        cached = self.registry.descriptors.get(self.name, digest)
        if cached is not None and cached.media_type in MANIFEST_MEDIA_TYPES:
            return cached
        return self.get(reference)[1]

    def exists(self, reference: str) -> bool:
        """Whether the repository holds the manifest (a malformed reference still raises)."""
        try:
            self._digest_of(reference)
        except ManifestUnknownError:
            return False
        return True

    def _describe(self, digest: Digest, body: bytes) -> Descriptor:
        """The descriptor of a stored manifest: its own ``mediaType``, else the remembered one,
        else the sniffed one."""
        media_type = ""
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            declared = parsed.get("mediaType")
            if isinstance(declared, str) and declared:
                media_type = declared
        if not media_type:
            cached = self.registry.descriptors.get(self.name, digest)
            if cached is not None and cached.media_type in MANIFEST_MEDIA_TYPES:
                media_type = cached.media_type
        if not media_type and isinstance(parsed, dict):
            media_type = _sniff(parsed) or ""
        descriptor = Descriptor(media_type=media_type, size=len(body), digest=digest)
        if media_type in MANIFEST_MEDIA_TYPES:
            self.registry.descriptors.set(self.name, digest, descriptor)
        return descriptor

    # -- writing -----------------------------------------------------------------------------

    def put(
        self,
        reference: str,
        body: bytes,
        media_type: str | None = None,
        *,
        check_blobs: bool = True,
    ) -> Descriptor:
        """Validate and store a manifest under a tag or a digest; return its descriptor.

        ``media_type`` is the HTTP Content-Type; the body's own ``mediaType`` wins. A digest
        reference must be the digest of ``body`` (in the reference's algorithm). Every blob the
        manifest references must be linked into the repository, except foreign layers (those
        with ``urls``); every manifest an index references must be in the repository. A
        pull-through cache stores manifests before their blobs: ``check_blobs=False`` skips
        that check (the body is still parsed and validated).
        """
        if is_digest_reference(reference):
            requested: Digest | None = parse_digest(reference)
            tag = None
        else:
            requested = None
            tag = paths.validate_tag(reference)
        body = bytes(body)
        algorithm = requested.algorithm if requested is not None else CANONICAL
        digest = Digest.from_bytes(body, algorithm)
        if requested is not None and digest != requested:
            raise ManifestInvalidError(f"content does not match digest {requested}")

        manifest = _parse(body)
        kind = _media_type(manifest, media_type)
        references = _validate(manifest, kind)
        fence = self.registry.fence
        began = fence.begin()
        if check_blobs:
            self._check_references(kind, references)

        written = self._store(digest, body)
        for _ in range(REPAIRS):
            # An online garbage collection that ran meanwhile may have swept what the manifest
            # names (distblob.storage.collection): the manifest itself is stored again, a
            # missing reference refuses the push (the client uploads the blob again).
            # Without the blob check (a pull-through cache stores a manifest before its
            # blobs) only the manifest itself is relied on.
            named = references if check_blobs else []
            missing = fence.secure(
                began,
                functools.partial(self._needs, kind, digest, named),
                fresh=(digest,) if written else (),
            )
            lost = [need.digest for need in missing if need.digest != digest]
            if lost:
                with contextlib.suppress(PathNotFoundError):
                    self.driver.delete(
                        paths.manifest_revision_link_path(self.name, digest).rsplit("/", 1)[0]
                    )
                self.registry.descriptors.clear(self.name, str(digest))
                raise ManifestBlobUnknownError(str(lost[0]))
            if not missing:
                break
            began = fence.begin()
            written = self._store(digest, body)
        else:
            raise ManifestInvalidError(f"{digest}: swept by garbage collection as it was stored")
        descriptor = Descriptor(media_type=kind, size=len(body), digest=digest)
        self.registry.descriptors.set(self.name, digest, descriptor)
        if tag is not None:
            began = fence.begin()
            self._tag(tag, digest)
            # A collection that started after the check above listed the revision before the
            # tag was written: were the revision old enough (a grace period shorter than this
            # put), it could be removed as untagged. Checked again; stored again if it was.
            itself = [Need(digest, self._revision_paths(digest))]
            for _ in range(REPAIRS):
                if not fence.secure(began, functools.partial(list, itself)):
                    break
                began = fence.begin()
                self._store(digest, body)
                self._tag(tag, digest)
        return descriptor

    def _store(self, digest: Digest, body: bytes) -> bool:
        """The manifest's blob (unless stored) and its revision link; whether the blob was
        written."""
        written = self.registry.blobs.write(digest, body)
        with self.driver.deferred_sync():  # the link's file and new directories, together
            self._write_link(paths.manifest_revision_link_path(self.name, digest), digest)
        return written

    def _needs(self, kind: str, digest: Digest, references: list[dict[str, Any]]) -> list[Need]:
        """What a manifest put relies on: its own blob and revision link, and what it names
        that :meth:`_check_references` checked (the children of an index, the blobs of an
        image: their data and this repository's link)."""
        needs = [Need(digest, self._revision_paths(digest))]
        for reference in references:
            try:
                named = Digest(reference["digest"])
            except DistblobError:
                continue
            validation = self.registry.validation
            if kind in _INDEX_TYPES:
                if validation.child_required(reference):
                    needs.append(Need(named, self._revision_paths(named)))
            elif not (validation.layer_urls_valid(kind, reference) or reference.get("urls")):
                try:
                    target = self.repository.blobs.stat(named).digest or named
                except BlobUnknownError:
                    target = named
                link = paths.layer_link_path(self.name, named)
                needs.append(Need(named, (paths.blob_data_path(target), link)))
        return needs

    def _revision_paths(self, digest: Digest) -> tuple[str, str]:
        return (
            paths.blob_data_path(digest),
            paths.manifest_revision_link_path(self.name, digest),
        )

    def _check_references(self, kind: str, references: list[dict[str, Any]]) -> None:
        """distribution's checks (:mod:`distblob.storage.validation`): the index children the
        validation requires, the URLs of foreign layers, and every other blob without URLs."""
        validation = self.registry.validation
        if kind in _INDEX_TYPES:
            for child in references:
                if validation.child_required(child) and not self.exists(child["digest"]):
                    raise ManifestBlobUnknownError(child["digest"])
            return
        blobs = self.repository.blobs
        for blob in references:
            valid = validation.layer_urls_valid(kind, blob)
            if valid is False:
                raise ManifestBlobUnknownError(blob["digest"])  # a URL not allowed, or none
            if valid or blob.get("urls"):
                continue  # A foreign layer: clients fetch it from its URLs, not from here.
            if not blobs.exists(blob["digest"]):
                raise ManifestBlobUnknownError(blob["digest"])

    def delete(self, reference: str) -> None:
        """Delete a manifest by digest (and every tag pointing to it), or one tag.

        ``UnsupportedError`` when deletes are disabled, ``ManifestUnknownError`` if the repository
        lacks the reference. The body stays in ``blobs/`` for garbage collection.
        """
        if not self.registry.delete_enabled:
            raise UnsupportedError("deletes are disabled")
        self.remove(reference)

    def remove(self, reference: str) -> None:
        """:meth:`delete` as a storage primitive, whether deletes are enabled or not (a cache's
        expiry); ``ManifestUnknownError`` if the repository lacks the reference."""
        if not is_digest_reference(reference):
            self.untag(reference)
            return
        digest = parse_digest(reference)
        link = paths.manifest_revision_link_path(self.name, digest)
        self._read_link(link, reference)
        # distribution's manifest DELETE: tagStore.Lookup, then Untag each tag found.
        for tag in self.lookup(digest):
            try:
                self.untag(tag)
            except ManifestUnknownError:
                continue  # Removed concurrently; the outcome is the same.
        try:
            self.driver.delete(link.rsplit("/", 1)[0])
        except PathNotFoundError:
            raise ManifestUnknownError(reference) from None
        self.registry.descriptors.clear(self.name, digest)

    # -- tags --------------------------------------------------------------------------------

    def tags(self) -> list[str]:
        """Every tag, sorted; ``NameUnknownError`` if the repository was never tagged (it does
        not exist, or holds only blobs or manifests by digest), as distribution's ``tagStore``
        says. Once tagged, a repository whose tags were all deleted lists none."""
        try:
            entries = self.driver.list(paths.manifest_tags_root(self.name))
        except PathNotFoundError:
            raise NameUnknownError(self.name) from None
        return sorted(entry.rsplit("/", 1)[1] for entry in entries)

    def resolve(self, tag: str) -> Digest:
        """The digest the tag points to; ``ManifestUnknownError(tag)`` if there is no such tag."""
        return self._read_link(paths.manifest_tag_current_path(self.name, tag), tag)

    def tag(self, tag: str, digest: str) -> None:
        """Point ``tag`` at the manifest ``digest``, which the repository must hold."""
        paths.validate_tag(tag)
        dgst = parse_digest(digest)
        fence = self.registry.fence
        began = fence.begin()
        self._revision(dgst, dgst)
        self._tag(tag, dgst)
        if fence.secure(began, lambda: [Need(dgst, self._revision_paths(dgst))]):
            # Swept by an online garbage collection meanwhile: no tag to nothing.
            with contextlib.suppress(ManifestUnknownError):
                self.untag(tag)
            raise ManifestUnknownError(str(dgst))

    def _tag(self, tag: str, digest: Digest) -> None:
        # distribution's tagStore.Tag: the index entry first, then the current link; synced
        # together, after the revision is durable.
        with self.driver.deferred_sync():
            index_entry = paths.manifest_tag_index_entry_link_path(self.name, tag, digest)
            self._write_link(index_entry, digest)
            self._write_link(paths.manifest_tag_current_path(self.name, tag), digest)

    def untag(self, tag: str) -> None:
        """Remove the tag (its directory, index included); ``ManifestUnknownError`` if none.

        A storage primitive, like distribution's ``tagStore.Untag``: it does not check
        ``delete_enabled`` (:meth:`delete` does).
        """
        try:
            self.driver.delete(paths.manifest_tag_path(self.name, tag))
        except PathNotFoundError:
            raise ManifestUnknownError(tag) from None

    def lookup(self, digest: str) -> list[str]:
        """The tags whose current link points to ``digest`` (distribution's ``Lookup``), read
        by at most the registry's ``tag_concurrency`` threads at once."""
        dgst = parse_digest(digest)

        def points_here(tag: str) -> bool:
            try:
                return self.resolve(tag) == dgst
            except ManifestUnknownError:
                return False

        tags = self._tags_or_empty()
        workers = min(self.registry.tag_concurrency, len(tags))
        if workers <= 1:
            return [tag for tag in tags if points_here(tag)]
        with ThreadPoolExecutor(workers, thread_name_prefix="tag-lookup") as pool:
            found = list(pool.map(points_here, tags))
        return [tag for tag, here in zip(tags, found, strict=True) if here]

    def _tags_or_empty(self) -> list[str]:
        try:
            return self.tags()
        except NameUnknownError:
            return []

    # -- enumeration and referrers -----------------------------------------------------------

    def enumerate(self) -> list[Digest]:
        """The digests of every manifest in the repository, sorted by path."""
        try:
            entries = list(self.driver.walk(paths.manifest_revisions_root(self.name)))
        except PathNotFoundError:
            return []
        found = []
        for info in entries:
            if info.is_dir or not info.path.endswith("/link"):
                continue
            parts = info.path.split("/")
            try:
                found.append(Digest.from_parts(parts[-3], parts[-2]))
            except (DigestInvalidError, DigestUnsupportedError):
                continue
        return found

    def referrers(self, digest: str, artifact_type: str | None = None) -> dict[str, Any]:
        """The OCI 1.1 referrers of ``digest``: an OCI image index (as a dict) listing every
        manifest of the repository whose ``subject`` is ``digest``, optionally only those of
        ``artifact_type``. Unknown subjects have an empty list, as the spec asks."""
        subject = parse_digest(digest)
        found: list[dict[str, Any]] = []
        for revision in self.enumerate():
            try:
                body, descriptor = self.get(revision)
            except ManifestUnknownError:
                continue
            try:
                manifest = json.loads(body)
            except ValueError:
                continue
            if not isinstance(manifest, dict):
                continue
            entry = _referrer(manifest, descriptor, subject)
            if entry is None:
                continue
            if artifact_type is not None and entry.get("artifactType") != artifact_type:
                continue
            found.append(entry)
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found}


def _referrer(
    manifest: Mapping[str, Any], descriptor: Descriptor, subject: Digest
) -> dict[str, Any] | None:
    """The referrers-list entry for ``manifest`` if its subject is ``subject``."""
    ref = manifest.get("subject")
    if not isinstance(ref, Mapping) or ref.get("digest") != subject:
        return None
    entry: dict[str, Any] = {
        "mediaType": descriptor.media_type,
        "digest": str(descriptor.digest),
        "size": descriptor.size,
    }
    artifact_type = manifest.get("artifactType")
    if not isinstance(artifact_type, str) or not artifact_type:
        config = manifest.get("config")
        artifact_type = config.get("mediaType") if isinstance(config, Mapping) else None
    if isinstance(artifact_type, str) and artifact_type:
        entry["artifactType"] = artifact_type
    annotations = manifest.get("annotations")
    if isinstance(annotations, Mapping) and annotations:
        entry["annotations"] = dict(annotations)
    return entry


# -- parsing and validation ----------------------------------------------------------------------


#: The largest size a descriptor may declare: Go reads sizes into an ``int64``.
MAX_SIZE: Final = (1 << 63) - 1


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(body: bytes) -> dict[str, Any]:
    """A manifest as JSON clients can read: UTF-8 without a byte order mark (``json.loads``
    would guess UTF-16 or skip a BOM, which Go's decoder refuses), no ``NaN``/``Infinity``.
    Invalid bytes inside strings are let through, as Go's decoder does (it reads U+FFFD)."""
    text = body.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        raise ManifestInvalidError("not JSON: a manifest must not start with a byte order mark")
    try:
        manifest = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise ManifestInvalidError(f"not JSON: {exc}") from None
    except RecursionError:
        raise ManifestInvalidError("not JSON a manifest can be: nested too deeply") from None
    if not isinstance(manifest, dict):
        raise ManifestInvalidError("a manifest is a JSON object")
    schema_version = manifest.get("schemaVersion")
    if type(schema_version) is not int or schema_version != 2:  # not 2.0, not true
        raise ManifestInvalidError(f"unsupported schemaVersion {schema_version!r}, expected 2")
    return manifest


def _sniff(manifest: Mapping[str, Any]) -> str | None:
    """The OCI media type a body without ``mediaType`` has by its shape."""
    if "manifests" in manifest:
        return OCI_INDEX
    if "layers" in manifest or "config" in manifest:
        return OCI_MANIFEST
    return None


def _media_type(manifest: Mapping[str, Any], given: str | None) -> str:
    """The manifest's media type: the body's ``mediaType``, else ``given``, else sniffed."""
    declared = manifest.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalidError("mediaType must be a string")
    content_type = (given or "").split(";", 1)[0].strip().lower()
    if content_type in _GENERIC_TYPES:
        content_type = ""
    if declared:
        if content_type in MANIFEST_MEDIA_TYPES and content_type != declared:
            raise ManifestInvalidError(
                f"mediaType in manifest is {declared}, Content-Type says {content_type}"
            )
        kind = declared
    else:
        kind = content_type or _sniff(manifest) or ""
    if kind not in MANIFEST_MEDIA_TYPES:
        raise ManifestInvalidError(f"unsupported manifest media type {kind or '(none)'!r}")
    return kind


def _validate(manifest: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    """Check the fields of a ``kind`` manifest; return the descriptors that must exist (config
    and layers of an image, children of an index)."""
    if kind in _INDEX_TYPES:
        references = _descriptor_list(manifest, "manifests")
    else:
        if "config" not in manifest:
            raise ManifestInvalidError("config is required")
        config = _descriptor(manifest["config"], "config")
        references = [config, *_descriptor_list(manifest, "layers")]
    if "subject" in manifest:
        _descriptor(manifest["subject"], "subject")
    artifact_type = manifest.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalidError("artifactType must be a string")
    _string_map(manifest.get("annotations"), "annotations")
    return references


def _descriptor_list(manifest: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    if key not in manifest:
        raise ManifestInvalidError(f"{key} is required")
    items = manifest[key]
    if not isinstance(items, list):
        raise ManifestInvalidError(f"{key} must be a list")
    return [_descriptor(item, f"{key}[{i}]") for i, item in enumerate(items)]


def _descriptor(raw: object, where: str) -> dict[str, Any]:
    """Check one descriptor (mediaType, digest, size, optional urls and annotations)."""
    if not isinstance(raw, dict):
        raise ManifestInvalidError(f"{where} must be a descriptor object")
    media_type = raw.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalidError(f"{where}: mediaType is required")
    digest = raw.get("digest")
    if not isinstance(digest, str):
        raise ManifestInvalidError(f"{where}: digest is required")
    try:
        Digest(digest)
    except (DigestInvalidError, DigestUnsupportedError) as exc:
        raise ManifestInvalidError(f"{where}: {exc}") from None
    size = raw.get("size")
    if type(size) is not int or not 0 <= size <= MAX_SIZE:
        raise ManifestInvalidError(f"{where}: size must be an integer from 0 to 2^63-1")
    urls = raw.get("urls")
    if urls is not None and (
        not isinstance(urls, list) or not all(isinstance(u, str) and u for u in urls)
    ):
        raise ManifestInvalidError(f"{where}: urls must be a list of strings")
    _string_map(raw.get("annotations"), f"{where}: annotations")
    return raw


def _string_map(raw: object, where: str) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise ManifestInvalidError(f"{where} must map strings to strings")


__all__ = [
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "MANIFEST_MEDIA_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "ManifestStore",
    "is_digest_reference",
]
