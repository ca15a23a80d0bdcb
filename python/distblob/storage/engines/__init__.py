"""The byte path of an upload, in two interchangeable engines.

An engine only moves and hashes bytes: it opens an upload's data file, writes client buffers into
it while hashing them, reads back what the hash does not cover, hashes stored objects and writes
small objects atomically. Everything else (ids, states, commit rules, layout) is shared code in
:mod:`distblob.storage.writer` and the blob stores, so the two engines are compared on the bytes
alone.

- ``native`` (default): the Rust core. On a driver backed by a local filesystem, one GIL-free
  call per write does ``pwrite`` and hashing (overlapped on two cores) with no copy, and starts
  writeback early for durable uploads; elsewhere the native hashers run over the driver's writer.
- ``python``: the reference: ``hashlib`` (and the ``blake3`` package for BLAKE3) over plain file
  I/O. It cannot restore a saved hash state, so it rehashes the data when an upload resumes.
"""

from __future__ import annotations

from distblob.storage.engines.base import Engine, PutFile, UploadIO
from distblob.storage.engines.native import NativeEngine
from distblob.storage.engines.python import PythonEngine

ENGINES: dict[str, type[Engine]] = {"native": NativeEngine, "python": PythonEngine}


def get_engine(name: str) -> Engine:
    """The engine called ``name`` (``ValueError`` for an unknown one)."""
    try:
        return ENGINES[name]()
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; choose from {sorted(ENGINES)}") from None


__all__ = [
    "ENGINES",
    "Engine",
    "NativeEngine",
    "PutFile",
    "PythonEngine",
    "UploadIO",
    "get_engine",
]
