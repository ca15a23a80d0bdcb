"""How many cores native uploads keep busy: ``python -m benches.busy_cores``.

Issue 4 asks four threads to reach 1.7x one thread's throughput. This script shows what bounds
that on a small machine: it measures, from ``/proc/stat``, the share of all cores that is busy
while one and then four threads each write and durably commit their blob (1 GiB in all).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import threading
import time

from distblob import Descriptor, Digest, Registry

MIB = 1 << 20


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]  # total, idle + iowait


def run(threads: int, total: int = 1024 * MIB) -> tuple[float, float]:
    """MB/s and the number of cores busy while ``threads`` uploads share ``total`` bytes."""
    count = total // threads // MIB
    buffers = [os.urandom(MIB) for _ in range(threads)]
    digests = []
    for buffer in buffers:
        h = hashlib.sha256()
        for _ in range(count):
            h.update(buffer)
        digests.append(Digest.from_parts("sha256", h.hexdigest()))
    root = tempfile.mkdtemp(prefix="distblob-cores-", dir=os.environ.get("DISTBLOB_BENCH_DIR"))
    try:
        repo = Registry.filesystem(root).repository("bench/cores")

        def one(i: int) -> None:
            writer = repo.blobs.create()
            for _ in range(count):
                writer.write(buffers[i])
            writer.commit(Descriptor(digest=digests[i]))

        workers = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
        total_before, idle_before = _cpu_times()
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        total_after, idle_after = _cpu_times()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    busy = 1 - (idle_after - idle_before) / (total_after - total_before)
    return count * threads * MIB / elapsed / 1e6, busy * (os.cpu_count() or 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--total-mib", type=int, default=1024, help="bytes written per run")
    args = parser.parse_args()
    for threads in (1, 4, 1, 4):
        mb_per_s, cores = run(threads, args.total_mib * MIB)
        print(
            f"{threads} thread(s): {mb_per_s:.0f} MB/s, {cores:.2f} of {os.cpu_count()} cores busy"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
