"""``distblob ingest SRC... --root DIR --repo NAME``: store files as blobs linked into a repository.

Files and directories (walked recursively) are stored through the blob store API by ``--jobs``
threads; the native engine releases the GIL for every byte it moves, so threads scale.

How one file is stored, and why:

- Up to :data:`SMALL` (4 MiB) it is read whole into the worker's own buffer and handed to
  ``repo.blobs.put``: with the native engine that is one GIL-free call which hashes, checks
  whether the blob exists (then writes only the link), and writes an unnamed file linked into
  place. Reading, hashing and writing once each is as cheap as ingesting can be.
- Larger files stream through an upload (``repo.blobs.create``, then ``writer.write`` of each
  buffer read; this measured 3.5x faster than ``writer.read_from(fd)``, whose native copy loop
  is slow): the native writer hashes the very buffers it writes, so :meth:`BlobWriter.digest`
  gives the digest to commit with after one read of the source. Nothing under ``blobs/``
  appears before the commit has checked it, and any error cancels the upload.
- Re-running skips what is stored. Small files: ``put`` skips the write of a blob that exists.
  Large files: a digest is only known after hashing, and hashing before writing would read every
  new file twice. So a large file is hashed first only when a blob of exactly its size is stored
  already (sizes come from one walk of ``blobs/<algorithm>`` at the first large file); when its
  digest is stored, only the repository link is written. A new large file is read once.

Memory is bounded by one :data:`SMALL` buffer per job (the native upload copies through its own
fixed buffers). With ``--no-fsync`` nothing is synced per blob, and ``registry.sync()`` makes the
whole run durable once at the end. Symlinks inside a directory are followed only to regular files
inside that directory (a symlinked directory is not descended into); named sources are followed.
A killed run leaves at most ``_uploads/<id>`` directories, which hold no blob.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TextIO

from distblob.descriptor import DEFAULT_MEDIA_TYPE, Descriptor
from distblob.digest import Digest
from distblob.errors import DistblobError, PathNotFoundError
from distblob.registry import Registry, Repository
from distblob.storage import paths

from .progress import Progress

#: Files up to this size are read whole and stored with one ``put``.
SMALL = 4 << 20


@dataclass(frozen=True, slots=True)
class Source:
    """One file to ingest: the path as reported, its size when listed, and whether opening it
    may follow a symlink (named sources, and symlinks checked to stay inside their directory)."""

    path: str
    size: int
    follow: bool


class NotRegularFileError(OSError):
    """The path is (no longer) a regular file."""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``ingest`` subcommand (its handler is set as the ``run`` default)."""
    parser = subparsers.add_parser(
        "ingest",
        help="store files and directories as blobs linked into a repository",
        description="Store files (directories recursively) as blobs of a repository.",
    )
    parser.add_argument("sources", nargs="+", metavar="SRC", help="files or directories")
    parser.add_argument("--root", required=True, help="registry root directory")
    parser.add_argument("--repo", required=True, help="repository name, e.g. library/app")
    parser.add_argument(
        "--jobs", type=_positive, default=min(4, os.cpu_count() or 1), help="parallel writers"
    )
    parser.add_argument("--algorithm", choices=("sha256", "blake3"), default="sha256")
    parser.add_argument("--media-type", default=DEFAULT_MEDIA_TYPE, help="media type of the blobs")
    parser.add_argument("--json", action="store_true", help="one JSON descriptor line per file")
    parser.add_argument("--engine", choices=("native", "python"), default="native")
    parser.add_argument(
        "--no-fsync",
        dest="fsync",
        action="store_false",
        help="sync nothing per blob; sync the filesystem once at the end",
    )
    parser.set_defaults(run=run)


# -- listing -----------------------------------------------------------------------------------


def collect(sources: list[str], on_error: Callable[[str, str], None]) -> Iterator[Source]:
    """The regular files of ``sources``, directories walked depth first in name order."""
    for source in sources:
        try:
            info = os.stat(source)
        except OSError as exc:
            on_error(source, exc.strerror or str(exc))
            continue
        if stat.S_ISREG(info.st_mode):
            yield Source(source, info.st_size, follow=True)
        elif stat.S_ISDIR(info.st_mode):
            yield from _walk(source, on_error)
        else:
            on_error(source, "not a regular file or directory")


def _walk(top: str, on_error: Callable[[str, str], None]) -> Iterator[Source]:
    real_top = os.path.realpath(top)
    pending = [top]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as exc:
            on_error(directory, exc.strerror or str(exc))
            continue
        subdirectories = []
        for entry in entries:
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    inside = os.path.commonpath([real_top, target]) == real_top
                    if inside and os.path.isfile(target):
                        yield Source(entry.path, os.stat(target).st_size, follow=True)
                elif entry.is_dir(follow_symlinks=False):
                    subdirectories.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    yield Source(entry.path, entry.stat(follow_symlinks=False).st_size, False)
                # Anything else (FIFOs, sockets, devices) is not a file's content: skipped.
            except OSError as exc:
                on_error(entry.path, exc.strerror or str(exc))
        pending.extend(reversed(subdirectories))


# -- storing -----------------------------------------------------------------------------------


def _read_into(fd: int, view: memoryview) -> int:
    """Fill ``view`` from ``fd``; the count read (less than its length means end of file)."""
    n = 0
    while n < len(view):
        got = os.readv(fd, [view[n:]])
        if not got:
            break
        n += got
    return n


