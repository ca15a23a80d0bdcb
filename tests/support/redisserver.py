"""A real ``redis-server`` (Debian's) for tests: loopback, a free port, no persistence."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from distblob.storage.cache import RedisBlobDescriptorCache
from support.goregistry import LOOPBACK, free_port


class RedisServer:
    """``redis-server`` on 127.0.0.1 with no persistence, in ``directory`` (a context manager).

    :meth:`stop` with ``save=True`` snapshots the data first, so a :meth:`start` on the same
    port brings Redis back with its entries: an outage, not a loss.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log = directory / "redis.log"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        for _attempt in range(5):
            port = self.port or free_port()
            with self._log.open("ab") as log:
                self._process = subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        LOOPBACK,
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(self.directory),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            deadline = time.monotonic() + 10
            while self._process.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(redis.ConnectionError):
                    if self.client(port).ping():
                        self.port = port
                        return self
                time.sleep(0.02)
            self.stop()
            if self.port:
                break  # a restart must keep its port
        raise RuntimeError(f"redis-server did not start:\n{self._log.read_text()}")

    def pause(self) -> None:
        """Hang the server (SIGSTOP): connections are accepted by the kernel, never answered."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def stop(self, *, save: bool = False) -> None:
        self.resume()  # a paused server would never answer its shutdown
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(redis.RedisError):
                self.client().shutdown(save=save, nosave=not save)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def client(self, port: int = 0) -> redis.Redis:
        """A plain client (no retries: the harness wants to see a refusal at once; a timeout,
        so a paused server fails it rather than hanging the test)."""
        return redis.Redis(
            host=LOOPBACK,
            port=port or self.port,
            decode_responses=True,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=10,
            socket_connect_timeout=10,
        )

    def cache(self, **options: Any) -> RedisBlobDescriptorCache:
        """A cache on this server that retries at once after a failure (no waiting in tests)."""
        return RedisBlobDescriptorCache.connect(LOOPBACK, self.port, retry_after=0, **options)

    def config(self) -> dict[str, Any]:
        """Config keys for ``distblob serve`` and the Go registry to use this server."""
        return {
            "storage": {"cache": {"blobdescriptor": "redis"}},
            "redis": {"addr": f"{LOOPBACK}:{self.port}", "dialtimeout": "2s"},
        }
