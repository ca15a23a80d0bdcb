"""A writer process for the crash tests: uploads deterministic data until it is killed.

Run as ``python crash_writer.py ROOT ENGINE SIZE SEED``. It creates an upload in repository
``crash/test`` of a filesystem registry at ROOT, prints ``id <upload id>``, then writes
:func:`intended_data` in chunks of seeded sizes, closing the writer and resuming the upload every
few chunks (each close stores a hash state). It reports progress on stdout, one line at a time:

- ``wrote <offset>`` after each write (the bytes are in the file, or in its user-space buffer
  for the python engine, which flushes them on close),
- ``closed <offset>`` after each close (the data and the hash state are on disk),
- ``done <size>`` after the last close, and then waits for stdin to close without committing.

The test kills it with SIGKILL at any moment and checks what it left.
"""

from __future__ import annotations

import hashlib
import random
import sys

REPOSITORY = "crash/test"
#: Chunks hold 64 KiB to 3 MiB, of sizes not aligned to a hash block.
CHUNK_RANGE = (64 << 10, 3 << 20)
#: The writer is closed (storing a state) and the upload resumed after this many chunks.
CLOSE_EVERY = 3
_BLOCK = 1 << 20


def intended_data(size: int, seed: int) -> bytes:
    """``size`` deterministic bytes: SHAKE-128 blocks of ``seed`` and the block number."""
    out = bytearray()
    block = 0
    while len(out) < size:
        out += hashlib.shake_128(f"crash-{seed}-{block}".encode()).digest(_BLOCK)
        block += 1
    return bytes(out[:size])


def chunk_sizes(size: int, seed: int) -> list[int]:
    """The sizes of the writes, from a generator seeded with ``seed``."""
    rng = random.Random(seed)
    sizes: list[int] = []
    left = size
    while left:
        n = min(left, rng.randrange(*CHUNK_RANGE) | 1)
        sizes.append(n)
        left -= n
    return sizes


def main(root: str, engine: str, size: int, seed: int) -> None:
    from distblob import Registry

    data = memoryview(intended_data(size, seed))
    # fsync off: a killed process loses nothing the kernel has, which is what is tested here.
    repo = Registry.filesystem(root, engine=engine, fsync=False).repository(REPOSITORY)
    writer = repo.blobs.create()
    upload_id = writer.id

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    say(f"id {upload_id}")
    offset = 0
    for number, n in enumerate(chunk_sizes(size, seed), start=1):
        writer.write(data[offset : offset + n])
        offset += n
        say(f"wrote {offset}")
        if number % CLOSE_EVERY == 0:
            writer.close()
            say(f"closed {offset}")
            writer = repo.blobs.resume(upload_id)
    writer.close()
    say(f"closed {offset}")
    say(f"done {offset}")
    sys.stdin.read()  # wait to be killed (or for the test to close our stdin)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
