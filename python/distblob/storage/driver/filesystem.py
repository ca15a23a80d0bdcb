"""A storage driver over a local directory (distribution's ``filesystem`` driver).

Driver path ``/a/b`` is the file ``<root>/a/b``. Small files are written to a temporary sibling
and renamed into place, so a reader never sees half a file. Durability is opt-in per call
(``fsync=True``), because the blob store decides which writes must survive a crash: syncing a file
is not enough on POSIX, the directory entries that name it must be synced too, so the driver
remembers which directories each write created or changed and syncs exactly those.

Paths are validated before they are joined to the root, so no driver path can name anything
outside it. Symlinks placed inside the root by an administrator are followed when reading, but a
write, move, delete or :meth:`~FilesystemDriver.local_path` that would resolve outside the root is
refused with ``InvalidPathError``. The check resolves the path just before acting on it; it guards
against mistakes, not against someone racing to swap directories for symlinks.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import logging
import os
import shutil
import stat as stat_module
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, BinaryIO, Final, cast

from distblob import _native
from distblob.errors import (
    DriverParameterError,
    InvalidOffsetError,
    InvalidPathError,
    PathNotFoundError,
    StorageDriverError,
)
from distblob.storage.driver.base import (
    MAX_COMPONENT_LENGTH,
    DirectIO,
    FileInfo,
    FileWriter,
    StorageDriver,
    is_path_component,
    join,
)

logger = logging.getLogger("distblob.storage")

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from _typeshed import ReadableBuffer

#: ``rootdirectory`` when the config gives none (distribution's is ``/var/lib/registry``).
DEFAULT_ROOT_DIRECTORY: Final = "./distblob-data"
#: ``maxthreads`` when the config gives none, and the least it can be (distribution's).
DEFAULT_MAX_THREADS: Final = 100
MIN_MAX_THREADS: Final = 25

# The errors with which the OS says "there is no such file here": the path is missing, or one of
# its parents is a file.
_MISSING: Final = (FileNotFoundError, NotADirectoryError)

# Go's os.MkdirAll and os.Create use these (the umask narrows them), and so do we, so that files
# written by either registry get the same permissions.
_DIR_MODE: Final = 0o777
_FILE_MODE: Final = 0o666

# ".<uuid4>.tmp": the suffix of the temporary file beside the one put_content writes.
_TEMPORARY_SUFFIX_LENGTH: Final = 1 + 36 + 4


def _max_threads(value: object) -> int:
    """``maxthreads`` as distribution reads it: a whole number (or a string of one), the
    default when absent, and :data:`MIN_MAX_THREADS` for anything less (zero and negative
    numbers included)."""
    if value is None:
        return DEFAULT_MAX_THREADS
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise DriverParameterError("maxthreads", f"expected a whole number, not {value!r}")
    return max(value, MIN_MAX_THREADS)


def _directio(value: object) -> DirectIO:
    """``directio``: ``auto`` (the default, also when absent), ``on`` or ``off``. YAML reads
    unquoted ``on``/``off``/``yes``/``no``/``true``/``false`` as booleans, so those are taken
    too."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("auto", "on", "off"):
            return cast("DirectIO", word)
        if word in ("true", "yes"):
            return "on"
        if word in ("false", "no"):
            return "off"
    raise DriverParameterError("directio", f"expected auto, on or off, not {value!r}")


def _sync_dirs(directories: builtins.list[str]) -> None:
    # A directory can be listed twice (as the parent of a new directory and as the file's own
    # parent); sync it once. The order does not matter: the write is reported durable only after
    # all of them are synced.
    _sync_in_parallel(list(dict.fromkeys(directories)))


def _fsync_path(path: str) -> None:
    """Sync a file or a directory by name; nothing if another thread removed it meanwhile (a
    delete that ran after the write: what it left is what should last)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except _MISSING:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Threads syncing the paths of a deferred-sync block besides the one that ends it.
_SYNC_THREADS: Final = 8
_sync_pool: ThreadPoolExecutor | None = None
_sync_pool_lock = threading.Lock()


def _forget_sync_pool() -> None:
    """In a forked child: the parent's pool threads do not exist there; start afresh."""
    global _sync_pool, _sync_pool_lock
    _sync_pool = None
    _sync_pool_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_sync_pool)


