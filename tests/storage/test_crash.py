"""A writer killed with SIGKILL leaves a resumable upload and no blob.

``tests/support/crash_writer.py`` uploads 64 MiB of deterministic data through a filesystem
registry in chunks of seeded, unaligned sizes, closing the writer (which stores a hash state) and
resuming the upload every few chunks, and reports its progress line by line. Each test kills it
at some moment and then checks, in this process, what a crash leaves:

- nothing under ``blobs/`` (only a commit puts anything there);
- the upload's data is a prefix of the intended data, at least as long as the writer reported
  (for the python engine, as long as its last close: its file writer buffers in user space);
- every hash state is a valid Go state no further than the data;
- ``resume()`` continues from the newest state (native) or rehashes (python), hashing only the
  gap past the state, also when states are missing; writing the rest and committing yields the
  intended digest, and the blob holds the intended bytes.
"""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from distblob import Descriptor, Digest, Registry
from support.crash_writer import REPOSITORY, intended_data
from support.goregistry import SHA256_STATE_SIZE

SIZE = 64 << 20
SEED = 2026
KILLS = 5
WRITER = Path(__file__).resolve().parent.parent / "support" / "crash_writer.py"
V2 = Path("docker/registry/v2")


@pytest.fixture(scope="module")
def intended() -> tuple[bytes, Digest]:
    """The data the writer uploads, and its digest."""
    data = intended_data(SIZE, SEED)
    return data, Digest.from_parts("sha256", hashlib.sha256(data).hexdigest())


class Progress:
    """What the writer reported before it was killed."""

    def __init__(self) -> None:
        self.upload_id = ""
        self.wrote = 0
        self.closed = 0
        self.done = False

    def read(self, stdout: IO[str]) -> str:
        line = stdout.readline()
        assert line, "the writer exited early"
        kind, _, value = line.strip().partition(" ")
        if kind == "id":
            self.upload_id = value
        elif kind == "wrote":
            self.wrote = int(value)
        elif kind == "closed":
            self.closed = int(value)
        elif kind == "done":
            self.done = True
        else:
            raise AssertionError(f"unexpected line from the writer: {line!r}")
        return kind


def run_and_kill(root: Path, engine: str, *, kill_at: int | None, pause: float) -> Progress:
    """Run the writer and SIGKILL it once it reported writing ``kill_at`` bytes and ``pause``
    seconds passed (the writer goes on meanwhile); ``None``: once it is done and idle."""
    progress = Progress()
    with subprocess.Popen(
        [sys.executable, str(WRITER), str(root), engine, str(SIZE), str(SEED)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            while progress.read(proc.stdout) != "id":
                pass
            if kill_at is None:
                while progress.read(proc.stdout) != "done":
                    pass
            else:
                while progress.wrote < kill_at and not progress.done:
                    progress.read(proc.stdout)
                time.sleep(pause)
        finally:
            proc.kill()
        assert proc.wait() == -signal.SIGKILL
    return progress


def check_and_finish(
    root: Path, engine: str, progress: Progress, intended: tuple[bytes, Digest]
) -> int:
    """Check what the killed writer left, resume, finish and commit; return ``hashed``."""
    data, digest = intended
    blobs = root / V2 / "blobs"
    assert not blobs.exists() or not [p for p in blobs.rglob("*") if not p.is_dir()]

    upload = root / V2 / "repositories" / REPOSITORY / "_uploads" / progress.upload_id
    left = (upload / "data").read_bytes()
    size = len(left)
    assert left == data[:size], "the data is not a prefix of what was written"
    assert size >= progress.closed
    if engine == "native":
        assert size >= progress.wrote, "a write the native engine reported is lost"

    states = upload / "hashstates" / "sha256"
    offsets = []
    for path in states.iterdir() if states.exists() else []:
        if not path.name.isdigit():
            # A state being written when the kill came: its temporary file, never read.
            assert path.name.endswith(".tmp")
            continue
        offset = int(path.name)
        state = path.read_bytes()
        assert offset <= size, "a state is ahead of the data"
        assert len(state) == SHA256_STATE_SIZE
        assert state[:4] == b"sha\x03"
        assert int.from_bytes(state[-8:], "big") == offset
        offsets.append(offset)
    if engine == "native":
        assert progress.closed == 0 or progress.closed in offsets
    else:
        assert offsets == [], "the python engine saves no states"

    store = Registry.filesystem(root, engine=engine, fsync=False).repository(REPOSITORY).blobs
    writer = store.resume(progress.upload_id)
    assert writer.size == size
    # The newest state not past the data: the gap after it is all that is hashed again.
    hashed = writer.hashed
    assert hashed == (max(offsets, default=0) if engine == "native" else 0)
    for start in range(size, SIZE, 7 << 20):
        writer.write(data[start : start + (7 << 20)])
    descriptor = writer.commit(Descriptor(digest=digest, size=SIZE))
    assert (descriptor.digest, descriptor.size) == (digest, SIZE)
    assert not upload.exists()
    blob = blobs / "sha256" / digest.encoded[:2] / digest.encoded / "data"
    assert blob.read_bytes() == data
    return hashed


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("moment", range(KILLS))
def test_kill_mid_write(
    tmp_path: Path, intended: tuple[bytes, Digest], engine: str, moment: int
) -> None:
    # One kill in each fifth of the upload, at a seeded point, plus up to 2 ms of drift.
    rng = random.Random(f"{engine}-{moment}")
    kill_at = int(SIZE * (moment + rng.random()) / KILLS)
    progress = run_and_kill(
        tmp_path / "root", engine, kill_at=max(kill_at, 1), pause=rng.random() / 500
    )
    assert progress.wrote >= kill_at
    check_and_finish(tmp_path / "root", engine, progress, intended)


@pytest.mark.parametrize("engine", ["native", "python"])
def test_kill_after_close_resumes_without_rehashing(
    tmp_path: Path, intended: tuple[bytes, Digest], engine: str
) -> None:
    progress = run_and_kill(tmp_path / "root", engine, kill_at=None, pause=0)
    assert progress.closed == progress.wrote == SIZE
    hashed = check_and_finish(tmp_path / "root", engine, progress, intended)
    # native restores the state the last close stored: nothing is hashed again.
    assert hashed == (SIZE if engine == "native" else 0)


@pytest.mark.parametrize("missing", ["newest", "all"])
def test_kill_then_lost_states(
    tmp_path: Path, intended: tuple[bytes, Digest], missing: str
) -> None:
    """States are only a shortcut: without the newest (or any), resume hashes more, no worse."""
    root = tmp_path / "root"
    progress = run_and_kill(root, "native", kill_at=SIZE // 2, pause=0)
    states = root / V2 / "repositories" / REPOSITORY / "_uploads" / progress.upload_id
    states = states / "hashstates" / "sha256"
    offsets = sorted((int(p.name) for p in states.iterdir() if p.name.isdigit()), reverse=True)
    assert len(offsets) >= 2
    for offset in offsets[: 1 if missing == "newest" else None]:
        (states / str(offset)).unlink()
    progress.closed = offsets[1] if missing == "newest" else 0
    hashed = check_and_finish(root, "native", progress, intended)
    assert hashed == (offsets[1] if missing == "newest" else 0)
