"""The storage driver interface, after distribution's ``registry/storage/driver``.

A driver stores byte strings at *driver paths*: absolute, ``/``-separated paths made of
``[A-Za-z0-9._=-]`` components, never ``.`` or ``..`` (see :func:`validate_path`). Directories are
implied: writing a file creates its parents, and a directory stays once created, as on a local
filesystem. The blob store only ever uses these verbs, so any backend that offers them (a local
directory, memory, later an object store) can hold a registry.

As distribution's ``base.Base`` does, :class:`StorageDriver` validates every path and argument in
its public methods and only then calls the driver's ``_``-prefixed implementation, so no driver
can forget a check and every driver rejects the same inputs the same way.

Errors, common to all drivers: :class:`~distblob.errors.InvalidPathError` for a bad path,
:class:`~distblob.errors.PathNotFoundError` when nothing usable is stored there (also when a read
finds a directory where it wants a file, or the reverse),
:class:`~distblob.errors.InvalidOffsetError` for a bad read offset, and
:class:`~distblob.errors.StorageDriverError` when a write conflicts with the tree (a file where a
directory must go, or a directory where a file must go). Failures of the medium itself (disk full,
permissions) surface as the ``OSError`` the operating system raised.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    BinaryIO,
    ClassVar,
    Final,
    Literal,
    ParamSpec,
    Self,
    TypeVar,
    final,
)

from distblob import _observe
from distblob.errors import (
    InvalidOffsetError,
    InvalidPathError,
    PathNotFoundError,
    StorageDriverError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from _typeshed import ReadableBuffer

#: Longest path component, in bytes: Linux's ``NAME_MAX``, enforced for every driver so that a
#: path accepted by one driver is accepted by all.
MAX_COMPONENT_LENGTH: Final = 255

# distribution's PathRegexp plus "=" (upload ids may contain it), with the "." and ".."
# components excluded in the same pass; the component length bound is NAME_MAX.
_PATH: Final = re.compile(r"(?:/(?!\.{1,2}(?:/|\Z))[A-Za-z0-9._=-]{1,255})+")
_COMPONENT: Final = re.compile(r"(?!\.{1,2}\Z)[A-Za-z0-9._=-]{1,255}")

#: ``storage.filesystem.directio``: which writes of an upload go past the page cache.
DirectIO = Literal["auto", "on", "off"]


def validate_path(path: str, *, allow_root: bool = False) -> str:
    """Return ``path`` if it is a valid driver path, else raise ``InvalidPathError``.

    ``allow_root`` also accepts ``/`` itself, which only listing, walking and stat take.
    """
    if not isinstance(path, str):
        raise TypeError(f"a driver path is a str, not {type(path).__name__}")
    if _PATH.fullmatch(path) is None and not (allow_root and path == "/"):
        raise InvalidPathError(path)
    return path


def is_path_component(name: str) -> bool:
    """Whether ``name`` can be one component of a driver path.

    Drivers skip other names when listing, so that files no driver path can name (such as the
    ``lost+found`` of a dedicated volume) never reach a caller.
    """
    return _COMPONENT.fullmatch(name) is not None


def join(parent: str, name: str) -> str:
    """The driver path of ``name`` inside the directory ``parent`` (which may be ``/``)."""
    return f"/{name}" if parent == "/" else f"{parent}/{name}"


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What :meth:`StorageDriver.stat` and :meth:`StorageDriver.walk` report about a path.

    ``size`` is 0 for a directory (as in distribution); ``mod_time`` is seconds since the epoch.
    """

    path: str
    size: int
    mod_time: float
    is_dir: bool


