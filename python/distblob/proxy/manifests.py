"""The pull-through cache's manifests and tags: distribution's ``proxyManifestStore`` and
``proxyTagService``.

- By digest: the local revision if the repository has it; else fetched from upstream, its digest
  verified, stored (without requiring its blobs, which come later or never) and scheduled.
- By tag: upstream is asked first (HEAD, for the digest the tag names now); the manifest is then
  served by digest as above and the tag recorded locally. When upstream cannot answer, the local
  tag is used, so a cache keeps serving what it has while its upstream is down.
"""

from __future__ import annotations

import contextlib
import json
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

import anyio

from distblob.descriptor import Descriptor
from distblob.digest import Digest
from distblob.errors import (
    DigestInvalidError,
    DigestUnsupportedError,
    ManifestInvalidError,
    ManifestUnknownError,
    TagInvalidError,
)
from distblob.proxy.upstream import MANIFEST_ACCEPT, Upstream, UpstreamError, unexpected_status
from distblob.reference import validate_tag
from distblob.storage.blobs import parse_digest
from distblob.storage.manifests import is_digest_reference

if TYPE_CHECKING:
    from distblob.proxy.scheduler import TTLScheduler
    from distblob.registry import Registry, Repository

#: The largest manifest (or page of a tags list) fetched from upstream.
MAX_MANIFEST_SIZE: Final = 4 << 20
#: The most pages of upstream's tags list followed (what they held is listed).
MAX_TAG_PAGES: Final = 1000


def _next_page(link: str) -> str | None:
    """The ``/v2/...`` target of a ``Link: <...>; rel="next"`` header, if any."""
    for entry in link.split(","):
        target, _, params = entry.partition(";")
        if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
            url = urllib.parse.urlsplit(target.strip().strip("<>"))
            if url.path.startswith("/v2/"):
                return url.path + (f"?{url.query}" if url.query else "")
    return None


logger = logging.getLogger("distblob.proxy")

OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"


def _is_descriptor(entry: object) -> bool:
    """Whether ``entry`` of upstream's referrers names a manifest: a media type, a valid digest
    and a size."""
    if not isinstance(entry, dict):
        return False
    size, media_type, digest = entry.get("size"), entry.get("mediaType"), entry.get("digest")
    if not isinstance(media_type, str) or not isinstance(digest, str):
        return False
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return False
    try:
        parse_digest(digest)
    except (DigestInvalidError, DigestUnsupportedError):
        return False
    return True


