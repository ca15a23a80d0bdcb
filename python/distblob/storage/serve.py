"""Planning a blob response: status and headers for GET and HEAD, with Range and If-None-Match.

Several ranges in one ``Range`` header get one ``multipart/byteranges`` response, as the Go
registry sends them (``http.ServeContent``).

Framework-free on purpose: :func:`plan` returns a :class:`~distblob.interfaces.ServePlan` and the
HTTP layer only executes it. Headers follow distribution's ``ServeBlob``: ``ETag``,
``Cache-Control``, ``Docker-Content-Digest``, ``Content-Type``, ``Content-Length`` and
``Accept-Ranges``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import BinaryIO

from distblob._numbers import is_ascii_digits
from distblob.descriptor import DEFAULT_MEDIA_TYPE, Descriptor
from distblob.digest import Digest
from distblob.interfaces import FileRegion, ServePlan

#: Blobs never change, so caches may keep them for a year (distribution's value).
CACHE_CONTROL = "max-age=31536000"


def _one_range(spec: str, size: int) -> tuple[int, int] | bool | None:
    """One ``first-last``, ``first-`` or ``-suffix`` of a byte-range set: ``(first, last)``,
    ``False`` when it lies past the end (or asks for no bytes), ``None`` when malformed."""
    first_text, dash, last_text = spec.partition("-")
    first_text, last_text = first_text.strip(), last_text.strip()
    if not dash or not (is_ascii_digits(first_text) or first_text == ""):
        return None
    if last_text and not is_ascii_digits(last_text):
        return None
    if first_text == "":
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            return False
        return max(0, size - suffix), size - 1
    first = int(first_text)
    # A range starting at or past the end is unsatisfiable whatever its last position (Go's
    # order); otherwise a last position before the first makes it invalid.
    if first >= size:
        return False
    if last_text and int(last_text) < first:
        return None
    last = int(last_text) if last_text else size - 1
    return first, min(last, size - 1)


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | bool | None:
    """The inclusive byte ranges a ``Range`` header asks for, in its order.

    Returns the satisfiable ranges (those past the end are dropped, as Go's ``ServeContent``
    does), ``False`` when none is satisfiable or one is malformed (answer 416, as Go does and
    the OCI conformance suite expects; RFC 9110 lets a server reject an invalid range), and
    ``None`` when the header is to be ignored and the whole blob sent: another unit (RFC 9110
    says to ignore it), no range at all, or ranges adding up to more than the blob (as Go
    does). There is no limit on their number, as in Go's ``ServeContent`` (lazy-pulling
    clients ask for hundreds or thousands); what they add up to bounds the answer, and the
    server's limit on a request's headers bounds the header.
    """
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes":
        return None
    specs = [part.strip() for part in spec.split(",")]
    specs = [part for part in specs if part]  # empty list elements are allowed and skipped
    if not specs:
        return None
    ranges = []
    for part in specs:
        wanted = _one_range(part, size)
        if wanted is None:
            return False
        if wanted is not False:
            assert isinstance(wanted, tuple)
            ranges.append(wanted)
    if not ranges:
        return False
    if sum(last - first + 1 for first, last in ranges) > size:
        return None
    return ranges


def multipart(
    ranges: list[tuple[int, int]],
    size: int,
    content_type: str,
    region: Callable[[int, int], FileRegion],
) -> tuple[str, int, tuple[bytes | FileRegion, ...]]:
    """A ``multipart/byteranges`` body for ``ranges`` of a blob of ``size`` bytes, as Go's
    ``ServeContent`` writes it: its ``Content-Type``, its length, and its pieces in order (the
    delimiters and part headers as bytes, each range as ``region(offset, length)``)."""
    boundary = secrets.token_hex(16)
    pieces: list[bytes | FileRegion] = []
    length = 0
    for index, (first, last) in enumerate(ranges):
        header = (
            (b"\r\n" if index else b"")
            + f"--{boundary}\r\n"
            f"Content-Range: bytes {first}-{last}/{size}\r\n"
            f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
        )
        pieces += [header, region(first, last - first + 1)]
        length += len(header) + last - first + 1
    closing = f"\r\n--{boundary}--\r\n".encode("latin-1")
    pieces.append(closing)
    length += len(closing)
    return f"multipart/byteranges; boundary={boundary}", length, tuple(pieces)


def etag_matches(header: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (or ``*``; weak tags compare too)."""
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == "*" or tag == etag or tag.strip('"') == etag.strip('"'):
            return True
    return False


def plan(
    descriptor: Descriptor,
    path: str,
    *,
    local_path: str | None = None,
    reader: Callable[[int], BinaryIO] | None = None,
    method: str = "GET",
    range: str | None = None,
    if_none_match: str | None = None,
    redirect: str | None = None,
    requested: Digest | None = None,
    direct: bool = False,
) -> ServePlan:
    """How to answer ``method`` for the blob ``descriptor`` stored at driver path ``path``.

    ``local_path`` and ``reader`` are how the regions are read (:class:`FileRegion`).
    ``requested`` is the digest the client named when it is another algorithm's digest of the
    same bytes (linked at commit once verified): ``Docker-Content-Digest`` and ``ETag`` then
    carry it, as the client asked for the blob by it. ``direct``: the regions may be read
    past the page cache when cold (:attr:`FileRegion.direct`).
    """
    assert descriptor.digest is not None
    digest = str(requested or descriptor.digest)
    etag = f'"{digest}"'
    headers = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "Docker-Content-Digest": digest,
        "Content-Type": descriptor.media_type or DEFAULT_MEDIA_TYPE,
        "Accept-Ranges": "bytes",
    }
    if redirect is not None:
        return ServePlan(307, {"Location": redirect}, redirect=redirect, descriptor=descriptor)
    if if_none_match and etag_matches(if_none_match, etag):
        return ServePlan(304, headers, descriptor=descriptor)
    size = descriptor.size
    head = method.upper() == "HEAD"
    wanted = parse_ranges(range, size) if range else None
    if wanted is False:
        headers["Content-Range"] = f"bytes */{size}"
        headers["Content-Length"] = "0"
        return ServePlan(416, headers, descriptor=descriptor)
    if isinstance(wanted, list) and len(wanted) > 1:
        content_type, length, pieces = multipart(
            wanted,
            size,
            headers["Content-Type"],
            lambda offset, count: FileRegion(path, offset, count, local_path, reader, direct),
        )
        headers["Content-Type"] = content_type
        headers["Content-Length"] = str(length)
        return ServePlan(206, headers, parts=() if head else pieces, descriptor=descriptor)
    if isinstance(wanted, list):
        [(first, last)] = wanted
        length = last - first + 1
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        headers["Content-Length"] = str(length)
        body = None if head else FileRegion(path, first, length, local_path, reader, direct)
        return ServePlan(206, headers, body, descriptor=descriptor)
    headers["Content-Length"] = str(size)
    body = None if head else FileRegion(path, 0, size, local_path, reader, direct)
    return ServePlan(200, headers, body, descriptor=descriptor)


__all__ = ["CACHE_CONTROL", "multipart", "parse_ranges", "plan"]
