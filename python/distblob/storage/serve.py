"""Planning a blob response: status and headers for GET and HEAD, with Range and If-None-Match.

Framework-free on purpose: :func:`plan` returns a :class:`~distblob.interfaces.ServePlan` and the
HTTP layer only executes it. Headers follow distribution's ``ServeBlob``: ``ETag``,
``Cache-Control``, ``Docker-Content-Digest``, ``Content-Type``, ``Content-Length`` and
``Accept-Ranges``.
"""

from __future__ import annotations

from distblob._numbers import is_ascii_digits
from distblob.descriptor import DEFAULT_MEDIA_TYPE, Descriptor
from distblob.interfaces import FileRegion, ServePlan

#: Blobs never change, so caches may keep them for a year (distribution's value).
CACHE_CONTROL = "max-age=31536000"


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """The inclusive byte range a ``Range`` header asks for.

    Returns ``(first, last)`` for a satisfiable single range, ``False`` when the range cannot
    be satisfied (answer 416), and ``None`` when the header is to be ignored (another unit,
    several ranges or a malformed value: RFC 9110 lets a server send the whole content then).
    """
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
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
    # Only a written last position before the first makes the range invalid; an open-ended
    # range starting at or past the end is valid but unsatisfiable.
    if last_text and int(last_text) < first:
        return None
    if first >= size:
        return False
    last = int(last_text) if last_text else size - 1
    return first, min(last, size - 1)


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
    method: str = "GET",
    range: str | None = None,
    if_none_match: str | None = None,
    redirect: str | None = None,
) -> ServePlan:
    """How to answer ``method`` for the blob ``descriptor`` stored at driver path ``path``."""
    assert descriptor.digest is not None
    digest = str(descriptor.digest)
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
    wanted = parse_range(range, size) if range else None
    if wanted is False:
        headers["Content-Range"] = f"bytes */{size}"
        headers["Content-Length"] = "0"
        return ServePlan(416, headers, descriptor=descriptor)
    if isinstance(wanted, tuple):
        first, last = wanted
        length = last - first + 1
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        headers["Content-Length"] = str(length)
        body = None if head else FileRegion(path, first, length, local_path)
        return ServePlan(206, headers, body, descriptor=descriptor)
    headers["Content-Length"] = str(size)
    body = None if head else FileRegion(path, 0, size, local_path)
    return ServePlan(200, headers, body, descriptor=descriptor)


__all__ = ["CACHE_CONTROL", "parse_range", "plan"]
