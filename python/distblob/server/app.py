"""The OCI distribution HTTP API over a :class:`~distblob.registry.Registry`, as an ASGI app.

``create_app(registry, secret=...)`` returns a Starlette application any ASGI server can run
(``distblob serve`` runs it under uvicorn). The routes are distribution's ``/v2/`` API; the
repository name is a multi-component path, so routes are tried most specific first and the name
is validated by :meth:`Registry.repository` (``NAME_INVALID``), never by the router.

The server is stateless between requests: an upload is resumed from storage at the start of
every request (``repo.blobs.resume``) and closed at its end, which saves the hash state. Two
server processes on one root (or this server and the Go registry) can therefore take turns on
one upload. Storage calls block, so they run in worker threads; request bodies are streamed
into the upload in buffers of at most :data:`CHUNK` bytes, never held whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import anyio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distblob._asgi import (
    CLIENT_CLOSED,
    ZEROCOPY_SEND,
    unless_disconnected,
    until_disconnect,
    zerocopy,
)
from distblob._numbers import is_ascii_digits
from distblob.descriptor import Descriptor
from distblob.digest import Digest
from distblob.errors import (
    BlobInvalidDigestError,
    BlobInvalidLengthError,
    BlobUnknownError,
    BlobUploadBusyError,
    DigestInvalidError,
    DigestUnsupportedError,
    NameInvalidError,
    PathNotFoundError,
    TagInvalidError,
)
from distblob.interfaces import FileRegion, ServePlan
from distblob.proxy import Proxy, TransferError, UpstreamAuthError, UpstreamError
from distblob.registry import Registry, Repository
from distblob.server import direct, state
from distblob.server.config import ProxyConfig, UploadPurging
from distblob.server.errors import API_VERSION_HEADER, APIError, error_body, error_response
from distblob.storage import uploadlock
from distblob.storage.blobs import parse_digest
from distblob.storage.driver import StorageDriver
from distblob.storage.paths import validate_tag
from distblob.storage.purge import UploadPurger
from distblob.storage.serve import etag_matches
from distblob.storage.writer import BlobWriter

#: Bytes handed to the storage layer (or read from it) per call.
CHUNK: Final = 1 << 20
#: Largest manifest accepted by PUT (distribution's default limit is 4 MiB too).
MAX_MANIFEST_SIZE: Final = 4 << 20
#: Catalog page size without ``n``, and the most one page may hold (distribution's defaults).
CATALOG_DEFAULT: Final = 100
CATALOG_MAX: Final = 1000

OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"

access_logger = logging.getLogger("distblob.access")

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await run_in_threadpool(fn, *args, **kwargs)


def _remove_upload(writer: BlobWriter) -> None:
    """Remove a committed upload's directory (worker thread, after the answer). A failure is
    logged: the blob is stored, and upload purging retries the removal."""
    try:
        writer.cancel()
    except Exception as exc:
        logging.getLogger("distblob.serve").warning(
            "could not remove committed upload %s of %s: %s", writer.id, writer.repository, exc
        )


def _empty(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, headers={"Content-Length": "0", **(headers or {})})


def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return Response(body, status, headers=headers, media_type="application/json")


def _int_param(request: Request, key: str) -> int | None:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return None
    if not is_ascii_digits(raw) or len(raw) > 9:
        raise APIError("PAGINATION_NUMBER_INVALID", detail={key: raw[:64]})
    return int(raw)


def _declared_length(request: Request) -> int | None:
    """The body length ``Content-Length`` declares, if it is a number."""
    raw = request.headers.get("content-length")
    return int(raw) if raw and is_ascii_digits(raw) and len(raw) <= 18 else None


def _small_body_length(request: Request) -> int | None:
    """The declared body length when it is at most :data:`CHUNK` (read whole, then stored in
    one worker-thread call); ``None`` for a larger or chunked body (streamed)."""
    length = _declared_length(request)
    if length is None or length > CHUNK:
        return None
    return None if "chunked" in request.headers.get("transfer-encoding", "") else length


@dataclass(frozen=True)
class _LastChunk:
    """The last chunk of an upload, sent with its final PUT."""

    token: str | None  # the ``_state`` of the request
    content_range: str | None
    body: bytes


def _check_position(
    secret: str | bytes,
    writer: BlobWriter,
    token: str | None,
    content_range: str | None,
    length: int | None,
) -> None:
    """Check where a request's bytes go in the upload ``writer`` holds.

    With ``Content-Range``, its start must be the upload's size and ``length`` (when known) its
    length, else 416 RANGE_INVALID (the OCI spec's answer to a chunk out of order, also on the
    final PUT). The range then says where the bytes go, so the ``_state`` offset is not checked:
    a client may send a chunk again on a ``Location`` it kept and learn from the 416 where the
    upload stands. Without a range the ``_state`` must be at the upload's size, else
    BLOB_UPLOAD_INVALID: two requests sent on one ``Location`` never both append.
    """
    state.verify(
        secret,
        token,
        name=writer.repository,
        uuid=writer.id,
        size=writer.size if content_range is None else None,
    )
    if content_range is None:
        return
    start, end = _parse_content_range(content_range)
    if start != writer.size or end < start:
        raise APIError("RANGE_INVALID", detail={"range": content_range[:64], "size": writer.size})
    if length is not None and length != end - start + 1:
        raise APIError("RANGE_INVALID", detail="Content-Range and length disagree")


def _parse_content_range(header: str) -> tuple[int, int]:
    """``<start>-<end>`` (inclusive; ``bytes `` / ``bytes=`` prefixes tolerated)."""
    text = header.strip()
    for prefix in ("bytes ", "bytes="):
        if text.startswith(prefix):
            text = text[len(prefix) :].split("/", 1)[0].strip()
    first, dash, last = text.partition("-")
    numbers = is_ascii_digits(first) and is_ascii_digits(last)
    if not dash or not numbers or len(first) + len(last) > 36:
        raise APIError("RANGE_INVALID", detail=f"malformed Content-Range {header[:64]!r}")
    return int(first), int(last)


async def _resume_upload(repo: Repository, upload_id: str) -> BlobWriter:
    """Resume an upload, waiting on the event loop (never in a worker thread) while another
    writer holds it: a slow writer and its waiters must not take the worker threads every
    other request needs. ``BlobUploadBusyError`` after ``uploadlock.LOCK_WAIT`` seconds."""
    deadline = time.monotonic() + uploadlock.LOCK_WAIT
    pause = 0.005
    while True:
        try:
            writer: BlobWriter = await _run(repo.blobs.resume, upload_id, wait=0)
            return writer
        except BlobUploadBusyError:
            if time.monotonic() >= deadline:
                raise
        await anyio.sleep(pause)
        pause = min(pause * 2, 0.1)


class RegionResponse(Response):
    """Streams the pieces of a blob response: one :class:`FileRegion`, or for several ranges the
    regions of a ``multipart/byteranges`` body with its delimiters (bytes) between them.

    Regions are read in :data:`CHUNK` reads done in worker threads: a local file with
    ``os.pread`` on one descriptor (no seeks, no Python buffering), or sent with ``sendfile``
    when the server offers it; other drivers through their ``reader``. The blob is opened
    before anything is sent, so a blob deleted since it was found (a ``gc`` or a DELETE in
    between) answers ``404 BLOB_UNKNOWN`` instead of a ``200`` with no body.
    """

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        pieces: Sequence[bytes | FileRegion],
        driver: StorageDriver,
    ) -> None:
        super().__init__(status_code=status, headers=headers)
        self.pieces = pieces
        self.driver = driver

    _fd: int | None = None  # the local file's descriptor, for sendfile

    def _open(self) -> Callable[[int, int], bytes]:
        """A ``read(size, offset)`` over the regions' object, and remember how to close it."""
        region = next(piece for piece in self.pieces if isinstance(piece, FileRegion))
        if region.local_path is not None:
            fd = self._fd = os.open(region.local_path, os.O_RDONLY)
            self._close: Callable[[], None] = lambda: os.close(fd)
            return lambda size, offset: os.pread(fd, size, offset)
        driver, path = self.driver, region.path
        reader = driver.reader(path, region.offset)
        position = region.offset

        def read(size: int, offset: int) -> bytes:
            nonlocal reader, position
            if offset != position:  # the next range of a multipart body
                reader.close()
                reader = driver.reader(path, offset)
            chunk = reader.read(size)
            position = offset + len(chunk)
            return chunk

        self._close = lambda: reader.close()
        return read

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            read = await _run(self._open)
        except (FileNotFoundError, PathNotFoundError):
            gone = error_response(APIError("BLOB_UNKNOWN", detail="the blob was deleted"))
            await gone(scope, receive, send)
            return
        try:
            await until_disconnect(receive, lambda: self._stream(scope, send, read))
        finally:
            await _run(self._close)

    async def _stream(self, scope: Scope, send: Send, read: Callable[[int, int], bytes]) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        last = len(self.pieces) - 1
        for index, piece in enumerate(self.pieces):
            more = index < last
            if isinstance(piece, bytes):
                await send({"type": "http.response.body", "body": piece, "more_body": more})
            elif not await self._send_region(scope, send, read, piece, more):
                return  # the object shrank: the body ended short, the client sees it

    async def _send_region(
        self,
        scope: Scope,
        send: Send,
        read: Callable[[int, int], bytes],
        region: FileRegion,
        more: bool,
    ) -> bool:
        """Send one region; ``False`` when the object ended before it (the body is ended)."""
        if self._fd is not None and region.length and zerocopy(scope):
            # The kernel sends the file: no copy into Python, no work on the event loop.
            message = {
                "type": ZEROCOPY_SEND,
                "file": open(self._fd, "rb", buffering=0, closefd=False),  # noqa: SIM115
                "offset": region.offset,
                "count": region.length,
                "more_body": more,
            }
            await send(message)
            return True
        remaining, offset = region.length, region.offset
        while remaining > 0:
            chunk = await _run(read, min(CHUNK, remaining), offset)
            if not chunk:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return False
            offset += len(chunk)
            remaining -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if not more:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True


