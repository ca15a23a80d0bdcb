"""``/v2/<name>/blobs/uploads/``: the upload protocol (distribution's ``blobupload.go``).

``POST`` starts an upload (or mounts a blob from another repository, or stores a monolithic
upload whole); ``PATCH`` appends a chunk; ``PUT`` appends the last chunk and commits under the
client's digest; ``GET`` says where the upload stands; ``DELETE`` cancels it.

The server is stateless between requests: each request resumes the upload from storage
(:class:`UploadSession`) and closes it at its end, which saves the hash state. Two server
processes on one root (or this server and the Go registry) can therefore take turns on one
upload. Every ``Location`` carries a signed ``_state`` (:mod:`distblob.server.state`): two
requests sent on one ``Location`` never both append. Request bodies are streamed into the
upload in buffers of at most :data:`CHUNK` bytes, never held whole; a large one is read from the
socket by a thread of its own when the server offers that (:mod:`distblob.server.direct`).
"""

from __future__ import annotations

import logging
import urllib.parse

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from distblob._numbers import is_ascii_digits
from distblob.descriptor import Descriptor
from distblob.digest import Digest
from distblob.errors import (
    BlobInvalidDigestError,
    BlobInvalidLengthError,
    BlobUnknownError,
    DigestInvalidError,
    DigestUnsupportedError,
    NameInvalidError,
)
from distblob.interfaces import AsyncRepository, BlobWriter
from distblob.server import direct, state
from distblob.server.errors import APIError
from distblob.server.frontdoor import location
from distblob.server.handlers.base import Context, Resource, declared_length, run
from distblob.server.responses import CHUNK, empty
from distblob.storage.blobs import parse_digest

logger = logging.getLogger("distblob.serve")


def small_body_length(request: Request) -> int | None:
    """The declared body length when it is at most :data:`CHUNK` (read whole, then stored in
    one worker-thread call); ``None`` for a larger or chunked body (streamed)."""
    length = declared_length(request)
    if length is None or length > CHUNK:
        return None
    return None if "chunked" in request.headers.get("transfer-encoding", "") else length


def parse_content_range(header: str) -> tuple[int, int]:
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


def _remove_upload(name: str, writer: BlobWriter) -> None:
    """Remove a committed upload's directory (worker thread, after the answer). A failure is
    logged: the blob is stored, and upload purging retries the removal."""
    try:
        writer.cancel()
    except Exception as exc:
        logger.warning("could not remove committed upload %s of %s: %s", writer.id, name, exc)


def created(
    request: Request,
    repo: AsyncRepository,
    digest: str | Digest,
    *,
    cleanup: BlobWriter | None = None,
) -> Response:
    """``201 Created``; a committed upload's directory (``cleanup``) is removed once the answer
    is sent, so the client does not wait for it."""
    response = empty(
        201,
        {
            "Location": location(request, f"/v2/{repo.name}/blobs/{digest}"),
            "Docker-Content-Digest": str(digest),
        },
    )
    if cleanup is not None:
        response.background = BackgroundTask(_remove_upload, repo.name, cleanup)
    return response


