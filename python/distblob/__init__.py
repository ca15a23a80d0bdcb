"""distblob: content-addressed blob storage the way a container registry does it.

The blob interfaces, wire formats, errors and on-disk layout of the Go registry *distribution*,
in Python, with the hashing and the write path in Rust.
"""

from __future__ import annotations

from distblob.descriptor import Descriptor
from distblob.digest import Digest, digester
from distblob.hashing import Blake3, Sha256, Sha384, Sha512
from distblob.registry import Registry, Repository
from distblob.storage.writer import BlobWriter

__version__ = "0.1.0"

__all__ = [
    "Blake3",
    "BlobWriter",
    "Descriptor",
    "Digest",
    "Registry",
    "Repository",
    "Sha256",
    "Sha384",
    "Sha512",
    "__version__",
    "digester",
]