def _sync_in_parallel(paths: builtins.list[str]) -> None:
    """Sync every path (files and directories) at once: concurrent fsyncs share the journal
    commits and the device flushes that sequential ones would each wait for."""
    global _sync_pool
    if len(paths) > 1:
        with _sync_pool_lock:
            if _sync_pool is None:
                _sync_pool = ThreadPoolExecutor(_SYNC_THREADS, thread_name_prefix="distblob-fsync")
            pool = _sync_pool
        try:
            others = [pool.submit(_fsync_path, path) for path in paths[1:]]
        except RuntimeError:  # the interpreter is shutting down: no new threads, sync here
            for path in paths:
                _fsync_path(path)
            return
    else:
        others = []
    error: BaseException | None = None
    try:
        if paths:
            _fsync_path(paths[0])
    except BaseException as exc:
        error = exc
    for future in others:  # every sync ends before this returns, even after a failure
        try:
            future.result()
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error


def _write_new(path: str, data: ReadableBuffer, *, fsync: bool) -> None:
    """Create the file ``path`` (``FileExistsError`` if there is one) holding ``data``, synced
    with ``fsync``: os-level calls, which for a small file are an open, a write and a close."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
    try:
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _rmtree(path: str) -> None:
    """Remove a directory tree, ignoring entries another thread removed meanwhile."""

    def ignore_missing(function: Callable[..., object], name: str, error: BaseException) -> None:
        if not isinstance(error, FileNotFoundError):
            raise error

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=ignore_missing)
    else:

        def onerror(
            function: Callable[..., object], name: str, info: tuple[type, BaseException, object]
        ) -> None:
            ignore_missing(function, name, info[1])

        shutil.rmtree(path, onerror=onerror)


#: How often a write or a delete is retried when a concurrent delete or write of the same
#: directory gets in its way.
_RACE_RETRIES = 5

#: How many confined directories to remember before starting afresh.
_CONFINED_CACHE = 1 << 16


class FilesystemDriver(StorageDriver):
    """Stores driver path ``/a/b`` as the file ``<root>/a/b``; creates ``root`` if missing."""

    name = "filesystem"

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        maxthreads: int = DEFAULT_MAX_THREADS,
        directio: DirectIO = "auto",
    ) -> None:
        #: The directory holding the tree, as an absolute OS path.
        self.root: str = os.path.abspath(os.fspath(root))
        #: ``directio`` (distblob's own parameter): whether the large part of an upload is
        #: written past the page cache, see :attr:`StorageDriver.directio`.
        self.directio = _directio(directio)
        #: How many of this driver's calls the server runs at once (``maxthreads``): the
        #: worker threads given to storage verbs (:mod:`distblob.storage.aio`).
        self.maxthreads = max(maxthreads, MIN_MAX_THREADS)
        os.makedirs(self.root, mode=_DIR_MODE, exist_ok=True)
        # Driver paths start with "/", so joining is concatenation (and a root of "/" still works).
        self._prefix = self.root.rstrip(os.sep)
        # The root may itself be a symlink (a volume mounted elsewhere); confinement is checked
        # against where it really is.
        self._real_root = os.path.realpath(self.root)
        self._real_prefix = self._real_root.rstrip(os.sep) + os.sep
        # Directories whose real path is their own path inside the root (no symlink on the way).
        self._confined_dirs: set[str] = set()
        if self._real_root == self._prefix:
            self._confined_dirs.add(self._prefix)
        # Per thread: the paths a deferred-sync block will sync when it ends (see
        # deferred_sync), or no attribute outside such a block.
        self._deferred = threading.local()

    @classmethod
    def check_parameters(cls, parameters: Mapping[str, object]) -> dict[str, Any]:
        """The constructor's keyword arguments for distribution's ``storage.filesystem``
        parameters: ``rootdirectory``, :data:`DEFAULT_ROOT_DIRECTORY` when absent or
        empty in YAML (``null``), ``maxthreads`` (as distribution reads it) and distblob's own
        ``directio`` (``auto``, ``on`` or ``off``). Creates nothing,
        so the config can be checked before a command decides whether a missing root is an
        error.

        Raises :class:`~distblob.errors.DriverParameterError` naming an unknown key or a
        ``rootdirectory`` that is not a non-empty string, or a ``maxthreads`` that is no
        whole number.
        """
        for key in parameters:
            if key not in ("rootdirectory", "maxthreads", "directio"):
                raise DriverParameterError(str(key), "unknown key")
        options: dict[str, Any] = {
            "maxthreads": _max_threads(parameters.get("maxthreads")),
            "directio": _directio(parameters.get("directio")),
        }
        root = parameters.get("rootdirectory")
        if root is None:
            return {"root": DEFAULT_ROOT_DIRECTORY, **options}
        if not isinstance(root, str) or not root:
            raise DriverParameterError(
                "rootdirectory", f"expected a non-empty string, not {root!r}"
            )
        return {"root": root, **options}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, object]) -> FilesystemDriver:
        """A driver from distribution's ``storage.filesystem`` parameters (the factory's
        ``filesystem`` entry); creates the root directory if missing, as the constructor does.

        Raises what :meth:`check_parameters` raises.
        """
        return cls(**cls.check_parameters(parameters))

    def __repr__(self) -> str:
        return f"FilesystemDriver({self.root!r})"

    @contextlib.contextmanager
    def deferred_sync(self) -> Iterator[None]:
        """See :meth:`StorageDriver.deferred_sync`: the files and directories this thread's
        ``fsync=True`` writes would sync are synced in parallel when the block ends. If the
        block raises, they are synced all the same (errors ignored), so that what it did
        write, and a later write finds in place, is durable as usual."""
        if getattr(self._deferred, "pending", None) is not None:
            yield  # nested: the outer block syncs
            return
        pending: dict[str, None] = {}
        self._deferred.pending = pending
        try:
            yield
        except BaseException:
            del self._deferred.pending
            with contextlib.suppress(Exception):  # the block's own error is the one to report
                _sync_in_parallel(list(pending))
            raise
        del self._deferred.pending
        _sync_in_parallel(list(pending))

    def _sync_later(self, paths: builtins.list[str]) -> bool:
        """Add ``paths`` to this thread's deferred-sync block; whether there is one."""
        pending: dict[str, None] | None = getattr(self._deferred, "pending", None)
        if pending is None:
            return False
        pending.update(dict.fromkeys(paths))
        return True

    # -- helpers ------------------------------------------------------------------------------

    def _os_path(self, path: str) -> str:
        """The OS path of a validated driver path; only concatenation, no resolution."""
        return self.root if path == "/" else self._prefix + path

    def _confined(self, path: str) -> str:
        """The OS path of ``path`` for writing, after checking it resolves inside the root.

        Directories already found confined are remembered, so the usual write costs an lstat or
        two (the components below the nearest remembered directory) instead of one per component
        of the whole path.
        """
        os_path = self._os_path(path)
        if self._quick_confined(os_path):
            return os_path
        # realpath resolves the part of the path that exists and keeps the rest as written, so
        # the check also covers the directories a write is about to create.
        real = os.path.realpath(os_path)
        if real != self._real_root and not real.startswith(self._real_prefix):
            raise InvalidPathError(path, "resolves outside the storage root through a symlink")
        parent = os.path.dirname(os_path)
        if os.path.realpath(parent) == parent:
            self._remember(parent)
        return os_path

    def _quick_confined(self, os_path: str) -> bool:
        """Whether ``os_path`` is confined judging from remembered directories alone."""
        pending: builtins.list[str] = []
        current = os.path.dirname(os_path)
        while current not in self._confined_dirs:
            if len(current) <= len(self._prefix):
                return False  # nothing remembered on the way: do the full check
            pending.append(current)
            current = os.path.dirname(current)
        for directory in reversed(pending):
            try:
                mode = os.lstat(directory).st_mode
            except FileNotFoundError:
                # Nothing below a missing directory exists, and what the write creates there
                # are real directories.
                return True
            if not stat_module.S_ISDIR(mode):
                return False  # a symlink (or a file) on the way: do the full check
            self._remember(directory)
        return not os.path.islink(os_path)

    def _remember(self, directory: str) -> None:
        if len(self._confined_dirs) >= _CONFINED_CACHE:
            self._confined_dirs.clear()
            self._confined_dirs.add(self._prefix)
        self._confined_dirs.add(directory)

    def _ensure_dir(self, directory: str, path: str) -> builtins.list[str]:
        """Create ``directory`` and its missing parents; return the directories that changed.

        Those are the parents of every directory created here, whose entries must be synced for
        the new directories to survive a crash. ``path`` is the driver path being written, for
        error messages.
        """
        missing: builtins.list[str] = []
        current = directory
        while True:
            # One stat per level, not isdir then exists: another thread may create the directory
            # between two checks.
            try:
                is_dir = stat_module.S_ISDIR(os.stat(current).st_mode)
            except _MISSING:
                if current == self.root:
                    raise StorageDriverError(f"the storage root {self.root} is gone") from None
                missing.append(current)
                current = os.path.dirname(current)
                continue
            if not is_dir:
                raise StorageDriverError(f"cannot write {path}: a parent is not a directory")
            break
        changed: builtins.list[str] = []
        for new in reversed(missing):
            try:
                os.mkdir(new, _DIR_MODE)
            except FileExistsError:
                # Another thread created it first; it counts as changed all the same, because that
                # thread may not have asked for durability and we did.
                if not os.path.isdir(new):
                    raise StorageDriverError(
                        f"cannot write {path}: a parent is not a directory"
                    ) from None
            except NotADirectoryError:
                raise StorageDriverError(
                    f"cannot write {path}: a parent is not a directory"
                ) from None
            changed.append(os.path.dirname(new))
        return changed

    # -- the driver ---------------------------------------------------------------------------

    def _get_content(self, path: str) -> bytes:
        # os-level calls: a small file is an open, an fstat, two reads and a close, without the
        # buffered file object's own calls (another fstat, an isatty ioctl, a seek).
        try:
            fd = os.open(self._os_path(path), os.O_RDONLY | os.O_CLOEXEC)
        except _MISSING:
            raise PathNotFoundError(path) from None
        try:
            info = os.fstat(fd)
            if stat_module.S_ISDIR(info.st_mode):
                raise PathNotFoundError(path)
            chunks = []
            want = max(info.st_size + 1, 1024)  # the size may have changed since the fstat
            while chunk := os.read(fd, want):
                chunks.append(chunk)
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        finally:
            os.close(fd)

    def _put_content(self, path: str, data: ReadableBuffer, *, fsync: bool) -> None:
        os_path = self._confined(path)
        parent = os.path.dirname(os_path)
        # distribution's "<path>.<uuid>.tmp", with the name cut short when the suffix would make
        # it longer than a filesystem allows.
        name = os.path.basename(os_path)[: MAX_COMPONENT_LENGTH - _TEMPORARY_SUFFIX_LENGTH]
        in_block = fsync and getattr(self._deferred, "pending", None) is not None
        for attempt in range(_RACE_RETRIES):
            changed = self._ensure_dir(parent, path)
            # In a deferred-sync block a new file is synced after its rename, with the
            # directories: a crash before then leaves no file or an empty one. A file that
            # replaces another is synced before the rename, so that a crash leaves the old
            # content or the new, never an empty file where content was.
            deferred = in_block and not os.path.lexists(os_path)
            temporary = os.path.join(parent, f"{name}.{uuid.uuid4()}.tmp")
            try:
                # O_EXCL: never write through a file someone else created.
                _write_new(temporary, data, fsync=fsync and not deferred)
                os.replace(temporary, os_path)
                break
            except FileNotFoundError:
                # A delete of the directory raced this write (a repository unlinking the blob
                # while it is linked again): make the directory again and retry, so the write
                # lands after the delete, as if the two had run one after the other.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                if attempt == _RACE_RETRIES - 1:
                    raise
            except BaseException as error:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                if isinstance(error, IsADirectoryError):
                    raise StorageDriverError(f"cannot write {path}: it is a directory") from None
                raise
        if fsync and not self._sync_later(
            [os_path, *changed, parent] if deferred else [*changed, parent]
        ):
            _sync_dirs([*changed, parent])

    def _reader(self, path: str, offset: int) -> BinaryIO:
        try:
            file = open(self._os_path(path), "rb")  # noqa: SIM115 (returned to the caller)
        except (*_MISSING, IsADirectoryError):
            raise PathNotFoundError(path) from None
        try:
            if offset > os.fstat(file.fileno()).st_size:
                raise InvalidOffsetError(path, offset)
            file.seek(offset)
        except BaseException:
            file.close()
            raise
        return file

    def _writer(self, path: str, *, append: bool) -> FileWriter:
        os_path = self._confined(path)
        changed: builtins.list[str] = []
        try:
            if append:
                fd = os.open(os_path, os.O_WRONLY | os.O_APPEND)
            else:
                parent = os.path.dirname(os_path)
                changed = [*self._ensure_dir(parent, path), parent]
                fd = os.open(os_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
        except _MISSING:
            raise PathNotFoundError(path) from None
        except IsADirectoryError:
            raise StorageDriverError(f"cannot write {path}: it is a directory") from None
        return _FilesystemFileWriter(path, os_path, fd, changed)

    def _stat(self, path: str) -> FileInfo:
        try:
            info = os.stat(self._os_path(path))
        except _MISSING:
            raise PathNotFoundError(path) from None
        is_dir = stat_module.S_ISDIR(info.st_mode)
        return FileInfo(path, 0 if is_dir else info.st_size, info.st_mtime, is_dir)

    def _list(self, path: str) -> builtins.list[str]:
        try:
            names = os.listdir(self._os_path(path))
        except _MISSING:
            raise PathNotFoundError(path) from None
        return [join(path, name) for name in sorted(names) if is_path_component(name)]

    def _move(self, src: str, dst: str, *, fsync: bool) -> None:
        src_os = self._confined(src)
        dst_os = self._confined(dst)
        try:
            source = os.lstat(src_os)
        except _MISSING:
            raise PathNotFoundError(src) from None
        if src == dst:
            return
        if os.path.isdir(dst_os):
            raise StorageDriverError(f"cannot move {src} to {dst}: the destination is a directory")
        parent = os.path.dirname(dst_os)
        changed = self._ensure_dir(parent, dst)
        try:
            os.replace(src_os, dst_os)
        except FileNotFoundError:
            # Removed by another thread since the lstat above.
            raise PathNotFoundError(src) from None
        except (IsADirectoryError, NotADirectoryError) as error:
            kind = "directory" if stat_module.S_ISDIR(source.st_mode) else "file"
            raise StorageDriverError(f"cannot move the {kind} {src} to {dst}: {error}") from None
        # The source directory is not synced: losing the removal after a crash only leaves a
        # stale source (an upload file that purging removes), never a missing destination.
        if fsync and not self._sync_later([*changed, parent]):
            _sync_dirs([*changed, parent])

    def _delete(self, path: str) -> None:
        os_path = self._confined(path)
        try:
            info = os.lstat(os_path)
            if stat_module.S_ISDIR(info.st_mode):
                for attempt in range(_RACE_RETRIES):
                    try:
                        _rmtree(os_path)
                        break
                    except OSError as error:
                        # A write raced the delete and put a file in a directory being removed:
                        # remove again, so the delete lands after that write.
                        if error.errno != errno.ENOTEMPTY or attempt == _RACE_RETRIES - 1:
                            raise
            else:
                os.unlink(os_path)
        except _MISSING:
            raise PathNotFoundError(path) from None

    def _delete_files(self, paths: builtins.list[str]) -> None:
        # Confined here, removed in parallel by the native core (unlink, then rmdir). A path
        # that leads outside the root through a symlink is left alone, the others still go.
        confined = []
        for path in paths:
            try:
                confined.append(self._confined(path))
            except InvalidPathError as exc:
                logger.warning("not deleted: %s", exc)
        _native.delete_files(confined)

    def _walk(self, path: str) -> Iterator[FileInfo]:
        os_path = self._os_path(path)
        try:
            info = os.stat(os_path)
        except _MISSING:
            raise PathNotFoundError(path) from None
        if not stat_module.S_ISDIR(info.st_mode):
            raise PathNotFoundError(path)
        return self._walk_dir(path, os_path, frozenset({(info.st_dev, info.st_ino)}))

    def _walk_dir(
        self, path: str, os_path: str, ancestors: frozenset[tuple[int, int]]
    ) -> Iterator[FileInfo]:
        # ``ancestors`` holds the (device, inode) of every directory above, so that a symlink
        # pointing back up the tree is reported but not descended into forever.
        try:
            with os.scandir(os_path) as scan:
                entries = sorted(
                    (entry for entry in scan if is_path_component(entry.name)),
                    key=lambda entry: entry.name,
                )
        except _MISSING:
            return
        for entry in entries:
            try:
                info = entry.stat()
            except FileNotFoundError:
                continue  # removed since listing, or a dangling symlink
            except OSError:
                if entry.is_symlink():
                    continue  # a symlink that resolves to itself (ELOOP)
                raise
            child = join(path, entry.name)
            is_dir = stat_module.S_ISDIR(info.st_mode)
            yield FileInfo(child, 0 if is_dir else info.st_size, info.st_mtime, is_dir)
            key = (info.st_dev, info.st_ino)
            if is_dir and key not in ancestors:
                yield from self._walk_dir(child, entry.path, ancestors | {key})

    def _local_path(self, path: str) -> str | None:
        return self._confined(path)

    def _sync(self) -> None:
        # One system-wide sync(2) is simpler and cheaper than remembering every file written.
        os.sync()


class _FilesystemFileWriter(FileWriter):
    """Writes through a buffered file; remembers the directories its creation changed."""

    def __init__(self, path: str, os_path: str, fd: int, changed: builtins.list[str]) -> None:
        self._path = path
        self._os_path = os_path
        self._changed = changed
        try:
            self._size = os.fstat(fd).st_size
            self._file = open(fd, "wb")  # noqa: SIM115 (closed by close() or cancel())
        except BaseException:
            os.close(fd)
            raise
        self._closed = False
        self._committed = False
        self._cancelled = False

    def write(self, data: ReadableBuffer) -> int:
        self._check_writable()
        written = self._file.write(data)
        self._size += written
        return written

    @property
    def size(self) -> int:
        return self._size

    def flush(self) -> None:
        if self._closed:
            raise ValueError(f"the writer of {self._path} is closed")
        self._file.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._file.close()

    def cancel(self) -> None:
        if self._cancelled:
            return
        if self._closed:
            raise ValueError(f"the writer of {self._path} is closed and can no longer cancel")
        self._cancelled = self._closed = True
        # Flushing bytes that are about to be removed can only fail (a full disk, say); the file
        # goes either way.
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._os_path)

    def commit(self, *, fsync: bool = False) -> None:
        self._check_writable()
        self._file.flush()
        if fsync:
            os.fsync(self._file.fileno())
            _sync_dirs(self._changed)
        self._committed = True


__all__ = ["DEFAULT_ROOT_DIRECTORY", "FilesystemDriver"]