class UploadSession:
    """One request's hold on an upload: the resumed :class:`~distblob.interfaces.BlobWriter`,
    the repository and the secret its ``Location`` is signed with. Storage verbs only."""

    def __init__(self, context: Context, repo: AsyncRepository, writer: BlobWriter) -> None:
        self.secret = context.secret
        self.repo = repo
        self.writer = writer

    @classmethod
    async def resume(
        cls, context: Context, request: Request, repo: AsyncRepository | None = None
    ) -> UploadSession:
        """The upload the request addresses, waiting (on the event loop) while another writer
        holds it; ``BlobUploadBusyError`` after the lock wait."""
        repo = context.repository(request) if repo is None else repo
        writer = await repo.blobs.resume(request.path_params["upload_id"])
        return cls(context, repo, writer)

    async def checked(
        self, token: str | None, content_range: str | None = None, length: int | None = None
    ) -> UploadSession:
        """Check where the request's bytes go (:meth:`check`); on failure the upload is closed."""
        try:
            self.check(token, content_range, length)
        except BaseException:
            await run(self.writer.close)
            raise
        return self

    def check(
        self,
        token: str | None,
        content_range: str | None,
        length: int | None,
        *,
        position: bool = True,
    ) -> None:
        """Check the request's ``_state`` and, with ``position``, where its bytes go.

        With ``Content-Range``, its start must be the upload's size and ``length`` (when known)
        its length, else 416 RANGE_INVALID (the OCI spec's answer to a chunk out of order, also
        on the final PUT). The range then says where the bytes go, so the ``_state`` offset is
        not checked: a client may send a chunk again on a ``Location`` it kept and learn from
        the 416 where the upload stands. Without a range the ``_state`` must be at the upload's
        size, else BLOB_UPLOAD_INVALID: two requests sent on one ``Location`` never both append.
        """
        writer = self.writer
        at = writer.size if position and content_range is None else None
        state.verify(self.secret, token, name=self.repo.name, uuid=writer.id, size=at)
        if not position or content_range is None:
            return
        start, end = parse_content_range(content_range)
        if start != writer.size or end < start:
            raise APIError(
                "RANGE_INVALID", detail={"range": content_range[:64], "size": writer.size}
            )
        if length is not None and length != end - start + 1:
            raise APIError("RANGE_INVALID", detail="Content-Range and length disagree")

    def headers(self, request: Request, size: int) -> dict[str, str]:
        """Where the upload stands, and its next ``Location`` (with a fresh ``_state``)."""
        writer = self.writer
        token = state.pack(
            self.secret,
            state.UploadState(self.repo.name, writer.id, size, state.go_time(writer.started_at)),
        )
        query = urllib.parse.urlencode({"_state": token})
        return {
            "Location": location(
                request, f"/v2/{self.repo.name}/blobs/uploads/{writer.id}?{query}"
            ),
            "Range": f"0-{max(size - 1, 0)}",
            "Docker-Upload-UUID": writer.id,
            "Content-Length": "0",
        }

    async def receive(self, request: Request) -> int:
        """Stream the request body into the upload; bounded memory (one :data:`CHUNK`).

        A body of more than :data:`CHUNK` declared bytes is read from the socket by a thread of
        its own when the server offers that (:mod:`distblob.server.direct`); otherwise, and
        under other ASGI servers, from the ``http.request`` messages.
        """
        writer = self.writer
        body_tap = direct.tap(request.scope)
        if body_tap is not None and body_tap.length > CHUNK:
            body = body_tap.take()
            if body is not None:
                return await direct.receive_into(body_tap, body, writer.write, writer.size)
        total = 0
        buffer = bytearray()
        async for piece in request.stream():
            if not piece:
                continue
            buffer += piece
            if len(buffer) >= CHUNK:
                total += await run(writer.write, buffer)
                buffer = bytearray()
        if buffer:
            total += await run(writer.write, buffer)
        return total

    def commit(self, expected: Digest, tail: bytes | None = None) -> Descriptor:
        """Append ``tail`` and commit (worker thread), leaving the upload's directory for after
        the answer (see :func:`created`); a digest or size that does not match cancels the
        upload, as distribution does."""
        try:
            return self.writer.commit(Descriptor(digest=expected), tail=tail or b"", cleanup=False)
        except (BlobInvalidDigestError, BlobInvalidLengthError, DigestUnsupportedError):
            self.writer.cancel()
            raise

    def finish(
        self, token: str | None, content_range: str | None, tail: bytes, expected: Digest
    ) -> Descriptor:
        """Check where the last chunk goes, append it and commit, then close: the final PUT
        with a small body, in one worker-thread call."""
        try:
            # An empty PUT that ends a chunked upload says nothing of a range.
            self.check(token, content_range if tail else None, len(tail))
            return self.commit(expected, tail)
        finally:
            self.writer.close()