class _API:
    """The request handlers, bound to one registry and one secret."""

    def __init__(
        self,
        registry: Registry,
        secret: bytes | str,
        max_manifest_size: int,
        proxy: Proxy | None = None,
    ) -> None:
        self.registry = registry
        self.secret = secret
        self.max_manifest_size = max_manifest_size
        self.proxy = proxy

    def _no_push(self) -> None:
        """A pull-through cache takes no pushes and no deletes (405 UNSUPPORTED)."""
        if self.proxy is not None:
            raise APIError("UNSUPPORTED", detail="this registry is a pull-through cache")

    # -- helpers -----------------------------------------------------------------------------

    def _repo(self, request: Request) -> Repository:
        return self.registry.repository(request.path_params["name"])

    def _upload_headers(self, repo: Repository, writer: BlobWriter, size: int) -> dict[str, str]:
        token = state.pack(
            self.secret,
            state.UploadState(repo.name, writer.id, size, state.go_time(writer.started_at)),
        )
        query = urllib.parse.urlencode({"_state": token})
        return {
            "Location": f"/v2/{repo.name}/blobs/uploads/{writer.id}?{query}",
            "Range": f"0-{max(size - 1, 0)}",
            "Docker-Upload-UUID": writer.id,
            "Content-Length": "0",
        }

    @staticmethod
    def _created(repo: Repository, digest: str, *, cleanup: BlobWriter | None = None) -> Response:
        """``201 Created``; a committed upload's directory (``cleanup``) is removed once the
        answer is sent, so the client does not wait for it."""
        response = _empty(
            201,
            {"Location": f"/v2/{repo.name}/blobs/{digest}", "Docker-Content-Digest": digest},
        )
        if cleanup is not None:
            response.background = BackgroundTask(_remove_upload, cleanup)
        return response

    async def _resume(
        self,
        request: Request,
        *,
        check_position: bool = True,
        content_range: str | None = None,
        length: int | None = None,
    ) -> BlobWriter:
        """The upload the request addresses, its ``_state`` verified and, with
        ``check_position``, where the request's bytes go (see :func:`_check_position`)."""
        repo = self._repo(request)
        writer = await _resume_upload(repo, request.path_params["upload_id"])
        try:
            token = request.query_params.get("_state")
            if check_position:
                _check_position(self.secret, writer, token, content_range, length)
            else:
                state.verify(self.secret, token, name=repo.name, uuid=writer.id, size=None)
        except BaseException:
            await _run(writer.close)
            raise
        return writer

    @staticmethod
    async def _receive_into(request: Request, writer: BlobWriter) -> int:
        """Stream the request body into ``writer``; bounded memory (one :data:`CHUNK`).

        A body of more than :data:`CHUNK` declared bytes is read from the socket by a thread of
        its own when the server offers that (:mod:`distblob.server.direct`); otherwise, and
        under other ASGI servers, from the ``http.request`` messages.
        """
        body_tap = direct.tap(request.scope)
        if body_tap is not None and body_tap.length > CHUNK:
            body = body_tap.take()
            if body is not None:
                return await direct.receive_into(body_tap, body, writer.write)
        total = 0
        buffer = bytearray()
        async for piece in request.stream():
            if not piece:
                continue
            buffer += piece
            if len(buffer) >= CHUNK:
                total += await _run(writer.write, buffer)
                buffer = bytearray()
        if buffer:
            total += await _run(writer.write, buffer)
        return total

    # -- base, catalog -----------------------------------------------------------------------

    async def base(self, request: Request) -> Response:
        return _json(200, {})

    async def catalog(self, request: Request) -> Response:
        n = _int_param(request, "n")
        limit = CATALOG_DEFAULT if n is None else min(n, CATALOG_MAX)
        last = request.query_params.get("last")
        names = await _run(self.registry.catalog, limit + 1, last)
        headers = {}
        if len(names) > limit:
            names = names[:limit]
            if names:
                query = urllib.parse.urlencode({"n": limit, "last": names[-1]})
                headers["Link"] = f'</v2/_catalog?{query}>; rel="next"'
        return _json(200, {"repositories": names}, headers)

    # -- blobs -------------------------------------------------------------------------------

    async def blob(self, request: Request) -> Response:
        repo = self._repo(request)
        digest = request.path_params["digest"]
        if request.method == "DELETE":
            self._no_push()
            await _run(repo.blobs.delete, digest)
            return _empty(202)
        if self.proxy is not None:
            proxy = self.proxy
            served = await _from_upstream(
                request,
                lambda: proxy.blobs.serve(
                    repo,
                    parse_digest(digest),
                    method=request.method,
                    range=request.headers.get("range"),
                    if_none_match=request.headers.get("if-none-match"),
                ),
            )
            if served is None:
                return Response(status_code=CLIENT_CLOSED)
            if isinstance(served, Response):
                return served
            return self._execute(served)
        plan: ServePlan = await _run(
            repo.blobs.serve_blob,
            digest,
            method=request.method,
            range=request.headers.get("range"),
            if_none_match=request.headers.get("if-none-match"),
        )
        return self._execute(plan)

    def _execute(self, plan: ServePlan) -> Response:
        pieces = plan.parts or ((plan.body,) if plan.body is not None else ())
        if not pieces or plan.redirect is not None:
            return Response(status_code=plan.status, headers=plan.headers)
        return RegionResponse(plan.status, plan.headers, pieces, self.registry.driver)

    # -- uploads -----------------------------------------------------------------------------

    async def start_upload(self, request: Request) -> Response:
        self._no_push()
        repo = self._repo(request)
        params = request.query_params
        mount, source = params.get("mount"), params.get("from")
        if mount is not None and source is not None:
            try:
                requested = Digest(mount)
                await _run(repo.blobs.mount, source, requested)
            except (BlobUnknownError, NameInvalidError, DigestInvalidError, DigestUnsupportedError):
                pass  # distribution opens a new upload session when it cannot mount
            else:
                return self._created(repo, requested)
        algorithm = params.get("digest-algorithm") or "sha256"  # empty: the default, as in Go
        digest_param = params.get("digest")
        expected = parse_digest(digest_param) if digest_param is not None else None
        if expected is None:

            def open_upload() -> tuple[BlobWriter, int]:
                writer = repo.blobs.create(algorithm=algorithm)
                size = writer.size
                writer.close()
                return writer, size

            writer, size = await _run(open_upload)
            return _empty(202, self._upload_headers(repo, writer, size))
        # Monolithic upload: the whole blob is the POST body.
        if _small_body_length(request) is not None:
            body = await request.body()  # at most CHUNK bytes
            await _run(self._store_small, repo, body, expected, algorithm)
            return self._created(repo, expected)
        writer = await _run(repo.blobs.create, algorithm=algorithm)
        try:
            await self._receive_into(request, writer)
            await _run(writer.commit, Descriptor(digest=expected))
        except BaseException:
            await _run(writer.cancel)
            raise
        return self._created(repo, expected)

    async def upload(self, request: Request) -> Response:
        self._no_push()
        method = request.method
        if method == "PATCH":
            return await self._patch(request)
        if method == "PUT":
            return await self._put(request)
        repo = self._repo(request)
        if method == "DELETE":
            writer = await self._resume(request, check_position=False)
            await _run(writer.cancel)
            return _empty(204)
        # GET, the upload's status: also on a Location kept from an earlier request (the
        # answer says where the upload stands).
        writer = await self._resume(request, check_position=False)
        size = writer.size
        await _run(writer.close)
        headers = self._upload_headers(repo, writer, size)
        return _empty(204, headers)

    async def _patch(self, request: Request) -> Response:
        repo = self._repo(request)
        writer = await self._resume(
            request,
            content_range=request.headers.get("content-range"),
            length=_declared_length(request),
        )
        try:
            await self._receive_into(request, writer)
            size = writer.size
        finally:
            await _run(writer.close)
        return _empty(202, self._upload_headers(repo, writer, size))

    async def _put(self, request: Request) -> Response:
        repo = self._repo(request)
        digest_param = request.query_params.get("digest")
        if digest_param is None:
            raise APIError("DIGEST_INVALID", "digest missing", detail="the digest parameter")
        expected = parse_digest(digest_param)
        content_range = request.headers.get("content-range")
        if _small_body_length(request) is not None:
            # A small (or empty) last chunk: read it, then resume, write, commit and close in
            # one worker-thread call instead of four.
            body = await request.body()  # at most CHUNK bytes
            last = _LastChunk(request.query_params.get("_state"), content_range, body)
            upload_id = request.path_params["upload_id"]
            try:
                finished = await _run(self._finish_upload, repo, upload_id, last, expected)
            except BlobUploadBusyError:
                writer = await _resume_upload(repo, upload_id)  # wait for the other writer
                finished = await _run(self._finish_writer, writer, last, expected)
            return self._created(repo, expected, cleanup=finished)
        writer = await self._resume(
            request, content_range=content_range, length=_declared_length(request)
        )
        try:
            await self._receive_into(request, writer)
            await _run(self._commit_or_cancel, writer, expected)
        finally:
            await _run(writer.close)
        return self._created(repo, expected, cleanup=writer)

    @staticmethod
    def _store_small(repo: Repository, body: bytes, expected: Digest, algorithm: str) -> None:
        """Store a small monolithic upload (worker thread): as a whole, checked against
        ``expected`` as it is hashed (no upload directory), when the digest is in the upload's
        algorithm; otherwise through an upload, whose commit links the alias."""
        if expected.algorithm == algorithm:
            repo.blobs.put(body, algorithm=algorithm, expected=expected)  # hashed once
            return
        writer = repo.blobs.create(algorithm=algorithm)
        try:
            writer.write(body)
            writer.commit(Descriptor(digest=expected))
        except BaseException:
            writer.cancel()
            raise

    def _finish_upload(
        self, repo: Repository, upload_id: str, last: _LastChunk, expected: Digest
    ) -> BlobWriter:
        """Resume an upload, check where the last chunk goes, append it, commit (worker
        thread). ``BlobUploadBusyError`` at once when another writer holds the upload."""
        return self._finish_writer(repo.blobs.resume(upload_id, wait=0), last, expected)

    def _finish_writer(self, writer: BlobWriter, last: _LastChunk, expected: Digest) -> BlobWriter:
        """:meth:`_finish_upload` with the upload already resumed."""
        try:
            # An empty PUT that ends a chunked upload says nothing of a range.
            content_range = last.content_range if last.body else None
            _check_position(self.secret, writer, last.token, content_range, len(last.body))
            self._commit_or_cancel(writer, expected, last.body)
        finally:
            writer.close()
        return writer

    @staticmethod
    def _commit_or_cancel(writer: BlobWriter, expected: Digest, last: bytes = b"") -> None:
        """Append ``last`` and commit, leaving the upload's directory for after the answer
        (see ``_created``)."""
        try:
            writer.commit_with(last, Descriptor(digest=expected), cleanup=False)
        except (BlobInvalidDigestError, BlobInvalidLengthError, DigestUnsupportedError):
            # distribution cancels an upload whose content does not match its digest.
            writer.cancel()
            raise

    # -- manifests, tags, referrers ----------------------------------------------------------

    async def manifest(self, request: Request) -> Response:
        repo = self._repo(request)
        reference = request.path_params["reference"]
        method = request.method
        if method in ("PUT", "DELETE"):
            self._no_push()
        if method == "PUT":
            return await self._put_manifest(request, repo, reference)
        if ":" not in reference:
            try:
                validate_tag(reference)
            except TagInvalidError:
                # No manifest has this name: unknown (404), as distribution answers (its routes
                # take no such reference) and the OCI conformance suite expects. A PUT of one
                # is TAG_INVALID.
                raise APIError("MANIFEST_UNKNOWN", detail={"tag": reference[:128]}) from None
        if method == "DELETE":
            await _run(repo.manifests.delete, reference)
            return _empty(202)
        if self.proxy is not None:
            proxy = self.proxy
            fetched = await _from_upstream(request, lambda: proxy.manifests.get(repo, reference))
            if fetched is None:
                return Response(status_code=CLIENT_CLOSED)
            body, descriptor = fetched
            if method == "HEAD":
                body = b""
        elif method == "HEAD":
            descriptor = await _run(repo.manifests.stat, reference)
            body = b""
        else:
            body, descriptor = await _run(repo.manifests.get, reference)
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
        return Response(body, 200, headers=headers)

    async def _put_manifest(self, request: Request, repo: Repository, reference: str) -> Response:
        too_large = APIError(
            "MANIFEST_INVALID",
            "manifest too large",
            detail={"limit": self.max_manifest_size},
            status=413,
        )
        length = request.headers.get("content-length", "")
        if is_ascii_digits(length) and int(length) > self.max_manifest_size:
            raise too_large
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > self.max_manifest_size:
                raise too_large
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip() or None
        descriptor: Descriptor = await _run(repo.manifests.put, reference, bytes(body), media_type)
        digest = str(descriptor.digest)
        location = f"/v2/{repo.name}/manifests/{digest}"
        headers = {"Location": location, "Docker-Content-Digest": digest}
        if b'"subject"' in body:
            # OCI 1.1: a registry with the referrers API says it processed the subject.
            subject = json.loads(body).get("subject")
            if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
                headers["OCI-Subject"] = subject["digest"]
        return _empty(201, headers)

    async def tags(self, request: Request) -> Response:
        repo = self._repo(request)
        n = _int_param(request, "n")
        last = request.query_params.get("last")
        if self.proxy is not None:
            proxy = self.proxy
            listed = await _from_upstream(request, lambda: proxy.manifests.tags(repo))
            if listed is None:
                return Response(status_code=CLIENT_CLOSED)
            tags = listed
        else:
            tags = await _run(repo.manifests.tags)
        if last is not None:
            tags = [tag for tag in tags if tag > last]
        headers = {}
        if n is not None and len(tags) > n:
            tags = tags[:n]
            if tags:
                query = urllib.parse.urlencode({"n": n, "last": tags[-1]})
                headers["Link"] = f'</v2/{repo.name}/tags/list?{query}>; rel="next"'
        return _json(200, {"name": repo.name, "tags": tags}, headers)

    async def referrers(self, request: Request) -> Response:
        repo = self._repo(request)
        artifact_type = request.query_params.get("artifactType") or None
        digest = request.path_params["digest"]
        if self.proxy is not None:
            proxy = self.proxy
            index = await _from_upstream(
                request, lambda: proxy.manifests.referrers(repo, digest, artifact_type)
            )
            if index is None:
                return Response(status_code=CLIENT_CLOSED)
        else:
            index = await _run(repo.manifests.referrers, digest, artifact_type)
        body = json.dumps(index, separators=(",", ":")).encode()
        headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else None
        return Response(body, 200, headers=headers, media_type=OCI_INDEX)