class Ingester:
    """Stores :class:`Source` files into one repository; shared by the worker threads."""

    def __init__(self, repo: Repository, *, algorithm: str, media_type: str) -> None:
        self.repo = repo
        self.algorithm = algorithm
        self.media_type = media_type
        self._sizes: set[int] | None = None
        self._sizes_lock = threading.Lock()

    def _stored_sizes(self) -> set[int]:
        """The sizes of every stored blob of the algorithm, from one walk (done once)."""
        with self._sizes_lock:
            if self._sizes is None:
                driver = self.repo.registry.driver
                try:
                    entries = driver.walk(paths.blobs_root(self.algorithm))
                    sizes = {e.size for e in entries if not e.is_dir and e.path.endswith("/data")}
                except PathNotFoundError:
                    sizes = set()
                self._sizes = sizes
            return self._sizes

    def ingest(self, source: Source, buffer: memoryview) -> Descriptor:
        """Store one file; raises ``OSError`` or a ``DistblobError`` for this file alone."""
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        if not source.follow:
            flags |= os.O_NOFOLLOW  # the entry was no symlink when listed: it must not be now
        # O_NONBLOCK: a FIFO put in place of a file must not block the open.
        fd = os.open(source.path, flags)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NotRegularFileError(f"{source.path}: not a regular file")
            n = _read_into(fd, buffer)
            if n < len(buffer):
                return self.repo.blobs.put(buffer[:n], self.media_type, algorithm=self.algorithm)
            os.lseek(fd, 0, os.SEEK_SET)
            return self._ingest_large(fd, buffer)
        finally:
            os.close(fd)

    def _ingest_large(self, fd: int, buffer: memoryview) -> Descriptor:
        size = os.fstat(fd).st_size
        if size in self._stored_sizes():
            digest = self._hash(fd, buffer)
            try:
                stored = self.repo.registry.blobs.stat(digest)
            except DistblobError:
                stored = None
            if stored is not None:
                self.repo.blobs.link(digest)
                descriptor = Descriptor(media_type=self.media_type, size=stored.size, digest=digest)
                self.repo.blobs.set_descriptor(digest, descriptor)
                return descriptor
            os.lseek(fd, 0, os.SEEK_SET)
        writer = self.repo.blobs.create(algorithm=self.algorithm)
        try:
            # Read into the job's buffer and hand each buffer to the writer: one GIL-free native
            # call writes and hashes it. Measured 3.5x faster than ``writer.read_from(fd)``.
            while n := _read_into(fd, buffer):
                writer.write(buffer[:n])
            provisional = Descriptor(
                media_type=self.media_type, size=writer.size, digest=writer.digest()
            )
            return writer.commit(provisional)
        except BaseException:
            writer.cancel()  # nothing half-stored: the upload goes, blobs/ was never touched
            raise

    def _hash(self, fd: int, buffer: memoryview) -> Digest:
        hasher = self.repo.registry.engine.new_hasher(self.algorithm)
        while n := _read_into(fd, buffer):
            hasher.update(buffer[:n])
        return Digest.from_hasher(hasher)


# -- the command -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run ``distblob ingest``; 0 if every file was stored, 1 if any failed."""
    out: TextIO = sys.stdout
    failures = 0
    output_lock = threading.Lock()
    progress = Progress(0, 0, label="ingest")

    def report(path: str, reason: str) -> None:
        nonlocal failures
        with output_lock:
            failures += 1
        progress.message(f"distblob ingest: {path}: {reason}")

    try:
        registry = Registry.filesystem(args.root, engine=args.engine, fsync=args.fsync)
        repo = registry.repository(args.repo)
    except (OSError, DistblobError, ValueError) as exc:
        print(f"distblob ingest: {exc}", file=sys.stderr)
        return 2

    files = list(collect(args.sources, report))
    progress.start(sum(f.size for f in files), len(files))
    ingester = Ingester(repo, algorithm=args.algorithm, media_type=args.media_type)
    stop = threading.Event()
    next_index = 0
    index_lock = threading.Lock()

    def worker() -> None:
        nonlocal next_index
        # One byte more than SMALL: a full buffer then means "larger than SMALL".
        buffer = memoryview(bytearray(SMALL + 1))
        while not stop.is_set():
            with index_lock:
                if next_index >= len(files):
                    return
                source = files[next_index]
                next_index += 1
            try:
                descriptor = ingester.ingest(source, buffer)
            except OSError as exc:
                report(source.path, exc.strerror or str(exc))
                progress.advance(0)
                continue
            except DistblobError as exc:
                report(source.path, str(exc))
                progress.advance(0)
                continue
            if args.json:
                line = json.dumps(
                    {
                        "path": source.path,
                        "mediaType": descriptor.media_type,
                        "size": descriptor.size,
                        "digest": str(descriptor.digest),
                    },
                    separators=(",", ":"),
                )
                with output_lock:
                    out.write(line + "\n")
            progress.advance(descriptor.size)

    threads = [
        threading.Thread(target=worker, name=f"ingest-{i}", daemon=True)
        for i in range(min(args.jobs, max(1, len(files))))
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        # Workers finish (or cancel) the file in hand and take no other one.
        stop.set()
        for thread in threads:
            thread.join()
        progress.close()
        print("distblob ingest: interrupted", file=sys.stderr)
        return 130
    finally:
        out.flush()
    progress.close()
    if not args.fsync:
        registry.sync()
    return 1 if failures else 0


__all__ = ["SMALL", "Ingester", "Source", "collect", "register", "run"]
