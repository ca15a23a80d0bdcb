"""``middleware``: distribution's storage middleware. Only 3.x's ``redirect`` (blob GETs sent
to ``baseurl`` plus the blob's storage path) is implemented; the CDN ones (``cloudfront``,
``googlecdn``, ``alicdn``) and the ``registry`` and ``repository`` kinds are refused, since
accepting them would serve blobs otherwise than the config says."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Final

from distblob.config.values import ConfigError, checked_section

#: Why each middleware distblob does not have is refused.
REFUSED: Final = {
    "cloudfront": "not supported: distblob signs no CloudFront URLs; use redirect with baseurl",
    "googlecdn": "not supported: distblob signs no Google CDN URLs; use redirect with baseurl",
    "alicdn": "not supported: distblob signs no Alibaba CDN URLs; use redirect with baseurl",
    "rewrite": "not supported: use redirect with baseurl",
}


@dataclass(frozen=True, slots=True)
class Middleware:
    """``middleware.storage``: ``redirect`` is the ``baseurl`` of the ``redirect``
    middleware, or ``None``."""

    redirect: str | None = None


def _storage(items: object) -> str | None:
    key = "middleware.storage"
    if items is None:
        return None
    if not isinstance(items, list):
        raise ConfigError(key, f"expected a list of {{name, options}}, not {items!r}")
    redirect = None
    for i, item in enumerate(items):
        entry = checked_section(item, f"{key}[{i}]", {"name", "options", "disabled"})
        name = entry.get("name")
        if entry.get("disabled") is True:
            continue
        if name != "redirect":
            reason = REFUSED.get(str(name), f"unknown storage middleware {name!r}")
            raise ConfigError(f"{key}[{i}].name", reason)
        options = checked_section(entry.get("options"), f"{key}[{i}].options", {"baseurl"})
        baseurl = options.get("baseurl")
        where = f"{key}[{i}].options.baseurl"
        if not isinstance(baseurl, str) or not baseurl:
            raise ConfigError(where, "required: the URL blob GETs are redirected to")
        parts = urllib.parse.urlsplit(baseurl)
        if not parts.scheme or not parts.netloc:
            raise ConfigError(where, f"expected a URL with a scheme and a host, not {baseurl!r}")
        redirect = baseurl
    return redirect


def parse_middleware(doc: object) -> Middleware:
    raw = checked_section(doc, "middleware", {"storage", "registry", "repository"})
    for kind in ("registry", "repository"):
        if raw.get(kind):
            raise ConfigError(
                f"middleware.{kind}", "not supported: distribution ships no such middleware"
            )
    return Middleware(redirect=_storage(raw.get("storage")))


__all__ = ["REFUSED", "Middleware", "parse_middleware"]
