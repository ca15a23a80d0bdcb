"""One way to make a Redis client, for the descriptor cache and the upload leases."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis


def redis_client(
    host: str,
    port: int,
    *,
    password: str | None = None,
    db: int = 0,
    dial_timeout: float | None,
    timeout: float | None,
    retries: int = 0,
    max_connections: int | None = None,
    health_check_interval: int = 0,
    on_connect: Callable[[Any], None] | None = None,
    needed_by: str = "redis",
    client_options: Mapping[str, Any] | None = None,
) -> redis.Redis:
    """A client over a new pool (no connection is made until the first call), decoding
    replies as text. ``retries`` immediate retries of a failed connection (never of a
    timeout: a hung Redis must fail fast); ``on_connect(connection)``, when given, replaces
    redis-py's connect hook and must call ``connection.on_connect()``. ``ImportError`` naming
    ``needed_by`` without the redis package. ``client_options``: more of redis-py's keyword
    arguments (``username``, ``client_name``, ``ssl*``)."""
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise ImportError(
            f"{needed_by} needs the redis package: pip install 'distblob[redis]'"
        ) from None
    return redis.Redis(
        host=host,
        port=port,
        db=db,
        password=password,
        socket_connect_timeout=dial_timeout,
        socket_timeout=timeout,
        max_connections=max_connections,
        health_check_interval=health_check_interval,
        decode_responses=True,
        retry=Retry(NoBackoff(), retries, supported_errors=(redis.ConnectionError,)),
        redis_connect_func=on_connect,  # type: ignore[arg-type]  # called with the connection
        **dict(client_options or {}),
    )


__all__ = ["redis_client"]