class FileWriter(abc.ABC):
    """A file being written at one driver path (distribution's ``FileWriter``).

    Written bytes are visible to readers after :meth:`flush`, :meth:`commit` or :meth:`close`
    (some drivers show them sooner); nothing is promised to survive a
    crash unless ``commit(fsync=True)`` returned. A writer belongs to one thread at a time. Once
    closed, committed or cancelled it accepts no more writes (``ValueError``, as a closed Python
    file does). Use it as a context manager to be sure it is closed.
    """

    # The life cycle every writer tracks; subclasses set these as they go.
    _path: str
    _closed: bool = False
    _committed: bool = False
    _cancelled: bool = False

    #: Whether :meth:`bind` keeps its value with the bytes. Drivers whose files several processes
    #: may write at once (an object store shared by replicas) do; the others need not, since
    #: their writers of one upload take turns (:mod:`~distblob.storage.uploadlock`).
    binds: ClassVar[bool] = False
    #: What the writer that last saved the file bound to it (read when appending), if anything.
    bound: str | None = None
    #: Whether the bytes readers now see are proven to be the ones this writer appended to and
    #: wrote. An object store assembling a file from parts says so only when it could check the
    #: parts; ``False`` means whoever hashed the bytes on the way must hash what is stored.
    verified: bool = True

    def bind(self, value: str | None) -> None:
        """Keep ``value`` with the bytes written so far, in the same atomic step that saves them
        on :meth:`close` (only where :attr:`binds`): a later appending writer reads it back as
        :attr:`bound`, and only together with exactly these bytes. The stream upload binds its
        hash state this way, so a state is never trusted for bytes it does not describe."""
        return  # kept nowhere by default: see ``binds``

    def abandon(self) -> None:
        """Close without keeping what this writer wrote, where the driver can (an object
        store's pending file stays as it was when the writer opened it); elsewhere
        :meth:`close`. For writers that failed or lost the right to write."""
        self.close()

    def _check_writable(self) -> None:
        if self._cancelled:
            raise ValueError(f"the writer of {self._path} was cancelled")
        if self._closed:
            raise ValueError(f"the writer of {self._path} is closed")
        if self._committed:
            raise ValueError(f"the writer of {self._path} was committed")

    @abc.abstractmethod
    def write(self, data: ReadableBuffer) -> int:
        """Append ``data`` (any contiguous buffer) and return the number of bytes written."""

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Bytes in the file: what was there when appending plus what this writer wrote."""

    @abc.abstractmethod
    def flush(self) -> None:
        """Make every byte written so far visible to readers of the path (not durable)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the file, keeping what was written; closing again does nothing."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Close and remove the file; cancelling again does nothing.

        Raises ``ValueError`` once the writer was closed, because the path may by then hold what
        another writer wrote (distribution refuses this too).
        """

    @abc.abstractmethod
    def commit(self, *, fsync: bool = False) -> None:
        """Flush everything written; with ``fsync``, make it durable before returning.

        Durable means the data, and the file's directory entries if this writer created the file.
        No writes are accepted afterwards; the writer must still be closed.
        """

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _timed(
    driver: str, action: str, call: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs
) -> _R:
    """``call(*args)``, its duration reported as distribution's storage ``action`` when metrics
    are on (:mod:`distblob._observe`)."""
    observer = _observe.observer
    if observer is None:
        return call(*args, **kwargs)
    started = time.perf_counter()
    try:
        return call(*args, **kwargs)
    finally:
        observer.storage_action(driver, action, time.perf_counter() - started)


class StorageDriver(abc.ABC):
    """Stores byte strings at driver paths; safe to use from many threads at once.

    The public methods validate their arguments and delegate to the ``_``-prefixed methods that
    each driver implements; those receive valid paths only.
    """

    #: The driver's name, as in distribution's configuration (``filesystem``, ``inmemory``).
    name: ClassVar[str] = ""
    #: Whether a directory stays when its last file goes (an object store's does not).
    keeps_empty_directories: ClassVar[bool] = True
    #: Whether writes that conflict with the tree (a file where a directory is, or below a file)
    #: are refused; an object store has no tree to check against.
    checks_tree: ClassVar[bool] = True
    #: Whether :meth:`FileWriter.close` makes the written bytes visible to readers. When not
    #: (an object store's multipart upload), they show after ``flush`` or ``commit`` only, and
    #: until then ``stat`` reports the file and a writer opened with ``append`` continues it.
    visible_on_close: ClassVar[bool] = True
    #: Whether other processes may write the same files at once with no lock between them (an
    #: object store several replicas share). Then a write that fails may be another writer's
    #: doing, and what only saves work (a hash state, which is trusted only where the pending
    #: file binds it) is skipped when it cannot be written rather than failing the request.
    shared_by_replicas: ClassVar[bool] = False
    #: Which writes of an upload's local file may go past the page cache (``O_DIRECT``; see
    #: :class:`distblob._native.UploadFile`): ``auto``, ``on`` or ``off``. Only a driver with
    #: local files has a choice (``storage.filesystem.directio``).
    directio: DirectIO = "off"

    @final
    def get_content(self, path: str) -> bytes:
        """The whole file at ``path``; ``PathNotFoundError`` if missing or a directory."""
        return _timed(self.name, "GetContent", self._get_content, validate_path(path))

    @final
    def put_content(self, path: str, data: ReadableBuffer, *, fsync: bool = False) -> None:
        """Store ``data`` at ``path`` atomically, creating parent directories.

        Readers see either the old or the new content, never a mix (the data is written to
        ``<path>.<uuid4>.tmp`` and renamed, as distribution does). With ``fsync`` the content and
        every directory entry it needed (including new parent directories) are durable on return.
        """
        _timed(self.name, "PutContent", self._put_content, validate_path(path), data, fsync=fsync)

    @final
    def reader(self, path: str, offset: int = 0) -> BinaryIO:
        """A seekable binary reader of the file at ``path``, positioned at ``offset``.

        ``PathNotFoundError`` if there is no file; ``InvalidOffsetError`` if ``offset`` is
        negative or past the end (the end itself is allowed and reads nothing).
        """
        validate_path(path)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"an offset is an int, not {type(offset).__name__}")
        if offset < 0:
            raise InvalidOffsetError(path, offset)
        return self._reader(path, offset)

    @final
    def writer(self, path: str, *, append: bool = False) -> FileWriter:
        """A writer of the file at ``path``.

        Without ``append`` the file is created (with its parents) or truncated; with ``append``
        it must exist (``PathNotFoundError``) and writes go after its current content.
        """
        return self._writer(validate_path(path), append=append)

    @final
    def stat(self, path: str) -> FileInfo:
        """What is at ``path`` (``/`` allowed); ``PathNotFoundError`` if nothing is."""
        return _timed(self.name, "Stat", self._stat, validate_path(path, allow_root=True))

    @final
    def list(self, path: str) -> builtins.list[str]:
        """The full paths of the direct children of the directory ``path``, sorted.

        ``PathNotFoundError`` if there is no directory at ``path``.
        """
        return _timed(self.name, "List", self._list, validate_path(path, allow_root=True))

    @final
    def move(self, src: str, dst: str, *, fsync: bool = False) -> None:
        """Rename ``src`` to ``dst`` atomically, creating ``dst``'s parents and replacing a file.

        ``PathNotFoundError`` if ``src`` is missing; ``StorageDriverError`` if ``dst`` is a
        directory or lies inside ``src``. With ``fsync`` the rename is durable on return: the
        directory holding ``dst`` and every directory created on the way are synced.
        """
        validate_path(src)
        validate_path(dst)
        if dst.startswith(src + "/"):
            raise StorageDriverError(f"cannot move {src} into itself ({dst})")
        _timed(self.name, "Move", self._move, src, dst, fsync=fsync)

    @final
    def delete(self, path: str) -> None:
        """Remove the file or the whole directory tree at ``path``; ``PathNotFoundError``."""
        _timed(self.name, "Delete", self._delete, validate_path(path))

    @final
    def delete_files(self, paths: Sequence[str]) -> None:
        """Remove many files at once, each with its directory if that is left empty (on a
        filesystem; an object store has no empty directories). Missing files are skipped.

        Garbage collection's bulk delete: an object store removes up to 1,000 keys per request
        (``DeleteObjects``) instead of listing and deleting each file's directory.
        """
        checked = [validate_path(path) for path in paths]
        if checked:
            _timed(self.name, "DeleteFiles", self._delete_files, checked)

    def _delete_files(self, paths: builtins.list[str]) -> None:
        for path in paths:
            try:
                self._delete(path)
            except PathNotFoundError:
                continue
            parent = path.rsplit("/", 1)[0]
            with contextlib.suppress(PathNotFoundError):
                if parent and not self._list(parent):
                    self._delete(parent)

    @final
    def walk(self, path: str) -> Iterator[FileInfo]:
        """Every entry below the directory ``path`` (not ``path`` itself), depth first.

        Children are visited in sorted order, each directory right before its contents, as
        distribution's ``WalkFallback`` does. ``PathNotFoundError`` (raised by this call, not by
        the first ``next``) if there is no directory at ``path``; entries removed while walking
        are skipped.
        """
        return self._walk(validate_path(path, allow_root=True))

    @final
    def redirect_url(self, path: str, method: str = "GET") -> str | None:
        """A URL from which a client can ``method`` the file directly, or ``None``.

        Object stores offer signed URLs here; local drivers have none.
        """
        return _timed(self.name, "URLFor", self._redirect_url, validate_path(path), method)

    @final
    def local_path(self, path: str) -> str | None:
        """The OS path of ``path`` when the driver is a local filesystem, else ``None``.

        The file need not exist, and its parent directories are not created. The native engine
        writes upload files through it directly.
        """
        return self._local_path(validate_path(path))

    @final
    def sync(self) -> None:
        """Make everything written so far durable at once."""
        self._sync()

    @final
    def abort_orphan_uploads(self, path: str, older_than: float) -> int:
        """Drop what unfinished writers below directory ``path`` left behind that no file names,
        if started before ``older_than`` (seconds since the epoch); how many were dropped.

        An object store keeps (and bills) the parts of a multipart upload until it is aborted:
        writers that lost a race on a file, or were killed before saving their state, leave
        such uploads. Upload purging calls this. Other drivers leave nothing of the kind.
        """
        return self._abort_orphan_uploads(validate_path(path, allow_root=True), older_than)

    def _abort_orphan_uploads(self, path: str, older_than: float) -> int:
        return 0

    def deferred_sync(self) -> contextlib.AbstractContextManager[None]:
        """A block whose ``fsync=True`` writes (by this thread) become durable together at its
        end, rather than one by one.

        On return from the block every such write is as durable as if synced on its own; none
        is promised durable before that, nor in what order they reach the disk. A crash in the
        block leaves a replaced file with its old content or its new one, and a new file absent,
        complete, or (on some filesystems) empty. A filesystem
        syncs the files and directories in parallel, so a sequence of small writes waits for
        about one device flush instead of one each. Blocks nest (the outermost one syncs). The
        default, for drivers whose writes are durable when they return, does nothing.
        """
        return contextlib.nullcontext()

    # -- what a driver implements ------------------------------------------------------------

    @abc.abstractmethod
    def _get_content(self, path: str) -> bytes: ...

    @abc.abstractmethod
    def _put_content(self, path: str, data: ReadableBuffer, *, fsync: bool) -> None: ...

    @abc.abstractmethod
    def _reader(self, path: str, offset: int) -> BinaryIO: ...

    @abc.abstractmethod
    def _writer(self, path: str, *, append: bool) -> FileWriter: ...

    @abc.abstractmethod
    def _stat(self, path: str) -> FileInfo: ...

    @abc.abstractmethod
    def _list(self, path: str) -> builtins.list[str]: ...

    @abc.abstractmethod
    def _move(self, src: str, dst: str, *, fsync: bool) -> None: ...

    @abc.abstractmethod
    def _delete(self, path: str) -> None: ...

    @abc.abstractmethod
    def _walk(self, path: str) -> Iterator[FileInfo]: ...

    @abc.abstractmethod
    def _sync(self) -> None: ...

    def _redirect_url(self, path: str, method: str) -> str | None:
        return None

    def _local_path(self, path: str) -> str | None:
        return None


__all__ = [
    "MAX_COMPONENT_LENGTH",
    "DirectIO",
    "FileInfo",
    "FileWriter",
    "StorageDriver",
    "is_path_component",
    "join",
    "validate_path",
]
