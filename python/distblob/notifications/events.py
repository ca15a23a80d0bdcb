"""distribution's events: their JSON as its ``notifications.Event`` marshals it, field by field
and in its order, and the records of the request and the registry that made them.

The envelope POSTed is ``{"events": [...]}`` with the media type :data:`EVENTS_MEDIA_TYPE`
(distribution 2.8's; 3.0 sends ``...events.v2+json`` with the same fields).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request

from distblob.server.middleware import USER_SCOPE_KEY

EVENTS_MEDIA_TYPE: Final = "application/vnd.docker.distribution.events.v1+json"
#: What distribution says of every blob's media type (it keeps none per repository).
BLOB_MEDIA_TYPE: Final = "application/octet-stream"
#: Where a request's id is kept, so every event of one request names the same id.
REQUEST_ID_SCOPE_KEY: Final = "distblob.request_id"
#: The fields of a descriptor an event carries, in distribution's order.
_DESCRIPTOR_FIELDS: Final = ("mediaType", "size", "digest", "urls", "annotations", "platform")

Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Source:
    """The registry node that makes the events: ``addr`` is ``<hostname>:<port>`` as in
    distribution; ``instance_id`` changes at every start."""

    addr: str
    instance_id: str


def timestamp(now: datetime.datetime | None = None) -> str:
    """Go's ``time.Time`` in JSON (RFC 3339, fraction without trailing zeros, ``Z`` for UTC)."""
    now = now or datetime.datetime.now().astimezone()
    text = now.strftime("%Y-%m-%dT%H:%M:%S")
    if now.microsecond:
        text += f".{now.microsecond:06d}".rstrip("0")
    offset = now.utcoffset()
    if not offset:
        return text + "Z"
    zone = now.strftime("%z")
    return f"{text}{zone[:3]}:{zone[3:]}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def remote_addr(request: Request) -> str:
    """The client's address as distribution records it: the first ``X-Forwarded-For`` entry,
    else ``X-Real-Ip`` (each only if it is an IP address), else the connection's
    ``host:port``."""
    headers = request.headers
    forwarded = headers.get("x-forwarded-for")
    if forwarded:
        first = forwarded.split(",", 1)[0].strip()
        if _is_ip(first):
            return first
    real = headers.get("x-real-ip")
    if real and _is_ip(real):
        return real
    client = request.client
    if client is None:
        return ""
    host = f"[{client.host}]" if ":" in client.host else client.host
    return f"{host}:{client.port}"


def request_record(request: Request) -> dict[str, str]:
    """The event's ``request``: its id (one per request), client, ``Host``, method and
    ``User-Agent``."""
    scope = request.scope
    request_id = scope.get(REQUEST_ID_SCOPE_KEY)
    if request_id is None:
        request_id = scope[REQUEST_ID_SCOPE_KEY] = str(uuid.uuid4())
    record = {
        "id": request_id,
        "addr": remote_addr(request),
        "host": request.headers.get("host", ""),
        "method": request.method,
        "useragent": request.headers.get("user-agent", ""),
    }
    for key in ("addr", "host"):  # omitempty in distribution
        if not record[key]:
            del record[key]
    return record


def descriptor_fields(descriptor: Mapping[str, Any]) -> dict[str, Any]:
    """A descriptor of a manifest's JSON as distribution's ``Descriptor`` writes it back
    (its fields in its order, empty ones left out)."""
    return {key: descriptor[key] for key in _DESCRIPTOR_FIELDS if descriptor.get(key)}


def references(body: bytes) -> list[dict[str, Any]]:
    """What a manifest references, as distribution's ``References()``: an index's manifests,
    or an image's config and then its layers."""
    try:
        document = json.loads(body)
    except ValueError:
        return []
    if not isinstance(document, dict):
        return []
    if isinstance(document.get("manifests"), list):
        found = document["manifests"]
    else:
        layers = document.get("layers")
        config = document.get("config")
        found = ([config] if isinstance(config, dict) else []) + (
            layers if isinstance(layers, list) else []
        )
    return [descriptor_fields(item) for item in found if isinstance(item, dict)]


def event(action: str, request: Request, source: Source, target: dict[str, Any]) -> Event:
    """One event, its fields in distribution's order (``target`` already in its own)."""
    user = request.scope.get(USER_SCOPE_KEY)
    return {
        "id": str(uuid.uuid4()),
        "timestamp": timestamp(),
        "action": action,
        "target": target,
        "request": request_record(request),
        "actor": {"name": user} if isinstance(user, str) and user else {},
        "source": {"addr": source.addr, "instanceID": source.instance_id},
    }


def target(
    *,
    repository: str,
    digest: str,
    media_type: str | None = None,
    size: int | None = None,
    url: str | None = None,
    tag: str | None = None,
    from_repository: str | None = None,
    refs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An event's ``target``: the descriptor's fields, ``length`` (its size again),
    ``repository``, ``fromRepository``, ``url``, ``tag`` and ``references``, empty ones left
    out as distribution's ``omitempty`` does."""
    fields: dict[str, Any] = {
        "mediaType": media_type,
        "size": size,
        "digest": digest,
        "length": size,
        "repository": repository,
        "fromRepository": from_repository,
        "url": url,
        "tag": tag,
        "references": refs,
    }
    return {key: value for key, value in fields.items() if value}


def envelope(events: list[Event]) -> bytes:
    """The body POSTed: indented by three spaces, as distribution's ``MarshalIndent``."""
    return json.dumps({"events": events}, indent=3).encode()


__all__ = [
    "BLOB_MEDIA_TYPE",
    "EVENTS_MEDIA_TYPE",
    "REQUEST_ID_SCOPE_KEY",
    "Event",
    "Source",
    "descriptor_fields",
    "envelope",
    "event",
    "references",
    "remote_addr",
    "request_record",
    "target",
    "timestamp",
]
