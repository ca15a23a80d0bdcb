"""Storage drivers: the small set of path operations the blob store is built on.

:class:`StorageDriver` is the interface (distribution's ``storagedriver.StorageDriver``);
:class:`FilesystemDriver` stores under a local directory and :class:`InMemoryDriver` in a dict,
for tests and for caches that need no durability; :class:`S3Driver` stores in an S3 bucket.
:mod:`distblob.storage.driver.factory` builds them by name from a config's parameters.
"""

from __future__ import annotations

from distblob.storage.driver.base import (
    FileInfo,
    FileWriter,
    StorageDriver,
    validate_path,
)
from distblob.storage.driver.filesystem import FilesystemDriver
from distblob.storage.driver.inmemory import InMemoryDriver
from distblob.storage.driver.s3 import S3Driver

__all__ = [
    "FileInfo",
    "FileWriter",
    "FilesystemDriver",
    "InMemoryDriver",
    "S3Driver",
    "StorageDriver",
    "validate_path",
]
