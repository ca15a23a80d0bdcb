"""The one hook the storage layer and the proxy report through to the server's metrics.

:data:`observer` is ``None`` unless ``http.debug.prometheus`` is enabled
(:mod:`distblob.server.metrics` sets it once, at start), so a call site costs one global read
and one ``is None`` test when metrics are off, and the storage layer never imports
``prometheus_client``.
"""

from __future__ import annotations

from typing import Protocol


class Observer(Protocol):
    """What the storage layer and the proxy report."""

    def storage_action(self, driver: str, action: str, seconds: float) -> None:
        """A storage driver call (``Stat``, ``GetContent``, ...) took ``seconds``."""

    def cache_lookup(self, outcome: str) -> None:
        """A blob descriptor cache lookup: ``Hit``, ``Miss`` or ``Error``."""

    def blob_written(self, count: int) -> None:
        """``count`` bytes were hashed and written into a blob (an upload's, or a whole blob
        put at once)."""

    def uploads_open(self, delta: int) -> None:
        """An upload writer opened (``+1``) or ended (``-1``)."""

    def proxy_blob(self, size: int, *, hit: bool) -> None:
        """The pull-through cache served a blob of ``size`` bytes, stored (``hit``) or
        fetched from upstream."""


#: The metrics' observer while metrics are on, else ``None``.
observer: Observer | None = None


__all__ = ["Observer", "observer"]
