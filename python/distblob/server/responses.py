"""Responses: small JSON and empty ones, and the one response that executes every blob plan.

A :class:`~distblob.interfaces.ServePlan` says what to answer to a blob GET or HEAD; whichever
registry made it (storage or the pull-through cache), :func:`plan_response` sends it. Its body
is made of regions, read by one loop (``PlanResponse._send_span``):

- a :class:`~distblob.interfaces.FileRegion` (stored bytes): on a local filesystem read with
  ``os.pread`` on one descriptor (no seeks, no Python buffering), or sent by the kernel with
  ``sendfile`` when the server offers it (:mod:`distblob.server.direct`); on other drivers
  through the region's reader. The blob is opened before anything is sent, so a blob deleted
  since it was found answers ``404 BLOB_UNKNOWN`` instead of a ``200`` with no body;
- a :class:`~distblob.interfaces.GrowingRegion` (a cold blob landing in the cache): each stretch
  is sent as it becomes available, the last byte only once the digest is verified. A failed
  transfer ends the response without its end, so the connection is dropped and no client takes
  a short body for a whole blob.

Reads of :data:`CHUNK` bytes run in worker threads; the response stops when the client leaves.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, Final

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from distblob._asgi import DIRECT_READS, ZEROCOPY_SEND, until_disconnect, zerocopy
from distblob.errors import PathNotFoundError, TransferError
from distblob.interfaces import FileRegion, GrowingRegion, ServePlan
from distblob.server.errors import APIError, error_response

#: Bytes read from storage per call (and sent per body message).
CHUNK: Final = 1 << 20

logger = logging.getLogger("distblob.server")

Read = Callable[[int, int], bytes]


def empty(status: int, headers: dict[str, str] | None = None) -> Response:
    """A response with no body (``Content-Length: 0``)."""
    return Response(status_code=status, headers={"Content-Length": "0", **(headers or {})})


def json_response(status: int, doc: Any, headers: dict[str, str] | None = None) -> Response:
    """``doc`` as compact JSON."""
    body = json.dumps(doc, separators=(",", ":")).encode()
    return Response(body, status, headers=headers, media_type="application/json")


def no_invented_length(response: Response, headers: dict[str, str]) -> Response:
    """Drop the ``content-length: 0`` Starlette adds to a response made without a body: when
    the plan names no length (upstream named none), none is sent (the body is streamed
    chunked), never a length of 0 that would end the body at once."""
    if "Content-Length" not in headers:
        response.raw_headers = [(k, v) for k, v in response.raw_headers if k != b"content-length"]
    return response


def plan_response(plan: ServePlan) -> Response:
    """The response that carries out ``plan``."""
    pieces = plan.parts or ((plan.body,) if plan.body is not None else ())
    if not pieces or plan.redirect is not None:
        response = Response(status_code=plan.status, headers=plan.headers)
        return no_invented_length(response, plan.headers) if plan.status in (200, 206) else response
    return PlanResponse(plan.status, plan.headers, pieces)


class PlanResponse(Response):
    """Streams a plan's body: one region, or for several ranges the regions of a
    ``multipart/byteranges`` body with its delimiters (bytes) between them."""

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        pieces: Sequence[bytes | FileRegion | GrowingRegion],
    ) -> None:
        super().__init__(status_code=status, headers=headers)
        no_invented_length(self, headers)
        self.pieces = pieces

    _fd: int | None = None  # the local file's descriptor, for pread and sendfile

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        growing = next((p for p in self.pieces if isinstance(p, GrowingRegion)), None)
        if growing is not None:
            await self._call_growing(scope, receive, send, growing)
            return
        try:
            read = await run_in_threadpool(self._open)
        except (FileNotFoundError, PathNotFoundError):
            gone = error_response(APIError("BLOB_UNKNOWN", detail="the blob was deleted"))
            await gone(scope, receive, send)
            return
        try:
            await until_disconnect(receive, lambda: self._stream(scope, send, read))
        finally:
            await run_in_threadpool(self._close)

    # -- stored regions ------------------------------------------------------------------------

    def _open(self) -> Read:
        """A ``read(size, offset)`` over the regions' object, and remember how to close it."""
        region = next(piece for piece in self.pieces if isinstance(piece, FileRegion))
        if region.local_path is not None:
            fd = self._fd = os.open(region.local_path, os.O_RDONLY)
            self._close: Callable[[], None] = lambda: os.close(fd)
            return lambda size, offset: os.pread(fd, size, offset)
        opener = region.reader
        if opener is None:
            raise ValueError(f"{region.path}: the region has neither a local path nor a reader")
        reader: BinaryIO = opener(region.offset)
        position = region.offset

        def read(size: int, offset: int) -> bytes:
            nonlocal reader, position
            if offset != position:  # the next range of a multipart body
                reader.close()
                reader = opener(offset)
            chunk = reader.read(size)
            position = offset + len(chunk)
            return chunk

        self._close = lambda: reader.close()
        return read

    async def _stream(self, scope: Scope, send: Send, read: Read) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        last = len(self.pieces) - 1
        file = self._file(scope)
        for index, piece in enumerate(self.pieces):
            more = index < last
            if isinstance(piece, bytes):
                await send({"type": "http.response.body", "body": piece, "more_body": more})
                continue
            assert isinstance(piece, FileRegion)
            end = piece.offset + piece.length
            sent = await self._send_span(
                send, read, file, piece.offset, end, more, direct=piece.direct
            )
            if sent < end:
                # The object shrank: the body ends short, which the client sees.
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return

    def _file(self, scope: Scope) -> BinaryIO | None:
        """The local file as the server's ``sendfile`` takes it, when it offers that."""
        if self._fd is None or not zerocopy(scope):
            return None
        return open(self._fd, "rb", buffering=0, closefd=False)

    # -- the one loop ------------------------------------------------------------------------

    @staticmethod
    async def _send_span(
        send: Send,
        read: Read,
        file: BinaryIO | None,
        offset: int,
        end: int,
        more: bool,
        *,
        direct: bool = False,
    ) -> int:
        """Send bytes ``[offset, end)``, the last message with ``more_body=more``; where the
        object ended (``end`` unless it was shorter). With ``file`` the server sends it
        itself (``sendfile``: no copy into Python, no work on the event loop); ``direct``
        lets it read a cold region past the page cache (:attr:`FileRegion.direct`)."""
        if file is not None and end > offset:
            message = {
                "type": ZEROCOPY_SEND,
                "file": file,
                "offset": offset,
                "count": end - offset,
                "more_body": more,
                DIRECT_READS: direct,
            }
            await send(message)
            return end
        position = offset
        while position < end:
            chunk = await run_in_threadpool(read, min(CHUNK, end - position), position)
            if not chunk:
                return position
            position += len(chunk)
            done = position >= end and not more
            await send({"type": "http.response.body", "body": chunk, "more_body": not done})
        if end == offset and not more:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return position

    # -- a growing region ----------------------------------------------------------------------

    async def _call_growing(
        self, scope: Scope, receive: Receive, send: Send, region: GrowingRegion
    ) -> None:
        try:
            await until_disconnect(receive, lambda: self._stream_growing(scope, send, region))
        except* TransferError as failed:
            # Returning without the end of the body makes the server close the connection: the
            # client sees a short body, never a complete one. One line says why (the fetch
            # itself logged its failure), instead of a traceback per client.
            logger.warning("aborted a blob response: %s", failed.exceptions[0])

    async def _stream_growing(self, scope: Scope, send: Send, region: GrowingRegion) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        fd = await region.open()
        # With a known length the server may send the file itself (sendfile, no copies).
        use_file = zerocopy(scope) and region.length is not None
        file = open(fd, "rb", buffering=0, closefd=False) if use_file else None  # noqa: SIM115

        def read(size: int, offset: int) -> bytes:
            return os.pread(fd, size, offset)

        try:
            offset = 0
            while True:
                limit, complete = region.available()
                if offset < limit or complete:
                    try:
                        sent = await self._send_span(send, read, file, offset, limit, not complete)
                    except EOFError:
                        raise TransferError("the cached copy shrank") from None
                    if sent < limit:
                        raise TransferError("the cached copy shrank")
                    offset = limit
                    if complete:
                        return
                    continue
                await region.wait(offset)
        finally:
            os.close(fd)


__all__ = ["CHUNK", "PlanResponse", "empty", "json_response", "no_invented_length", "plan_response"]