class Uploads:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.notifier = context.notifier

    def _pushed(self, request: Request, repo: AsyncRepository, descriptor: Descriptor) -> None:
        if self.notifier is not None:
            self.notifier.blob_pushed(request, repo.name, descriptor)

    async def start(self, request: Request) -> Response:
        """POST: mount, monolithic upload, or a new upload session."""
        repo = self.context.repository(request)
        params = request.query_params
        mount, source = params.get("mount"), params.get("from")
        if mount is not None and source is not None:
            try:
                requested = Digest(mount)
                mounted = await repo.blobs.mount(source, str(requested))
            except (BlobUnknownError, NameInvalidError, DigestInvalidError, DigestUnsupportedError):
                pass  # distribution opens a new upload session when it cannot mount
            else:
                if self.notifier is not None:
                    self.notifier.blob_mounted(request, repo.name, mounted, source)
                return created(request, repo, requested)
        algorithm = params.get("digest-algorithm") or "sha256"  # empty: the default, as in Go
        digest_param = params.get("digest")
        if digest_param is None:
            # Created and closed in one worker-thread call: a new upload holds nothing.
            writer = await repo.blobs.start(algorithm=algorithm)
            return empty(202, UploadSession(self.context, repo, writer).headers(request, 0))
        # Monolithic upload: the whole blob is the POST body.
        expected = parse_digest(digest_param)
        if small_body_length(request) is not None:
            body = await request.body()  # at most CHUNK bytes
            self._pushed(
                request, repo, await repo.blobs.put(body, algorithm=algorithm, expected=expected)
            )
            return created(request, repo, expected)
        writer = await repo.blobs.create(algorithm=algorithm)
        try:
            await UploadSession(self.context, repo, writer).receive(request)
            committed = await run(writer.commit, Descriptor(digest=expected))
        except BaseException:
            await run(writer.cancel)
            raise
        self._pushed(request, repo, committed)
        return created(request, repo, expected)

    async def status(self, request: Request) -> Response:
        """GET: where the upload stands; also on a ``Location`` kept from an earlier request."""
        session = await UploadSession.resume(self.context, request)
        try:
            session.check(request.query_params.get("_state"), None, None, position=False)
            size = session.writer.size
        finally:
            await run(session.writer.close)
        return empty(204, session.headers(request, size))

    async def cancel(self, request: Request) -> Response:
        """DELETE: remove the upload."""
        session = await UploadSession.resume(self.context, request)
        try:
            session.check(request.query_params.get("_state"), None, None, position=False)
        except BaseException:
            await run(session.writer.close)
            raise
        await run(session.writer.cancel)
        return empty(204)

    async def patch(self, request: Request) -> Response:
        """PATCH: append a chunk (its ``Content-Range``, when sent, must start at the size)."""
        session = await UploadSession.resume(self.context, request)
        await session.checked(
            request.query_params.get("_state"),
            request.headers.get("content-range"),
            declared_length(request),
        )
        try:
            await session.receive(request)
            size = session.writer.size
        finally:
            await run(session.writer.close)
        return empty(202, session.headers(request, size))

    async def put(self, request: Request) -> Response:
        """PUT: append the last chunk (if any) and commit under ``?digest=``."""
        repo = self.context.repository(request)
        digest_param = request.query_params.get("digest")
        if digest_param is None:
            raise APIError("DIGEST_INVALID", "digest missing", detail="the digest parameter")
        expected = parse_digest(digest_param)
        token = request.query_params.get("_state")
        content_range = request.headers.get("content-range")
        if small_body_length(request) is not None:
            # A small (or empty) last chunk: read it, then resume, check, write, commit and
            # close in one worker-thread call.
            body = await request.body()  # at most CHUNK bytes
            context = self.context

            def finish(writer: BlobWriter) -> tuple[Descriptor, BlobWriter]:
                session = UploadSession(context, repo, writer)
                return session.finish(token, content_range, body, expected), writer

            def remove(finished: tuple[Descriptor, BlobWriter]) -> None:
                _remove_upload(repo.name, finished[1])

            # The upload's directory is removed by the same worker thread once it has handed
            # the result back, while the 201 goes out.
            committed, _ = await repo.blobs.resume_with(
                request.path_params["upload_id"], finish, after=remove
            )
            self._pushed(request, repo, committed)
            return created(request, repo, expected)
        session = await UploadSession.resume(self.context, request, repo)
        await session.checked(token, content_range, declared_length(request))
        try:
            await session.receive(request)
            committed = await run(session.commit, expected)
        finally:
            await run(session.writer.close)
        self._pushed(request, repo, committed)
        return created(request, repo, expected, cleanup=session.writer)


def resources(context: Context) -> list[Resource]:
    uploads = Uploads(context)
    name = "/v2/{name:path}"
    upload = {
        "GET": uploads.status,
        "PATCH": uploads.patch,
        "PUT": uploads.put,
        "DELETE": uploads.cancel,
    }
    return [
        Resource(f"{name}/blobs/uploads/", {"POST": uploads.start}),
        Resource(f"{name}/blobs/uploads", {"POST": uploads.start}),
        Resource(f"{name}/blobs/uploads/{{upload_id}}", upload),
    ]


__all__ = ["UploadSession", "Uploads", "created", "parse_content_range", "resources"]
