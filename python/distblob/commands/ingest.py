"""``distblob ingest SRC... --root DIR --repo NAME``: store files as blobs of a repository.

Files and directories (walked recursively) are stored through the blob store API by ``--jobs``
threads; the native engine releases the GIL for every byte it moves, so threads scale.

How one file is stored, and why:

- With the native engine on a local filesystem, any file is stored by one GIL-free call
  (the repository's :meth:`~distblob.storage.linked.LinkedBlobStore.file_putter`, the Rust
  core's ``put_blob_fd``): the kernel copies it (``copy_file_range``: page cache to page cache,
  no copy through user space) into an unnamed ``O_TMPFILE`` beside the blobs, which is hashed as
  stored (through a memory map) and only then linked into place, followed by the repository link.
  Per byte that is one kernel copy and one hash pass, against a read, a hash and a write through
  a buffer; per file, about twenty system calls and no upload directory, start time or hash
  state (a one-shot store has nothing to resume). A run killed mid-file leaves nothing at all.
- Otherwise (the python engine, other drivers): files up to :data:`SMALL` (4 MiB) are read whole
  into the worker's buffer and handed to ``repo.blobs.put``; larger ones stream through an upload
  (``repo.blobs.create``, ``writer.write`` of each buffer read, ``writer.digest()`` from the
  running hash, commit). Nothing under ``blobs/`` appears before the commit has checked it, and
  any error cancels the upload.
- The digest is always of the bytes stored. A file whose size is not the one it had when opened
  (it grew or shrank while being read) is reported and nothing is stored for it; a file rewritten
  in place at the same size is stored as it was read. Pseudo-files (``/proc``) report a size of 0
  and are taken as read.
- Re-running skips what is stored. The native call and ``put`` check for the blob once the digest
  is known and then write only the link. A large file already stored is better not copied at
  all: it is hashed first when a blob of exactly its size is stored already (sizes come from one
  walk of ``blobs/<algorithm>`` at the first large file), and when its digest is stored only the
  repository link is written. A new large file is read once.

Memory is bounded by one :data:`SMALL` buffer per job (native copies go through the page cache in
4 MiB steps). With ``--no-fsync`` nothing is synced per blob, and ``registry.sync()`` makes the
whole run durable once at the end. Symlinks inside a directory are followed only to regular files
inside that directory (a symlinked directory is not descended into); named sources are followed.
A killed run leaves at most ``_uploads/<id>`` directories (python engine), which hold no blob.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TextIO

from distblob.commands.store import add_store_arguments, open_registry
from distblob.descriptor import DEFAULT_MEDIA_TYPE, Descriptor
from distblob.digest import Digest
from distblob.errors import DistblobError
from distblob.registry import Repository

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


class SourceChangedError(OSError):
    """The file's size changed while it was read; nothing was stored for it."""

    def __init__(self, opened: int, read: int) -> None:
        super().__init__(
            f"the file changed size while it was read ({opened} bytes when opened, "
            f"{read} read); nothing stored"
        )


