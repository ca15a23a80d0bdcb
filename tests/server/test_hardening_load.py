"""Load on loopback: 200 concurrent uploads through one ``distblob serve`` process.

Each of 200 threads holds its own connection and pushes one blob of a random size in random
PATCH chunks (POST, PATCHes, PUT), all released at once by a barrier. Zero errors are allowed;
afterwards every blob is read back over HTTP and its digest checked, nothing is left under
``_uploads``, and the server's peak RSS (``VmHWM``) stays under a generous bound.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from pathlib import Path

import pytest

from distblob import Registry
from support.blobstore import uploads_left
from support.goregistry import sha256_digest
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(180)

UPLOADS = 200
MAX_SIZE = 512 << 10
RSS_BOUND = 400 << 20
#: The figures of the last run, for the report (``pytest -s`` prints them).
FIGURES: dict[str, float] = {}


def peak_rss(pid: int) -> int:
    """``VmHWM`` of process ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_200_concurrent_uploads(tmp_path: Path) -> None:
    rng = random.Random(200)
    blobs = [rng.randbytes(rng.randrange(1, MAX_SIZE)) for _ in range(UPLOADS)]
    errors: list[str] = []
    barrier = threading.Barrier(UPLOADS)
    with DistblobServer(tmp_path, extra_config={"log": {"level": "warn"}}) as server:
        assert server._proc is not None
        pid = server._proc.pid
        baseline = peak_rss(pid)

        def push(index: int) -> None:
            data = blobs[index]
            chunk_rng = random.Random(index)
            sizes = []
            left = len(data)
            while left > 0 and len(sizes) < 6:
                n = min(left, chunk_rng.randrange(1, 200_000))
                sizes.append(n)
                left -= n
            try:
                with server.client(timeout=60) as client:
                    barrier.wait(timeout=60)
                    digest = client.push_blob(f"load/r{index % 20}", data, sizes)
                    assert digest == sha256_digest(data)
            except BaseException as error:  # collected, reported together
                errors.append(f"{index}: {error!r}")

        started = time.monotonic()
        threads = [threading.Thread(target=push, args=(i,)) for i in range(UPLOADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        elapsed = time.monotonic() - started
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []

        with server.client() as client:
            for index, data in enumerate(blobs):
                resp = client.get_blob(f"load/r{index % 20}", sha256_digest(data), expect=(200,))
                assert hashlib.sha256(resp.body).hexdigest() == sha256_digest(data)[7:]
        peak = peak_rss(pid)
        log = server.log_text()
    assert "unexpected error" not in log, log[-2000:]
    registry = Registry.filesystem(tmp_path)
    for index in range(20):
        assert uploads_left(registry.driver, f"load/r{index}") == []
    FIGURES.update(
        uploads=UPLOADS,
        megabytes=sum(map(len, blobs)) / 1e6,
        seconds=elapsed,
        baseline_rss_mib=baseline / 2**20,
        peak_rss_mib=peak / 2**20,
    )
    print(f"\nload figures: {FIGURES}")
    assert peak < RSS_BOUND, f"peak RSS {peak / 2**20:.0f} MiB"
