"""A pull-through cache of one upstream registry (distribution's ``registry/proxy``).

:class:`ProxyRegistry` is the cache as a registry the HTTP layer serves
(:mod:`~distblob.proxy.registry`), in place of the local one when ``proxy.remoteurl`` is
configured. Its parts: the upstream client (:mod:`~distblob.proxy.upstream`), the blob and
manifest stores that fill the local registry from upstream (:mod:`~distblob.proxy.blobs`,
:mod:`~distblob.proxy.manifests`) and the TTL scheduler (:mod:`~distblob.proxy.scheduler`).
Nothing here knows HTTP frameworks or the storage layout: a cold blob is served as a plan whose
body grows (:class:`~distblob.interfaces.GrowingRegion`), and expiry goes through the local
repositories' own verbs.
"""

from __future__ import annotations

from distblob.errors import TransferError, UpstreamAuthError, UpstreamError
from distblob.proxy.blobs import ProxyBlobStore
from distblob.proxy.manifests import ProxyManifestStore
from distblob.proxy.registry import (
    ABANDONED_AFTER,
    ProxyBlobs,
    ProxyManifests,
    ProxyRegistry,
    ProxyRepository,
)
from distblob.proxy.scheduler import TTLScheduler
from distblob.proxy.upstream import Upstream

__all__ = [
    "ABANDONED_AFTER",
    "ProxyBlobStore",
    "ProxyBlobs",
    "ProxyManifestStore",
    "ProxyManifests",
    "ProxyRegistry",
    "ProxyRepository",
    "TTLScheduler",
    "TransferError",
    "Upstream",
    "UpstreamAuthError",
    "UpstreamError",
]