class ProxyManifestStore:
    """Serves manifests from the cache, asking upstream for tags and for missing digests."""

    def __init__(self, registry: Registry, upstream: Upstream, scheduler: TTLScheduler) -> None:
        self.registry = registry
        self.upstream = upstream
        self.scheduler = scheduler

    async def get(self, repo: Repository, reference: str) -> tuple[bytes, Descriptor]:
        """The manifest ``reference`` (a tag or a digest) names, and its descriptor."""
        if is_digest_reference(reference):
            return await self._by_digest(repo, parse_digest(reference))
        validate_tag(reference)  # before anything goes upstream (TAG_INVALID)
        failure: UpstreamError | None = None
        try:
            digest = await self._upstream_tag(repo, reference)
        except UpstreamError as exc:
            logger.info("upstream tag lookup %s:%s failed: %s", repo.name, reference, exc)
            digest, failure = None, exc
        if digest is None:
            try:
                result: tuple[bytes, Descriptor] = await anyio.to_thread.run_sync(
                    repo.manifests.get, reference
                )
            except ManifestUnknownError:
                if failure is not None:
                    raise failure from None  # no local tag either: say why upstream failed
                raise
            return result
        body, descriptor = await self._by_digest(repo, digest)
        if await anyio.to_thread.run_sync(repo.manifests.exists, str(digest)):
            await anyio.to_thread.run_sync(repo.manifests.tag, reference, str(digest))
        return body, descriptor

    async def stat(self, repo: Repository, reference: str) -> Descriptor:
        """The descriptor of the manifest ``reference`` names (found as :meth:`get` finds it:
        a HEAD through the cache stores what upstream sent, as a GET would)."""
        return (await self.get(repo, reference))[1]

    async def tags(self, repo: Repository) -> list[str]:
        """Upstream's tags of the repository, sorted; the cache's own when upstream cannot
        answer, as distribution's ``proxyTagService.All`` does (``NameUnknownError`` when the
        cache has none either). Upstream's pages are followed (``Link: rel="next"``)."""
        try:
            return await self._upstream_tags(repo)
        except (UpstreamError, ValueError, RecursionError) as exc:
            logger.info("upstream tags list %s failed: %s", repo.name, type(exc).__name__)
        local: list[str] = await anyio.to_thread.run_sync(repo.manifests.tags)
        return local

    async def referrers(
        self, repo: Repository, digest: str, artifact_type: str | None = None
    ) -> dict[str, Any]:
        """The OCI 1.1 referrers of ``digest`` as an image index: upstream's (pages followed,
        filtered by ``artifact_type`` here when upstream did not), or the cache's, built from
        the manifests it holds, when upstream cannot answer (an upstream without the referrers
        API answers 404)."""
        subject = parse_digest(digest)  # before anything goes upstream (DIGEST_INVALID)
        try:
            found = await self._upstream_referrers(repo, subject, artifact_type)
        except (UpstreamError, ValueError, RecursionError) as exc:
            logger.info("upstream referrers %s@%s failed: %s", repo.name, subject, exc)
            local: dict[str, Any] = await anyio.to_thread.run_sync(
                repo.manifests.referrers, str(subject), artifact_type
            )
            return local
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found}

    async def _upstream_referrers(
        self, repo: Repository, subject: Digest, artifact_type: str | None
    ) -> list[dict[str, Any]]:
        query = (
            f"?{urllib.parse.urlencode({'artifactType': artifact_type})}" if artifact_type else ""
        )
        target: str | None = f"/v2/{repo.name}/referrers/{subject}{query}"
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        for _ in range(MAX_TAG_PAGES):
            if target is None or target in seen:
                break
            seen.add(target)
            response, body = await self.upstream.get_bytes(
                target, name=repo.name, headers={"Accept": OCI_INDEX}, limit=MAX_MANIFEST_SIZE
            )
            if response.status_code != 200:
                raise unexpected_status(response.status_code, response.headers)
            page = json.loads(body)
            listed = page.get("manifests") if isinstance(page, dict) else None
            if not isinstance(listed, list):
                raise ValueError("upstream's referrers is not an image index")
            filtered = "artifacttype" in response.headers.get("oci-filters-applied", "").lower()
            for entry in listed:
                if not _is_descriptor(entry):
                    continue  # nothing a client could follow
                if artifact_type and not filtered and entry.get("artifactType") != artifact_type:
                    continue
                found.append(entry)
            target = _next_page(response.headers.get("link", ""))
        return found

    async def _upstream_tags(self, repo: Repository) -> list[str]:
        tags: set[str] = set()
        target: str | None = f"/v2/{repo.name}/tags/list"
        seen: set[str] = set()
        for _ in range(MAX_TAG_PAGES):
            if target is None or target in seen:  # the last page, or a Link back to a page
                return sorted(tags)
            seen.add(target)
            response, body = await self.upstream.get_bytes(
                target, name=repo.name, limit=MAX_MANIFEST_SIZE
            )
            if response.status_code != 200:
                raise unexpected_status(response.status_code, response.headers)
            page = json.loads(body)
            listed = (page.get("tags") if isinstance(page, dict) else None) or []
            if not isinstance(listed, list):
                raise ValueError("upstream's tags is not a list")
            for tag in listed:
                with contextlib.suppress(TypeError, TagInvalidError):
                    tags.add(validate_tag(tag))
            target = _next_page(response.headers.get("link", ""))
        logger.warning(
            "upstream tags list %s: stopped after %d pages (%d tags)",
            repo.name,
            MAX_TAG_PAGES,
            len(tags),
        )
        return sorted(tags)

    async def _upstream_tag(self, repo: Repository, tag: str) -> Digest | None:
        """The digest upstream's tag names; ``None`` when upstream does not know the tag."""
        response = await self.upstream.head(
            f"/v2/{repo.name}/manifests/{tag}", name=repo.name, headers={"Accept": MANIFEST_ACCEPT}
        )
        if response.status_code == 404:
            return None
        if response.status_code == 429:
            raise unexpected_status(429, response.headers)
        # As distribution's client: without a usable HEAD (some upstreams refuse HEAD, or send
        # no digest), GET the tag and name its manifest by its SHA-256.
        header = (
            response.headers.get("docker-content-digest") if response.status_code == 200 else None
        )
        if header:
            try:
                return Digest(header)
            except (DigestInvalidError, DigestUnsupportedError):
                pass
        try:
            body, media_type = await self._fetch(repo, tag)
        except ManifestUnknownError:
            return None
        digest = Digest.from_bytes(body, "sha256")
        await self._store(repo, digest, body, media_type)
        return digest

    async def _fetch(self, repo: Repository, reference: str) -> tuple[bytes, str]:
        response, body = await self.upstream.get_bytes(
            f"/v2/{repo.name}/manifests/{reference}",
            name=repo.name,
            headers={"Accept": MANIFEST_ACCEPT},
            limit=MAX_MANIFEST_SIZE,
        )
        if response.status_code == 404:
            raise ManifestUnknownError(reference)
        if response.status_code != 200:
            raise unexpected_status(response.status_code, response.headers)
        media_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
        return body, media_type

    async def _store(
        self, repo: Repository, digest: Digest, body: bytes, media_type: str
    ) -> Descriptor:
        try:
            descriptor: Descriptor = await anyio.to_thread.run_sync(
                lambda: repo.manifests.put(str(digest), body, media_type, check_blobs=False)
            )
        except ManifestInvalidError as exc:
            # A manifest distblob cannot store (schema 1, ...) is passed through uncached.
            logger.info("not caching manifest %s@%s: %s", repo.name, digest, exc)
            return Descriptor(media_type=media_type, size=len(body), digest=digest)
        self.scheduler.add_manifest(repo.name, digest)
        return descriptor

    async def _by_digest(self, repo: Repository, digest: Digest) -> tuple[bytes, Descriptor]:
        try:
            local: tuple[bytes, Descriptor] = await anyio.to_thread.run_sync(
                repo.manifests.get, str(digest)
            )
            return local
        except ManifestUnknownError:
            pass
        body, media_type = await self._fetch(repo, str(digest))
        if Digest.from_bytes(body, digest.algorithm) != digest:
            raise UpstreamError(f"upstream's manifest does not match {digest}", 502)
        descriptor = await self._store(repo, digest, body, media_type)
        return body, descriptor


__all__ = ["ProxyManifestStore"]
