"""OCI error responses: ``{"errors": [{"code", "message", "detail"}]}`` and their statuses.

Every distblob exception a request can raise maps to one OCI error code (distribution's
``registry/api/errcode`` v2 set), and every code to one HTTP status, so handlers raise the
storage layer's own errors and :func:`error_response` turns them into the wire format. Anything
that is not a :class:`~distblob.errors.DistblobError` (or :class:`APIError`) is a bug: it is
logged with its traceback and answered ``500 UNKNOWN`` without details.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from starlette.responses import Response

from distblob import errors

logger = logging.getLogger("distblob.server")

#: Sent on every response, as distribution does.
API_VERSION_HEADER: Final = ("Docker-Distribution-API-Version", "registry/2.0")

#: HTTP status of each OCI error code (distribution's table; 413 and PAGINATION are ours).
STATUS: Final[dict[str, int]] = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 404,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 400,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "PAGINATION_NUMBER_INVALID": 400,
    "RANGE_INVALID": 416,
    "SIZE_INVALID": 400,
    "TAG_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "TOOMANYREQUESTS": 429,
    "UNKNOWN": 500,
}

_MESSAGES: Final[dict[str, str]] = {
    "BLOB_UNKNOWN": "blob unknown to registry",
    "BLOB_UPLOAD_INVALID": "blob upload invalid",
    "BLOB_UPLOAD_UNKNOWN": "blob upload unknown to registry",
    "DIGEST_INVALID": "provided digest did not match uploaded content",
    "MANIFEST_BLOB_UNKNOWN": "blob unknown to registry",
    "MANIFEST_INVALID": "manifest invalid",
    "MANIFEST_UNKNOWN": "manifest unknown",
    "NAME_INVALID": "invalid repository name",
    "NAME_UNKNOWN": "repository name not known to registry",
    "PAGINATION_NUMBER_INVALID": "invalid number of results requested",
    "RANGE_INVALID": "invalid content range",
    "SIZE_INVALID": "provided length did not match content length",
    "TAG_INVALID": "manifest tag did not match URI",
    "UNAUTHORIZED": "authentication required",
    "UNSUPPORTED": "The operation is unsupported.",
    "UNKNOWN": "unknown error",
}

# Most specific first: several distblob errors derive from others (BlobInvalidDigestError is a
# DigestInvalidError, BlobDigestUnsupportedError a DigestUnsupportedError).
_BY_EXCEPTION: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (errors.BlobUnknownError, "BLOB_UNKNOWN"),
    (errors.BlobUploadUnknownError, "BLOB_UPLOAD_UNKNOWN"),
    (errors.BlobUploadInvalidError, "BLOB_UPLOAD_INVALID"),
    (errors.BlobInvalidLengthError, "SIZE_INVALID"),
    (errors.DigestInvalidError, "DIGEST_INVALID"),
    (errors.DigestUnsupportedError, "DIGEST_INVALID"),
    (errors.NameInvalidError, "NAME_INVALID"),
    (errors.NameUnknownError, "NAME_UNKNOWN"),
    (errors.UnsupportedError, "UNSUPPORTED"),
    (errors.ManifestUnknownError, "MANIFEST_UNKNOWN"),
    (errors.ManifestBlobUnknownError, "MANIFEST_BLOB_UNKNOWN"),
    (errors.ManifestInvalidError, "MANIFEST_INVALID"),
    (errors.TagInvalidError, "TAG_INVALID"),
)


class _JSONNull:
    """The type of :data:`JSON_NULL`."""

    def __repr__(self) -> str:
        return "JSON_NULL"


#: A ``detail`` sent as JSON ``null`` (where ``None`` leaves the key out): distribution's
#: UNAUTHORIZED for a request that needs no access record (``/v2/``).
JSON_NULL: Final = _JSONNull()


class APIError(Exception):
    """An OCI error raised by the HTTP layer itself (a bad header, a bad query parameter)."""

    def __init__(
        self, code: str, message: str | None = None, *, detail: Any = None, status: int = 0
    ) -> None:
        self.code = code
        self.message = message or _MESSAGES.get(code, code.lower().replace("_", " "))
        self.detail = detail
        self.status = status or STATUS[code]
        self.headers: dict[str, str] = {}
        super().__init__(f"{code}: {self.message}")


def _upstream_error(exc: errors.UpstreamError | errors.TransferError) -> APIError:
    """A pull-through cache's upstream failure: 403 DENIED (credentials refused), 429
    TOOMANYREQUESTS with upstream's ``Retry-After``, else 502 UNKNOWN."""
    if isinstance(exc, errors.UpstreamAuthError):
        return APIError("DENIED", "upstream registry denied access", detail=str(exc))
    if isinstance(exc, errors.UpstreamError) and exc.status == 429:
        limited = APIError("TOOMANYREQUESTS", "upstream registry is rate limiting")
        retry_after = exc.retry_after
        if retry_after and retry_after.isascii() and retry_after.isprintable():
            limited.headers["Retry-After"] = retry_after
        return limited
    return APIError("UNKNOWN", "upstream registry unavailable", detail=str(exc), status=502)


def _unauthorized(challenge: errors.AuthChallenge) -> APIError:
    """401 UNAUTHORIZED as distribution answers it: the access records the request needed as
    the detail (``null`` when none), and the controller's challenge headers."""
    detail = [access.detail() for access in challenge.access] or JSON_NULL
    error = APIError("UNAUTHORIZED", detail=detail)
    error.headers.update(challenge.headers)
    return error


def to_api_error(exc: BaseException) -> APIError | None:
    """The OCI error for a distblob exception; ``None`` for anything else (a bug)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, errors.AuthChallenge):
        return _unauthorized(exc)
    if isinstance(exc, (errors.UpstreamError, errors.TransferError)):
        return _upstream_error(exc)
    for kind, code in _BY_EXCEPTION:
        if isinstance(exc, kind):
            return APIError(code, _MESSAGES.get(code), detail=str(exc))
    return None


def error_body(code: str, message: str, detail: Any = None) -> bytes:
    entry: dict[str, Any] = {"code": code, "message": message}
    if detail is JSON_NULL:
        entry["detail"] = None
    elif detail is not None:
        entry["detail"] = detail
    return json.dumps({"errors": [entry]}, separators=(",", ":")).encode()


def error_response(exc: BaseException, *, head: bool = False) -> Response:
    """The response for ``exc``: its OCI error, or a logged ``500 UNKNOWN``."""
    api = to_api_error(exc)
    if api is None:
        logger.error("unexpected error", exc_info=exc)
        api = APIError("UNKNOWN")
    body = error_body(api.code, api.message, api.detail)
    headers = dict(api.headers)  # the API version header is added by the app's middleware
    if head:
        # A HEAD answer carries the length the GET body would have, and no body.
        headers["Content-Length"] = str(len(body))
        return Response(status_code=api.status, headers=headers, media_type="application/json")
    return Response(body, status_code=api.status, headers=headers, media_type="application/json")


__all__ = [
    "API_VERSION_HEADER",
    "JSON_NULL",
    "STATUS",
    "APIError",
    "error_body",
    "error_response",
]
