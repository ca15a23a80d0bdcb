"""``Descriptor``: what distribution knows about a blob, in its JSON wire format.

The wire format is ``{"mediaType": ..., "size": ..., "digest": ...}`` (plus ``urls`` and
``annotations`` when present), with empty fields omitted, as distribution's ``Descriptor``
marshals it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from distblob.digest import Digest

#: The media type of a blob stored without one (distribution's default).
DEFAULT_MEDIA_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A blob's media type, size and digest (and optional URLs and annotations).

    ``size`` is ``-1`` or ``0`` where unknown; ``digest`` is ``None`` where unknown (a
    provisional descriptor may lack either, and commit fills them in).
    """

    media_type: str = ""
    size: int = 0
    digest: Digest | None = None
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.digest is not None and not isinstance(self.digest, Digest):
            object.__setattr__(self, "digest", Digest(self.digest))
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise TypeError(f"size must be an int, not {type(self.size).__name__}")

    def with_(self, **changes: Any) -> Descriptor:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The wire format as a dict, empty fields omitted."""
        out: dict[str, Any] = {}
        if self.media_type:
            out["mediaType"] = self.media_type
        if self.size:
            out["size"] = self.size
        if self.digest:
            out["digest"] = str(self.digest)
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_json(self) -> str:
        """The wire format as compact JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> Descriptor:
        """Parse the wire format (a JSON text or an already decoded mapping).

        Raises ``ValueError`` for malformed JSON or fields of the wrong type, and the digest
        errors for a malformed digest.
        """
        raw = json.loads(data) if isinstance(data, str | bytes) else data
        if not isinstance(raw, Mapping):
            raise ValueError("a descriptor is a JSON object")
        media_type = raw.get("mediaType", "")
        size = raw.get("size", 0)
        digest = raw.get("digest")
        urls = raw.get("urls", [])
        annotations = raw.get("annotations", {})
        if not isinstance(media_type, str):
            raise ValueError("mediaType must be a string")
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValueError("size must be an integer")
        if digest is not None and not isinstance(digest, str):
            raise ValueError("digest must be a string")
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ValueError("urls must be a list of strings")
        if not isinstance(annotations, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise ValueError("annotations must map strings to strings")
        return cls(
            media_type=media_type,
            size=size,
            digest=Digest(digest) if digest else None,
            urls=tuple(urls),
            annotations=dict(annotations),
        )


__all__ = ["DEFAULT_MEDIA_TYPE", "Descriptor"]
