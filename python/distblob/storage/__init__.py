"""Where blobs live: distribution's storage layout over pluggable storage drivers.

:mod:`distblob.storage.paths` names every object of the layout (one function per path kind) and
:mod:`distblob.storage.driver` holds the drivers that store bytes at those paths.
"""

from __future__ import annotations

from distblob.storage.driver import (
    FileInfo,
    FilesystemDriver,
    FileWriter,
    InMemoryDriver,
    StorageDriver,
)

__all__ = ["FileInfo", "FileWriter", "FilesystemDriver", "InMemoryDriver", "StorageDriver"]
