"""The signed upload ``_state`` query parameter, in distribution 2.8's format.

distribution (``registry/handlers/hmac.go``) hands out upload Locations carrying
``_state = base64url(mac + json)``, where ``json`` is the compact JSON of
``{"Name", "UUID", "Offset", "StartedAt"}`` (in that order, as Go marshals ``blobUploadState``)
and ``mac`` is HMAC-SHA256 of ``json`` keyed with ``http.secret``. Producing and checking exactly
that token means a Location handed out by the Go registry works on distblob with the same secret,
and the other way round.

The upload itself lives in storage, so the token only guards against a client resuming from a
stale position: a missing token is accepted, a present one must verify.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Final

from distblob.server.errors import APIError

_MAC_SIZE: Final = hashlib.sha256().digest_size
#: Longer tokens are refused before any decoding (a name, a UUID and a time fit in far less).
_MAX_TOKEN: Final = 4096


@dataclass(frozen=True, slots=True)
class UploadState:
    """What a ``_state`` token records."""

    name: str
    uuid: str
    offset: int
    started_at: str = ""


def go_time(when: dt.datetime) -> str:
    """``when`` as Go's ``time.Time`` marshals to JSON: RFC 3339, fraction trimmed, ``Z``."""
    utc = when.astimezone(dt.UTC) if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def _key(secret: bytes | str) -> bytes:
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def pack(secret: bytes | str, state: UploadState) -> str:
    """The signed token for ``state``."""
    # json.dumps escapes non-ASCII and Go escapes <, > and &; names and UUIDs contain none.
    message = json.dumps(
        {
            "Name": state.name,
            "UUID": state.uuid,
            "Offset": state.offset,
            "StartedAt": state.started_at,
        },
        separators=(",", ":"),
    ).encode()
    mac = hmac.new(_key(secret), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac + message).decode("ascii")


def unpack(secret: bytes | str, token: str) -> UploadState:
    """Verify ``token`` and return its state; ``BLOB_UPLOAD_INVALID`` if it does not verify."""
    if len(token) > _MAX_TOKEN:
        raise APIError("BLOB_UPLOAD_INVALID", detail="upload state too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise APIError("BLOB_UPLOAD_INVALID", detail="upload state is not base64") from None
    if len(raw) <= _MAC_SIZE:
        raise APIError("BLOB_UPLOAD_INVALID", detail="upload state too short")
    mac, message = raw[:_MAC_SIZE], raw[_MAC_SIZE:]
    expected = hmac.new(_key(secret), message, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise APIError("BLOB_UPLOAD_INVALID", detail="upload state signature mismatch")
    try:
        doc = json.loads(message)
    except ValueError:
        raise APIError("BLOB_UPLOAD_INVALID", detail="upload state is not JSON") from None
    name = doc.get("Name") if isinstance(doc, dict) else None
    uuid = doc.get("UUID") if isinstance(doc, dict) else None
    offset = doc.get("Offset") if isinstance(doc, dict) else None
    started = doc.get("StartedAt", "") if isinstance(doc, dict) else ""
    if (
        not isinstance(name, str)
        or not isinstance(uuid, str)
        or isinstance(offset, bool)
        or not isinstance(offset, int)
    ):
        raise APIError("BLOB_UPLOAD_INVALID", detail="upload state lacks fields")
    return UploadState(name, uuid, offset, started if isinstance(started, str) else "")


def verify(
    secret: bytes | str, token: str | None, *, name: str, uuid: str, size: int | None
) -> None:
    """Check a request's token against the upload it addresses (``size=None``: skip offset).

    A missing token is accepted. A token for another repository or upload, or recorded at
    another offset than the upload's current size, is ``BLOB_UPLOAD_INVALID``.
    """
    if token is None:
        return
    state = unpack(secret, token)
    if state.name != name or state.uuid != uuid:
        raise APIError("BLOB_UPLOAD_INVALID", detail="upload state does not match the upload")
    if size is not None and state.offset != size:
        raise APIError(
            "BLOB_UPLOAD_INVALID",
            detail={"reason": "upload state is stale", "offset": state.offset, "size": size},
        )


__all__ = ["UploadState", "go_time", "pack", "unpack", "verify"]