def _check_size(opened: int, read: int) -> None:
    # Pseudo-files (/proc, /sys) say they are empty and are not: a size of 0 promises nothing.
    if opened and read != opened:
        raise SourceChangedError(opened, read)


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
    add_store_arguments(parser)
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
        # The one-call store of a whole file (native engine, local filesystem), else None.
        self._put_file = repo.blobs.file_putter(algorithm)
        self._in_hand: dict[int, int] = {}  # worker thread -> descriptor of its source

    def _stored_sizes(self) -> set[int]:
        """The sizes of every stored blob of the algorithm, from one walk (done once)."""
        with self._sizes_lock:
            if self._sizes is None:
                self._sizes = self.repo.registry.blobs.stored_sizes(self.algorithm)
            return self._sizes

    def _descriptor(self, digest: Digest, size: int) -> Descriptor:
        return Descriptor(media_type=self.media_type, size=size, digest=digest)

    def ingest(self, source: Source, buffer: memoryview) -> Descriptor:
        """Store one file; raises ``OSError`` or a ``DistblobError`` for this file alone."""
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        if not source.follow:
            flags |= os.O_NOFOLLOW  # the entry was no symlink when listed: it must not be now
        # O_NONBLOCK: a FIFO put in place of a file must not block the open.
        fd = os.open(source.path, flags)
        me = threading.get_ident()
        self._in_hand[me] = fd
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NotRegularFileError(f"{source.path}: not a regular file")
            size = info.st_size
            if self._put_file is not None and (size <= SMALL or size not in self._stored_sizes()):
                # Pseudo-files (/proc, /sys) say they are empty and are not: a size of 0
                # promises nothing.
                stored = self._put_file(fd, size or None)
                if stored is not None:
                    return self._descriptor(stored[0], size)
                # No unnamed files on this filesystem: nothing was read, go the portable way.
            n = _read_into(fd, buffer)
            if n < len(buffer):
                _check_size(size, n)
                return self.repo.blobs.put(buffer[:n], self.media_type, algorithm=self.algorithm)
            os.lseek(fd, 0, os.SEEK_SET)
            return self._ingest_large(fd, buffer, size)
        finally:
            del self._in_hand[me]
            os.close(fd)

    def bytes_in_hand(self) -> int:
        """How far the workers have read the files in hand (each source's file position, which
        the copy and the reads advance): for the progress bar while big files are stored."""
        total = 0
        for fd in list(self._in_hand.values()):
            with contextlib.suppress(OSError):  # finished (closed) since the snapshot
                total += os.lseek(fd, 0, os.SEEK_CUR)
        return total

    def _ingest_large(self, fd: int, buffer: memoryview, size: int) -> Descriptor:
        if size in self._stored_sizes():
            digest, hashed = self._hash(fd, buffer)
            _check_size(size, hashed)
            try:
                # Storage, not the cache: a blob is linked only to data that is there.
                stored = self.repo.registry.blobs.stat_stored(digest)
            except DistblobError:
                stored = None
            if stored is not None:
                self.repo.blobs.link(digest)
                descriptor = self._descriptor(digest, stored.size)
                self.repo.blobs.set_descriptor(digest, descriptor)
                return descriptor
            os.lseek(fd, 0, os.SEEK_SET)
        writer = self.repo.blobs.create(algorithm=self.algorithm)
        try:
            # Read into the job's buffer and hand each buffer to the writer, which hashes the
            # very bytes it writes.
            while n := _read_into(fd, buffer):
                writer.write(buffer[:n])
            _check_size(size, writer.size)
            return writer.commit(self._descriptor(writer.digest(), writer.size))
        except BaseException:
            writer.cancel()  # nothing half-stored: the upload goes, blobs/ was never touched
            raise

    def _hash(self, fd: int, buffer: memoryview) -> tuple[Digest, int]:
        hasher = self.repo.registry.engine.new_hasher(self.algorithm)
        hashed = 0
        while n := _read_into(fd, buffer):
            hasher.update(buffer[:n])
            hashed += n
        return Digest.from_hasher(hasher), hashed


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
        registry = open_registry(args, "ingest", create=True, engine=args.engine, fsync=args.fsync)
        if registry is None:
            return 2
        repo = registry.repository(args.repo)
    except (OSError, DistblobError, ValueError) as exc:
        print(f"distblob ingest: {exc}", file=sys.stderr)
        return 2

    files = list(collect(args.sources, report))
    # Sources refused while listing (missing, not a file) count as failed files of the run.
    progress.start(sum(f.size for f in files), len(files) + failures)
    for _ in range(failures):
        progress.fail(0)
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
                progress.fail(source.size)
                continue
            except DistblobError as exc:
                report(source.path, str(exc))
                progress.fail(source.size)
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
                progress.in_flight(ingester.bytes_in_hand())
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
