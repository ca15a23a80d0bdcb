"""``catalog``: how many repository names one ``GET /v2/_catalog`` page may hold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from distblob.config.values import ConfigError, checked_section

#: ``catalog.maxentries`` when unset, empty, zero or negative (distribution's default).
DEFAULT_MAX_ENTRIES: Final = 1000


@dataclass(frozen=True, slots=True)
class Catalog:
    """``catalog.maxentries``: a page's most names; an ``n`` above it is
    ``PAGINATION_NUMBER_INVALID``, and a request without ``n`` gets at most this many."""

    maxentries: int = DEFAULT_MAX_ENTRIES


def parse_catalog(doc: object) -> Catalog:
    raw = checked_section(doc, "catalog", {"maxentries"})
    value = raw.get("maxentries")
    if value is None:
        return Catalog()
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError("catalog.maxentries", f"expected a whole number, not {value!r}")
    # distribution replaces a value <= 0 by its default, as here.
    return Catalog(maxentries=value if value > 0 else DEFAULT_MAX_ENTRIES)


__all__ = ["DEFAULT_MAX_ENTRIES", "Catalog", "parse_catalog"]
