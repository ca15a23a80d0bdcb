"""What distribution does to a request before its router, and to the URLs it hands out:
``GET /`` answered 200 (the liveness probe), the API served under ``http.prefix``, the
``http.headers`` added to the API's responses, and ``Location`` URLs built as ``http.host``
and ``http.relativeurls`` say.

As in distribution, ``/`` (any method) is answered before the API: 200, ``Cache-Control:
no-cache``, an empty body, no API version header and none of ``http.headers``. Those headers go
on every response of a request whose path is one of the API's routes (distribution adds them
in the dispatcher every route goes through: 401, 404 and 405 answers included) and not on a
path no route takes. A response's own header of the same name is kept instead (distribution's
handlers set theirs over the configured ones).

``Location`` URLs: with ``http.host`` they are absolute on that URL (the request's host and
``X-Forwarded-*`` headers ignored); with ``relativeurls: false`` absolute on the scheme and
host the request was sent to (``Forwarded``, else ``X-Forwarded-Proto`` and
``X-Forwarded-Host``, else the ``Host`` header), as distribution's default; otherwise
(``relativeurls: true``, and distblob's default) just the path. The prefix is in all three:
distribution leaves it out of relative ones, which then miss the registry.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distblob.server.errors import error_body

#: Where the front door leaves the request's :class:`URLs` in the ASGI scope.
URLS_SCOPE_KEY: Final = "distblob.urls"


@dataclass(frozen=True, slots=True)
class URLs:
    """How ``Location`` URLs are built (``http.prefix``, ``http.host``,
    ``http.relativeurls``)."""

    prefix: str = ""
    host: str | None = None
    relative: bool = True
    #: ``http.relativeurls: true`` given: distribution's URL builder is relative only then
    #: (distblob's ``Location`` default is relative too; an event's URL follows Go's).
    relative_asked: bool = False


def _forwarded(value: str) -> dict[str, str]:
    """The first element of an RFC 7239 ``Forwarded`` header, its parameter names lowered."""
    first = value.split(",", 1)[0]
    pairs: dict[str, str] = {}
    for part in first.split(";"):
        name, sep, item = part.strip().partition("=")
        if sep:
            pairs[name.strip().lower()] = item.strip().strip('"')
    return pairs


def _request_root(request: Request) -> str:
    """``scheme://host`` the client sent the request to, as distribution reads it."""
    scheme = request.url.scheme
    host = request.headers.get("host", "")
    forwarded = request.headers.get("forwarded")
    if forwarded:
        pairs = _forwarded(forwarded)
        scheme = pairs.get("proto") or scheme
        host = pairs.get("host") or host
    else:
        scheme = request.headers.get("x-forwarded-proto") or scheme
        forwarded_host = request.headers.get("x-forwarded-host")
        if forwarded_host:
            host = forwarded_host.split(",", 1)[0].strip()
    return f"{scheme}://{host}"


def location(request: Request, path: str) -> str:
    """The ``Location`` of the API path ``path`` (``/v2/...``) for a response to
    ``request``."""
    urls = request.scope.get(URLS_SCOPE_KEY)
    if not isinstance(urls, URLs):
        return path
    if urls.host is not None:
        # As Go's URL.ResolveReference: relative to the host URL's path.
        return urllib.parse.urljoin(urls.host, path[1:])
    if urls.relative:
        return urls.prefix + path
    return _request_root(request) + urls.prefix + path


def event_url(request: Request, path: str) -> str:
    """The URL a notification event carries for the API path ``path``, as distribution builds
    it with the URL builder its ``Location`` headers use: on ``http.host`` when set, relative
    with ``http.relativeurls: true``, else absolute on the request's scheme and host (the
    prefix included)."""
    urls = request.scope.get(URLS_SCOPE_KEY)
    if not isinstance(urls, URLs):
        urls = URLs()
    if urls.host is not None:
        return urllib.parse.urljoin(urls.host, path[1:])
    if urls.relative_asked:
        return urls.prefix + path
    return _request_root(request) + urls.prefix + path


class FrontDoor:
    """ASGI middleware around the API's router: liveness at ``/``, the prefix, the configured
    headers and the URL settings for ``Location`` (:func:`location`)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        urls: URLs | None = None,
        headers: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.app = app
        self.urls = urls or URLs()
        self.headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, values in (headers or {}).items()
            for value in values
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == "/":
            await _alive(send)
            return
        prefix = self.urls.prefix
        if prefix:
            if not path.startswith(prefix + "/"):
                await _not_found(send)
                return
            scope["path"] = path[len(prefix) :]
            raw = scope.get("raw_path")
            if isinstance(raw, bytes) and raw.startswith(prefix.encode() + b"/"):
                scope["raw_path"] = raw[len(prefix) :]
        scope[URLS_SCOPE_KEY] = self.urls
        if not self.headers:
            await self.app(scope, receive, send)
            return
        extra = self.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and scope.get("route") is not None:
                headers = list(message.get("headers", []))
                own = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in own]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _alive(send: Send) -> None:
    """distribution's answer at ``/``: 200, no body, not cached."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"cache-control", b"no-cache"), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _not_found(send: Send) -> None:
    """404 for a path outside ``http.prefix`` (no API route takes it)."""
    body = error_body("NOT_FOUND", "not found", None)
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


__all__ = ["URLS_SCOPE_KEY", "FrontDoor", "URLs", "event_url", "location"]
