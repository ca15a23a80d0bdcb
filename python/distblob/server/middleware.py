"""ASGI middleware around the whole app: the API version header on every response, one
access-log line per request (with the user the request authenticated as, never its
credentials), and a refusal of bodies sent with a transfer coding the server
cannot undo."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Final

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distblob._asgi import ZEROCOPY_SEND
from distblob.logs import ACCESS_FIELDS
from distblob.server.errors import API_VERSION_HEADER, APIError, error_response

access_logger = logging.getLogger("distblob.access")

#: The access log's message (its arguments are the fields, in this order).
_ACCESS_MESSAGE: Final = (
    "method=%s path=%s status=%d bytes=%d duration_ms=%.1f client=%s:%s user=%s"
)

#: Where the server's gate leaves the name of the user a request authenticated as
#: (:data:`distblob.server.handlers.base.USER_SCOPE_KEY`).
USER_SCOPE_KEY: Final = "distblob.user"


def _logfmt_value(user: object) -> str:
    """A user name as a logfmt value: ``-`` for none, quoted (JSON) when it has a space, a
    quote, an ``=`` or anything unprintable, so a name cannot forge a field."""
    if not isinstance(user, str) or not user:
        return "-"
    if user.isprintable() and not any(c in user for c in ' "=\\'):
        return user
    return json.dumps(user)


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
        method, path = scope.get("method", "-"), scope.get("path", "")  # as the client sent them
        # distribution answers ``/`` (liveness) before its app, which adds the version header.
        versioned = path != "/"

        async def send_with_header(message: Message) -> None:
            nonlocal status, sent, answered
            if message["type"] == "http.response.start":
                status = message["status"]
            if message["type"] == "http.response.start" and versioned:
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
                method,
                json.dumps(path),
            )
        finally:
            if self.access_log and access_logger.isEnabledFor(logging.INFO):
                client = scope.get("client") or ("-", 0)
                duration = round(((answered or time.monotonic()) - started) * 1000, 1)
                user = scope.get(USER_SCOPE_KEY)
                fields = {
                    "method": method,
                    "path": path,
                    "status": status,
                    "bytes": sent,
                    "duration_ms": duration,
                    "client": f"{client[0]}:{client[1]}",
                    "user": user if isinstance(user, str) and user else "-",
                }
                # Logger.info without its look for the caller (a walk up the stack), which no
                # formatter of this log shows.
                record = access_logger.makeRecord(
                    access_logger.name,
                    logging.INFO,
                    "(unknown file)",
                    0,
                    _ACCESS_MESSAGE,
                    (
                        method,
                        json.dumps(path),
                        status,
                        sent,
                        duration,
                        client[0],
                        client[1],
                        _logfmt_value(user),
                    ),
                    None,
                    extra={ACCESS_FIELDS: fields},  # for log.formatter (distblob.logs)
                )
                access_logger.handle(record)


__all__ = ["Envelope", "access_logger"]
