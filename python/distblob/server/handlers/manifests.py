"""``/v2/<name>/manifests/<reference>``: GET, HEAD, PUT and DELETE a manifest by tag or digest
(distribution's ``manifests.go``)."""

from __future__ import annotations

import contextlib
import json
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from distblob._numbers import is_ascii_digits
from distblob.descriptor import Descriptor
from distblob.errors import ManifestUnknownError, NameUnknownError, TagInvalidError
from distblob.interfaces import AsyncRepository
from distblob.reference import validate_tag
from distblob.server.errors import APIError
from distblob.server.frontdoor import location
from distblob.server.handlers.base import Context, Resource, client_closed, unless_gone
from distblob.server.responses import empty
from distblob.storage.serve import etag_matches

#: Largest manifest accepted by PUT (distribution's default limit is 4 MiB too).
MAX_MANIFEST_SIZE: Final = 4 << 20


def _known_reference(reference: str) -> None:
    """A tag that is not valid names no manifest: unknown (404), as distribution answers (its
    routes take no such reference) and the OCI conformance suite expects. A PUT of one is
    TAG_INVALID."""
    if ":" in reference:
        return
    try:
        validate_tag(reference)
    except TagInvalidError:
        raise APIError("MANIFEST_UNKNOWN", detail={"tag": reference[:128]}) from None


async def _tags_of(repo: AsyncRepository, digest: str) -> list[str]:
    """The tags that name manifest ``digest`` (for the events its delete sends)."""
    try:
        tags = await repo.manifests.tags()
    except NameUnknownError:
        return []
    found = []
    for tag in tags:
        with contextlib.suppress(ManifestUnknownError):
            if str((await repo.manifests.stat(tag)).digest) == digest:
                found.append(tag)
    return found


class Manifests:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.max_size = context.max_manifest_size

    async def get(self, request: Request) -> Response:
        """GET and HEAD (a HEAD through the cache still fetches what upstream has)."""
        repo = self.context.repository(request)
        reference = request.path_params["reference"]
        _known_reference(reference)
        manifests = repo.manifests
        head = request.method == "HEAD"
        notifier = self.context.notifier
        # A pull event with references needs the manifest itself, even for a HEAD (as Go).
        if head and (notifier is None or not notifier.include_references):
            found = await unless_gone(request, lambda: manifests.stat(reference))
            fetched = None if found is None else (b"", found)
        else:
            fetched = await unless_gone(request, lambda: manifests.get(reference))
        if fetched is None:
            return client_closed()
        body, descriptor = fetched
        etag = f'"{descriptor.digest}"'
        headers = {
            "Content-Type": descriptor.media_type or "application/octet-stream",
            "Content-Length": str(descriptor.size),
            "Docker-Content-Digest": str(descriptor.digest),
            "ETag": etag,
        }
        if_none_match = request.headers.get("if-none-match")
        if if_none_match and etag_matches(if_none_match, etag):
            del headers["Content-Length"]
            return Response(status_code=304, headers=headers)
        if notifier is not None:  # a HEAD too: Go reads the manifest for it
            tag = None if ":" in reference else reference
            notifier.manifest("pull", request, repo.name, descriptor, body, tag)
        return Response(b"" if head else body, 200, headers=headers)

    async def delete(self, request: Request) -> Response:
        repo = self.context.repository(request)
        reference = request.path_params["reference"]
        _known_reference(reference)
        notifier = self.context.notifier
        if notifier is None:
            await repo.manifests.delete(reference)
            return empty(202)
        if ":" not in reference:  # a tag (distribution 3.0)
            await repo.manifests.delete(reference)
            notifier.deleted(request, repo.name, tag=reference)
            return empty(202)
        tags = await _tags_of(repo, reference)
        await repo.manifests.delete(reference)
        # As Go: the manifest's event, then one per tag it removed.
        notifier.deleted(request, repo.name, digest=reference)
        for tag in tags:
            notifier.deleted(request, repo.name, tag=tag)
        return empty(202)

    async def put(self, request: Request) -> Response:
        repo = self.context.repository(request)
        reference = request.path_params["reference"]
        too_large = APIError(
            "MANIFEST_INVALID",
            "manifest too large",
            detail={"limit": self.max_size},
            status=413,
        )
        length = request.headers.get("content-length", "")
        if is_ascii_digits(length) and int(length) > self.max_size:
            raise too_large
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > self.max_size:
                raise too_large
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip() or None
        descriptor: Descriptor = await repo.manifests.put(reference, bytes(body), media_type)
        digest = str(descriptor.digest)
        if self.context.notifier is not None:
            tag = None if ":" in reference else reference
            self.context.notifier.manifest("push", request, repo.name, descriptor, bytes(body), tag)
        headers = {
            "Location": location(request, f"/v2/{repo.name}/manifests/{digest}"),
            "Docker-Content-Digest": digest,
        }
        if b'"subject"' in body:
            # OCI 1.1: a registry with the referrers API says it processed the subject.
            subject = json.loads(body).get("subject")
            if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
                headers["OCI-Subject"] = subject["digest"]
        return empty(201, headers)


def resources(context: Context) -> list[Resource]:
    manifests = Manifests(context)
    methods = {
        "GET": manifests.get,
        "HEAD": manifests.get,
        "PUT": manifests.put,
        "DELETE": manifests.delete,
    }
    return [Resource("/v2/{name:path}/manifests/{reference}", methods)]


__all__ = ["MAX_MANIFEST_SIZE", "Manifests", "resources"]