@contextlib.contextmanager
def _upstream_errors() -> Iterator[None]:
    """A pull-through cache's upstream failures as OCI errors (403 DENIED, 429 TOOMANYREQUESTS
    with upstream's ``Retry-After``, 502 UNKNOWN)."""
    try:
        yield
    except UpstreamAuthError as exc:
        raise APIError("DENIED", "upstream registry denied access", detail=str(exc)) from None
    except (UpstreamError, TransferError) as exc:
        if isinstance(exc, UpstreamError) and exc.status == 429:
            limited = APIError("TOOMANYREQUESTS", "upstream registry is rate limiting")
            retry_after = exc.retry_after
            if retry_after and retry_after.isascii() and retry_after.isprintable():
                limited.headers["Retry-After"] = retry_after
            raise limited from None
        raise APIError(
            "UNKNOWN", "upstream registry unavailable", detail=str(exc), status=502
        ) from None


async def _from_upstream(request: Request, work: Callable[[], Awaitable[T]]) -> T | None:
    """``work`` of a pull-through cache, its upstream failures as OCI errors; ``None`` when the
    client left before it was done (see :func:`~distblob._asgi.unless_disconnected`)."""
    with _upstream_errors():
        return await unless_disconnected(request.receive, work)


async def _to_base(request: Request) -> Response:
    return RedirectResponse("/v2/", status_code=301)


