"""What a pushed manifest's references must satisfy beyond existing: distribution's
``validation`` options. Foreign-layer URLs must match ``allow`` and not ``deny`` (each a
regular expression searched anywhere in the URL, as Go's ``MatchString``), and be http(s)
without a fragment; the children of an image index must exist (``all``), or only those of
some platforms (``list``), or none need to (``none``).

Which layers are checked follows distribution 2.8: in a Docker schema 2 manifest, the foreign
layer type (which must name URLs); in an OCI manifest, the four OCI layer types (any other
layer with URLs is taken as it is)."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

#: Docker's foreign layer, fetched by clients from its URLs.
DOCKER_FOREIGN_LAYER: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
#: The OCI layer types whose URLs distribution checks.
OCI_CHECKED_LAYERS: Final = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    }
)


def _joined(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern matching any of ``patterns`` (distribution joins them the same way)."""
    parts = [f"(?:{pattern})" for pattern in patterns]
    return re.compile("|".join(parts)) if parts else None


@dataclass(frozen=True, slots=True)
class ManifestValidation:
    """``allow``/``deny``: compiled patterns, ``None`` for no such rule (distribution's
    default, validation on and no rule given, is :meth:`build` with no patterns: no URL is
    allowed). ``platforms`` are the ``(architecture, os)`` pairs whose index children must
    exist; ``None``: every child; empty: none."""

    allow: re.Pattern[str] | None = None
    deny: re.Pattern[str] | None = None
    platforms: frozenset[tuple[str, str]] | None = field(default=None)

    @classmethod
    def build(
        cls,
        *,
        enabled: bool = True,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        index_platforms: str = "all",
        platform_list: Iterable[tuple[str, str]] = (),
    ) -> ManifestValidation:
        """From the config's terms (``distblob.config.validation.Validation``)."""
        allowed, denied = _joined(allow), _joined(deny)
        if not enabled:
            allowed = denied = None
        elif allowed is None and denied is None:
            allowed = re.compile("^$")
        platforms: frozenset[tuple[str, str]] | None = None
        if index_platforms == "none":
            platforms = frozenset()
        elif index_platforms == "list":
            platforms = frozenset(platform_list) or None
        return cls(allowed, denied, platforms)

    def url_allowed(self, url: str) -> bool:
        """Whether a layer may name ``url``."""
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or parts.fragment:
            return False
        if self.allow is not None and self.allow.search(url) is None:
            return False
        return self.deny is None or self.deny.search(url) is None

    def layer_urls_valid(self, kind: str, layer: Mapping[str, Any]) -> bool | None:
        """``True``/``False`` when ``layer`` of a ``kind`` manifest is a checked type with
        URLs (valid or not; a Docker foreign layer without URLs is not), ``None`` when its URLs
        are not checked."""
        urls = layer.get("urls") or []
        media_type = layer.get("mediaType")
        checked = (
            kind.startswith("application/vnd.docker.") and media_type == DOCKER_FOREIGN_LAYER
        ) or (kind.startswith("application/vnd.oci.") and media_type in OCI_CHECKED_LAYERS)
        if not checked:
            return None
        if not urls:
            return False if media_type == DOCKER_FOREIGN_LAYER else None
        return all(self.url_allowed(url) for url in urls)

    def child_required(self, child: Mapping[str, Any]) -> bool:
        """Whether an index's ``child`` must be in the repository."""
        if self.platforms is None:
            return True
        platform = child.get("platform")
        if not isinstance(platform, Mapping):
            return False
        return (platform.get("architecture"), platform.get("os")) in self.platforms


__all__ = ["DOCKER_FOREIGN_LAYER", "OCI_CHECKED_LAYERS", "ManifestValidation"]
