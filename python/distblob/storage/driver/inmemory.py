"""A storage driver that keeps everything in memory (distribution's ``inmemory`` driver).

For tests and throwaway stores: nothing is durable, so ``fsync`` and :meth:`~InMemoryDriver.sync`
do nothing. The tree is a real tree of directories and files, not a flat dict of paths, so that it
behaves like a filesystem in every case the conformance suite checks: a directory stays when its
last file is removed, a file cannot sit where a directory is, and so on.

One lock guards the whole tree. Every operation holds it only for a dict lookup or a copy, so
threads rarely wait; readers get a snapshot of the file taken when they were opened.
"""

from __future__ import annotations

import builtins
import io
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from distblob.errors import (
    DriverParameterError,
    InvalidOffsetError,
    PathNotFoundError,
    StorageDriverError,
)
from distblob.storage.driver.base import FileInfo, FileWriter, StorageDriver, join

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from _typeshed import ReadableBuffer


@dataclass(eq=False, slots=True)
class _File:
    data: bytearray
    mod_time: float = field(default_factory=time.time)


@dataclass(eq=False, slots=True)
class _Dir:
    children: dict[str, _File | _Dir] = field(default_factory=dict)
    mod_time: float = field(default_factory=time.time)


def _split(path: str) -> tuple[builtins.list[str], str]:
    """The parent components and the last component of a path other than ``/``."""
    *parents, name = path[1:].split("/")
    return parents, name


class InMemoryDriver(StorageDriver):
    """Stores everything in a tree of dicts behind one lock."""

    name = "inmemory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._root = _Dir()

    @classmethod
    def check_parameters(cls, parameters: Mapping[str, object]) -> dict[str, Any]:
        """The constructor's keyword arguments for distribution's ``storage.inmemory``
        parameters: there are none, so any key raises
        :class:`~distblob.errors.DriverParameterError` naming it."""
        for key in parameters:
            raise DriverParameterError(str(key), "unknown key")
        return {}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, object]) -> InMemoryDriver:
        """An empty driver (the factory's ``inmemory`` entry); ``parameters`` must be empty."""
        return cls(**cls.check_parameters(parameters))

    def __repr__(self) -> str:
        return "InMemoryDriver()"

    # -- tree helpers; the caller holds the lock ------------------------------------------------

    def _find(self, path: str) -> _File | _Dir | None:
        node: _File | _Dir = self._root
        if path == "/":
            return node
        for name in path[1:].split("/"):
            if not isinstance(node, _Dir):
                return None
            child = node.children.get(name)
            if child is None:
                return None
            node = child
        return node

    def _make_parent(self, path: str) -> tuple[_Dir, str]:
        """The directory that holds ``path`` (created as needed) and ``path``'s last name."""
        parents, name = _split(path)
        directory = self._root
        for component in parents:
            child = directory.children.get(component)
            if child is None:
                child = _Dir()
                directory.children[component] = child
                directory.mod_time = child.mod_time
            elif not isinstance(child, _Dir):
                raise StorageDriverError(f"cannot write {path}: a parent is not a directory")
            directory = child
        return directory, name

    def _place_file(self, path: str, node: _File) -> None:
        """Put ``node`` at ``path``, replacing a file but never a directory."""
        parent, name = self._make_parent(path)
        if isinstance(parent.children.get(name), _Dir):
            raise StorageDriverError(f"cannot write {path}: it is a directory")
        parent.children[name] = node
        parent.mod_time = node.mod_time

    def _file(self, path: str) -> _File:
        node = self._find(path)
        if not isinstance(node, _File):
            raise PathNotFoundError(path)
        return node

    def _directory(self, path: str) -> _Dir:
        node = self._find(path)
        if not isinstance(node, _Dir):
            raise PathNotFoundError(path)
        return node

    def _remove(self, path: str) -> _File | _Dir:
        """Detach the node at ``path`` from its parent and return it."""
        parents, name = _split(path)
        parent = self._find("/" + "/".join(parents)) if parents else self._root
        if not isinstance(parent, _Dir) or name not in parent.children:
            raise PathNotFoundError(path)
        parent.mod_time = time.time()
        return parent.children.pop(name)

    # -- the driver ---------------------------------------------------------------------------

    def _get_content(self, path: str) -> bytes:
        with self._lock:
            return bytes(self._file(path).data)

    def _put_content(self, path: str, data: ReadableBuffer, *, fsync: bool) -> None:
        # Copy before taking the lock: the copy is the slow part and needs no protection.
        node = _File(bytearray(data))
        with self._lock:
            self._place_file(path, node)

    def _reader(self, path: str, offset: int) -> BinaryIO:
        with self._lock:
            data = bytes(self._file(path).data)
        if offset > len(data):
            raise InvalidOffsetError(path, offset)
        reader = io.BytesIO(data)
        reader.seek(offset)
        return reader

    def _writer(self, path: str, *, append: bool) -> FileWriter:
        with self._lock:
            if append:
                node = self._file(path)
            else:
                node = _File(bytearray())
                self._place_file(path, node)
            return _InMemoryFileWriter(self, path, node)

    def _stat(self, path: str) -> FileInfo:
        with self._lock:
            node = self._find(path)
            if node is None:
                raise PathNotFoundError(path)
            if isinstance(node, _Dir):
                return FileInfo(path, 0, node.mod_time, True)
            return FileInfo(path, len(node.data), node.mod_time, False)

    def _list(self, path: str) -> builtins.list[str]:
        with self._lock:
            names = sorted(self._directory(path).children)
        return [join(path, name) for name in names]

    def _move(self, src: str, dst: str, *, fsync: bool) -> None:
        with self._lock:
            source = self._find(src)
            if source is None:
                raise PathNotFoundError(src)
            if src == dst:
                return
            target = self._find(dst)
            if isinstance(target, _Dir):
                raise StorageDriverError(
                    f"cannot move {src} to {dst}: the destination is a directory"
                )
            if isinstance(source, _Dir) and target is not None:
                raise StorageDriverError(
                    f"cannot move the directory {src} to {dst}: the destination is a file"
                )
            parent, name = self._make_parent(dst)
            self._remove(src)
            parent.children[name] = source
            parent.mod_time = time.time()

    def _delete(self, path: str) -> None:
        with self._lock:
            self._remove(path)

    def _walk(self, path: str) -> Iterator[FileInfo]:
        # Snapshot the whole subtree under the lock, so that the caller can take its time
        # iterating without holding the lock or seeing a half-changed tree.
        entries: builtins.list[FileInfo] = []

        def visit(directory: _Dir, prefix: str) -> None:
            for name in sorted(directory.children):
                child = directory.children[name]
                child_path = join(prefix, name)
                if isinstance(child, _Dir):
                    entries.append(FileInfo(child_path, 0, child.mod_time, True))
                    visit(child, child_path)
                else:
                    entries.append(FileInfo(child_path, len(child.data), child.mod_time, False))

        with self._lock:
            visit(self._directory(path), path)
        return iter(entries)

    def _sync(self) -> None:
        pass  # Nothing here is durable, and nothing can be made so.