def _guarded(handler: Handler) -> Handler:
    """Turn every exception of ``handler`` into an OCI error response."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ClientDisconnect:
            return _empty(400)  # nobody is listening; the access log records it
        except Exception as exc:
            return error_response(exc, head=request.method == "HEAD")

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing misses: an unknown path (404) or a method a route does not take (405)."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 405:
        error = APIError("UNSUPPORTED", detail="method not allowed")
        if isinstance(exc, HTTPException) and exc.headers:
            error.headers.update(exc.headers)  # Allow: the methods the route takes (RFC 9110)
        return error_response(error, head=request.method == "HEAD")
    body = error_body("NOT_FOUND", "not found", None)
    return Response(body, 404, media_type="application/json")


def _unsupported_transfer_coding(scope: Scope) -> Response | None:
    """``501`` for a body sent with a transfer coding other than ``chunked`` (``gzip,
    chunked``, say): the server would store the still-encoded bytes (Go's net/http answers 501
    too)."""
    for key, value in scope.get("headers", []):
        if key != b"transfer-encoding":
            continue
        codings = [c.strip().lower() for c in value.decode("latin-1").split(",") if c.strip()]
        if any(coding not in ("chunked", "identity") for coding in codings):
            detail = {"Transfer-Encoding": value.decode("latin-1")[:64]}
            return error_response(APIError("UNSUPPORTED", detail=detail, status=501))
    return None


class Envelope:
    """ASGI middleware: the API version header on every response, and one access-log line per
    request (``logfmt`` on the ``distblob.access`` logger)."""

    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        answered: float | None = None  # when the response ended (background tasks may follow)
        status = 0
        sent = 0
        name, value = API_VERSION_HEADER

        async def send_with_header(message: Message) -> None:
            nonlocal status, sent, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (name.lower().encode(), value.encode())]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == ZEROCOPY_SEND:
                sent += int(message.get("count") or 0)
            await send(message)
            if message["type"] != "http.response.start" and not message.get("more_body"):
                answered = time.monotonic()

        try:
            unsupported = _unsupported_transfer_coding(scope)
            if unsupported is not None:
                await unsupported(scope, receive, send_with_header)
            else:
                await self.app(scope, receive, send_with_header)
        except asyncio.CancelledError:
            # Only the server cancels a request's task: a stop whose drain timeout ran out
            # (``http.draintimeout``). The response, if begun, is cut short; the server closes
            # the connection. One line says so, instead of the server's traceback per request.
            status = status or 503
            logging.getLogger("distblob.serve").warning(
                "request cancelled as the server stops: %s %s",
                scope.get("method", "-"),
                json.dumps(scope.get("path", "")),
            )
        finally:
            if self.access_log and access_logger.isEnabledFor(logging.INFO):
                client = scope.get("client") or ("-", 0)
                access_logger.info(
                    "method=%s path=%s status=%d bytes=%d duration_ms=%.1f client=%s:%s",
                    scope.get("method", "-"),
                    json.dumps(scope.get("path", "")),
                    status,
                    sent,
                    ((answered or time.monotonic()) - started) * 1000,
                    client[0],
                    client[1],
                )


def _purging_lifespan(
    registry: Registry, purging: UploadPurging | None, proxy: Proxy | None = None
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """Run upload purging in the background while the app is served (when enabled)."""

    async def purge_forever() -> None:
        assert purging is not None
        purger = UploadPurger(
            registry, age=purging.age, interval=purging.interval, dry_run=purging.dryrun
        )
        while True:
            try:
                purged = await _run(purger.run_if_due) or []
            except Exception:
                logging.getLogger("distblob.purge").exception("upload purging failed")
            else:
                if purged:
                    access_logger.info("upload purging: %d uploads", len(purged))
            await anyio.sleep(max(purging.interval, 1.0))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if proxy is not None:
                await stack.enter_async_context(proxy.running())
            if purging is None or not purging.enabled:
                yield
                return
            async with anyio.create_task_group() as group:
                group.start_soon(purge_forever)
                yield
                group.cancel_scope.cancel()

    return lifespan


def create_app(
    registry: Registry,
    *,
    secret: bytes | str,
    max_manifest_size: int = MAX_MANIFEST_SIZE,
    access_log: bool = True,
    upload_purging: UploadPurging | None = None,
    proxy: ProxyConfig | Proxy | None = None,
) -> ASGIApp:
    """The OCI distribution API over ``registry`` as an ASGI application.

    ``secret`` signs upload Locations (distribution's ``http.secret``): every process serving
    one root must share it, and sharing it with a Go registry on that root lets uploads move
    between the two. ``upload_purging`` (off by default here; on by default in ``distblob
    serve``, as in distribution) removes old uploads once at startup and then every
    ``interval``, from the ASGI lifespan.

    ``proxy`` (``proxy:`` in the config, or a ready :class:`~distblob.proxy.Proxy`) makes the
    app a pull-through cache of that upstream: pulls are served from ``registry`` and filled
    from upstream, pushes and deletes answer 405 UNSUPPORTED, resumable digests are off, and
    the TTL schedule runs in the lifespan.
    """
    if not secret:
        raise ValueError("an HTTP secret is required to sign upload locations")
    if isinstance(proxy, ProxyConfig):
        proxy = Proxy(
            registry,
            proxy.remoteurl,
            username=proxy.username,
            password=proxy.password,
            ttl=proxy.ttl,
        )
    api = _API(registry, secret, max_manifest_size, proxy)
    name = "/v2/{name:path}"
    routes = [
        Route("/v2/", _guarded(api.base), methods=["GET"]),
        # As distribution's router (strict slashes): the base without its slash is redirected.
        Route("/v2", _to_base, methods=["GET"]),
        Route("/v2/_catalog", _guarded(api.catalog), methods=["GET"]),
        Route(f"{name}/tags/list", _guarded(api.tags), methods=["GET"]),
        Route(
            f"{name}/manifests/{{reference}}",
            _guarded(api.manifest),
            methods=["GET", "HEAD", "PUT", "DELETE"],
        ),
        Route(f"{name}/referrers/{{digest}}", _guarded(api.referrers), methods=["GET"]),
        Route(f"{name}/blobs/uploads/", _guarded(api.start_upload), methods=["POST"]),
        Route(f"{name}/blobs/uploads", _guarded(api.start_upload), methods=["POST"]),
        Route(
            f"{name}/blobs/uploads/{{upload_id}}",
            _guarded(api.upload),
            methods=["GET", "PATCH", "PUT", "DELETE"],
        ),
        Route(f"{name}/blobs/{{digest}}", _guarded(api.blob), methods=["GET", "HEAD", "DELETE"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error},
        lifespan=_purging_lifespan(registry, upload_purging, proxy),
    )
    app.router.redirect_slashes = False
    return Envelope(app, access_log=access_log)


__all__ = ["CHUNK", "MAX_MANIFEST_SIZE", "Envelope", "RegionResponse", "create_app"]
