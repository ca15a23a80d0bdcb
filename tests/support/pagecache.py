"""Whether a file's pages are in the page cache, asked of the kernel (``mincore``), and whether a
filesystem takes ``O_DIRECT``."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import mmap
import os
import uuid
from pathlib import Path

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def cached_fraction(path: Path) -> float:
    """The share of ``path``'s pages in the page cache (``mincore`` on a map of it; mapping
    reads nothing)."""
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    fd = os.open(path, os.O_RDONLY)
    try:
        address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap")
        try:
            vector = (ctypes.c_ubyte * pages)()
            if _libc.mincore(address, size, vector) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
            return sum(byte & 1 for byte in vector) / pages
        finally:
            _libc.munmap(address, size)
    finally:
        os.close(fd)


def drop_from_page_cache(path: Path) -> None:
    """Write back and drop ``path``'s pages from the page cache (``POSIX_FADV_DONTNEED``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def directio_refused(directory: str) -> bool:
    """Whether the filesystem of ``directory`` refuses ``O_DIRECT`` (tmpfs before Linux 6.6,
    some FUSE and network filesystems): a file opened with it there cannot be created, or an
    aligned write to it fails with ``EINVAL``. Leaves nothing behind."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return True
    path = os.path.join(directory, f".directio-probe-{uuid.uuid4()}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | flag, 0o600)
    except OSError as error:
        return error.errno == errno.EINVAL
    try:
        block = mmap.mmap(-1, mmap.PAGESIZE)  # page-aligned, as O_DIRECT wants
        try:
            os.pwrite(fd, block, 0)
        except OSError as error:
            return error.errno == errno.EINVAL
        finally:
            block.close()
        return False
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