class _InMemoryFileWriter(FileWriter):
    """Appends to the file node it was opened on, visible to readers at once.

    Like an open file descriptor, it keeps writing to that node even if the path is deleted or
    replaced meanwhile; such writes are simply lost.
    """

    def __init__(self, driver: InMemoryDriver, path: str, node: _File) -> None:
        self._driver = driver
        self._path = path
        self._node = node
        self._size = len(node.data)
        self._closed = False
        self._committed = False
        self._cancelled = False

    def write(self, data: ReadableBuffer) -> int:
        self._check_writable()
        view = memoryview(data)
        with self._driver._lock:
            self._node.data += view
            self._node.mod_time = time.time()
        self._size += view.nbytes
        return view.nbytes

    @property
    def size(self) -> int:
        return self._size

    def flush(self) -> None:
        # The bytes are in the tree already; only misuse is left to report.
        if self._closed:
            raise ValueError(f"the writer of {self._path} is closed")

    def close(self) -> None:
        self._closed = True

    def cancel(self) -> None:
        if self._cancelled:
            return
        if self._closed:
            raise ValueError(f"the writer of {self._path} is closed and can no longer cancel")
        self._cancelled = self._closed = True
        with self._driver._lock:
            if isinstance(self._driver._find(self._path), _File):
                self._driver._remove(self._path)

    def commit(self, *, fsync: bool = False) -> None:
        self._check_writable()
        self._committed = True


__all__ = ["InMemoryDriver"]
