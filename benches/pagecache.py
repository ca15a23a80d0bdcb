"""What a page-cache write costs on this machine: ``python -m benches.pagecache``.

The upload benchmarks are bound by the kernel's copy into the page cache, and this script shows
by how much. It runs the data path of a large upload without HTTP or the store: 1 GiB arrives
on a loopback socket (a client process sends it with ``sendfile``), is read into a reused 1 MiB
buffer, hashed with the native SHA-256 on a second thread while it is written, and made durable
with ``fdatasync`` before the clock stops. Two ways to write it, in alternating rounds:

- ``page cache``: ``pwrite`` of the buffer, as distblob and the Go registry do;
- ``O_DIRECT``: each whole 4 KiB block of the buffer copied into an aligned buffer and written
  past the page cache (the odd bytes at either end through the page cache).

Each line gives the wall time and the process's CPU time (client excluded). On a VM whose
balloon device reports free pages to the host (``VIRTIO_BALLOON_F_REPORTING``, which this
script prints when present), memory freed for a few seconds is handed back to the host, and the
page cache pays a host fault for every page it takes again. ``O_DIRECT`` never takes page-cache
pages, so the gap between the rows is that price. Nothing here is a distblob claim: distblob
writes through the page cache, because the blob's first readers then find it there.
"""

from __future__ import annotations

import argparse
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from distblob import Sha256

MIB = 1 << 20
BLOCK = 4096


def balloon_reports_free_pages() -> bool:
    """Whether a virtio balloon device negotiated free page reporting (feature bit 5)."""
    for device in Path("/sys/bus/virtio/devices").glob("*"):
        try:
            if (device / "device").read_text().strip() != "0x0005":  # the balloon
                continue
            features = (device / "features").read_text().strip()
        except OSError:
            continue
        if len(features) > 5 and features[5] == "1":
            return True
    return False


def _client(port: int, source: str) -> None:
    with socket.create_connection(("127.0.0.1", port)) as conn, open(source, "rb") as file:
        conn.sendfile(file)


class Writer:
    """Writes received pieces at their offset through the page cache."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd

    def write(self, data: memoryview, pos: int) -> None:
        _write_all(self.fd, data, pos)

    def close(self) -> None:
        pass


class DirectWriter(Writer):
    """Writes the whole 4 KiB blocks of each piece with ``O_DIRECT`` from an aligned copy."""

    def __init__(self, fd: int, path: str) -> None:
        super().__init__(fd, path)
        self.direct = os.open(path, os.O_WRONLY | os.O_DIRECT)
        self.staging = memoryview(mmap.mmap(-1, MIB))  # page-aligned, reused

    def write(self, data: memoryview, pos: int) -> None:
        head = min((-pos) % BLOCK, len(data))
        body = (len(data) - head) // BLOCK * BLOCK
        if head:
            _write_all(self.fd, data[:head], pos)
        if body:
            self.staging[:body] = data[head : head + body]
            _write_all(self.direct, self.staging[:body], pos + head)
        if head + body < len(data):
            _write_all(self.fd, data[head + body :], pos + head + body)

    def close(self) -> None:
        os.close(self.direct)


def _write_all(fd: int, data: memoryview, pos: int) -> None:
    while data:
        n = os.pwrite(fd, data, pos)
        data, pos = data[n:], pos + n


def one_round(source: str, size: int, directory: str, mode: str) -> tuple[float, float]:
    """Receive ``size`` bytes, hash and write them durably; (wall s, CPU s) of this process."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    code = f"import benches.pagecache as p; p._client({port}, {source!r})"
    client = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent.parent)
    conn, _ = listener.accept()
    path = os.path.join(directory, f"{mode}.data")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    writer = (DirectWriter if mode == "O_DIRECT" else Writer)(fd, path)
    view = memoryview(bytearray(MIB))
    hasher = Sha256()
    pos = 0
    with ThreadPoolExecutor(1) as hashing:
        start, cpu = time.perf_counter(), time.process_time()
        while True:
            n = conn.recv_into(view)
            while 0 < n < MIB and (more := conn.recv_into(view[n:])):
                n += more
            if not n:
                break
            hashed = hashing.submit(hasher.update, view[:n])
            writer.write(view[:n], pos)
            hashed.result()
            pos += n
        os.fdatasync(fd)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    client.wait()
    conn.close()
    listener.close()
    writer.close()
    os.close(fd)
    os.unlink(path)
    if pos != size:
        raise RuntimeError(f"received {pos} bytes, expected {size}")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MIB
    where = os.environ.get("DISTBLOB_BENCH_DIR") or "."
    print(f"balloon free page reporting: {'yes' if balloon_reports_free_pages() else 'no'}")
    with tempfile.TemporaryDirectory(prefix="distblob-pagecache-", dir=where) as directory:
        try:
            os.close(os.open(os.path.join(directory, "probe"), os.O_CREAT | os.O_DIRECT, 0o644))
        except OSError as error:
            sys.exit(f"O_DIRECT is not supported in {where}: {error.strerror}")
        source = os.path.join(directory, "source")
        with open(source, "wb") as file:
            for _ in range(args.size_mib):
                file.write(os.urandom(MIB))
        best: dict[str, tuple[float, float]] = {}
        for number in range(args.rounds):
            modes = ["page cache", "O_DIRECT"]
            for mode in modes if number % 2 == 0 else modes[::-1]:
                os.sync()
                time.sleep(3)  # long enough for freed pages to be reported, as between requests
                wall, cpu = one_round(source, size, directory, mode)
                print(f"{mode:10s} {size / wall / 1e6:6.0f} MB/s  {cpu:5.2f} CPU-s", flush=True)
                if mode not in best or wall < best[mode][0]:
                    best[mode] = (wall, cpu)
        (cached_wall, cached_cpu), (direct_wall, direct_cpu) = best["page cache"], best["O_DIRECT"]
        print(
            f"best: O_DIRECT / page cache = {cached_wall / direct_wall:.2f}x the speed, "
            f"{direct_cpu / cached_cpu:.2f}x the CPU"
        )


if __name__ == "__main__":
    main()
