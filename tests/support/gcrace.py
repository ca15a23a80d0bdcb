"""Forcing an online garbage collection and a server's operation into a chosen order, for the
tests of :mod:`distblob.storage.online` on every driver (``tests/storage/test_online_gc.py``,
``tests/s3/test_s3_online_gc.py``).

:func:`in_sweep` holds a collection at its first batch, either before it lists ``touched`` (so
it sees the server's touch and spares the digest) or right after (so the server finds its
digest in ``sweeping``, waits for the batch, and finds the blob gone).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from distblob import Descriptor, Digest, Registry, Repository
from distblob.storage import collection, online
from distblob.storage.online import Options, collect

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OLD = time.time() - 7 * 86400  # a week ago: older than any grace period used here


def age(root: Path, *parts: str) -> None:
    """Make every file under ``root/parts`` a week old."""
    top = root.joinpath(*parts)
    for directory, _, files in os.walk(top):
        for name in files:
            os.utime(os.path.join(directory, name), (OLD, OLD))


def manifest(config: Descriptor, *layers: Descriptor) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": json.loads(config.to_json()),
            "layers": [json.loads(layer.to_json()) for layer in layers],
        }
    ).encode()


def push_image(repo: Repository, tag: str, seed: str) -> tuple[Digest, set[Digest]]:
    config = repo.blobs.put(json.dumps({"seed": seed}).encode(), "application/json")
    layer = repo.blobs.put(f"layer {seed}".encode() * 50)
    digest = repo.manifests.put(tag, manifest(config, layer)).digest
    assert digest is not None and config.digest is not None and layer.digest is not None
    return digest, {config.digest, layer.digest}


def options(**changes: object) -> Options:
    base = Options(online=True, grace=3600, settle=0.0, lease=5.0, batch=4, yield_cpu=False)
    for key, value in changes.items():
        setattr(base, key, value)
    return base


class PausedSweep:
    """Holds a collection right after it listed ``touched`` for its first batch, until
    released: the window in which a server's touch is missed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.listed = threading.Event()
        self.go = threading.Event()
        real = collection.list_touched

        def list_touched(driver: object, generation: int) -> set[Digest]:
            touched = real(driver, generation)  # type: ignore[arg-type]
            if not self.listed.is_set():
                self.listed.set()
                assert self.go.wait(10)
            return touched

        monkeypatch.setattr(online, "list_touched", list_touched)


def run_collection(registry: Registry, opts: Options) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(collect(registry, opts)[1])
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def in_sweep(
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    server_op: Callable[[], object],
    *,
    touch_first: bool,
    opts: Options | None = None,
) -> tuple[object, online.Summary]:
    """Run ``server_op`` against a collection of ``registry`` (the same storage, another
    replica's registry or this one) whose first batch holds the garbage, with the
    server's touch landing after the collection listed touches (``touch_first=False``: the
    server waits for the batch) or before (the collection spares it)."""
    opts = opts or options(manifests_only=True)
    if touch_first:
        # The collection sees the touch: hold it before its listing instead.
        listed = threading.Event()
        go = threading.Event()
        real = collection.list_touched

        def list_touched(driver: object, generation: int) -> set[Digest]:
            if not listed.is_set():
                listed.set()
                assert go.wait(10)
            return real(driver, generation)  # type: ignore[arg-type]

        monkeypatch.setattr(online, "list_touched", list_touched)
        real_read = collection.read_sweeping
        real_touched_path = collection.touched_path
        touching = threading.Event()

        def touched_path(generation: int, digest: Digest) -> str:
            touching.set()
            return real_touched_path(generation, digest)

        def read_sweeping(driver: object, generation: int) -> set[str]:
            if touching.is_set():
                go.set()  # every touch of the server is in: now the collection lists them
            return real_read(driver, generation)  # type: ignore[arg-type]

        monkeypatch.setattr(collection, "touched_path", touched_path)
        monkeypatch.setattr(collection, "read_sweeping", read_sweeping)
        thread, outcome = run_collection(registry, opts)
        assert listed.wait(10)
        try:
            result: object = server_op()
        except Exception as exc:
            result = exc
        assert go.is_set()  # the server did touch (and so waited for the batch)
    else:
        paused = PausedSweep(monkeypatch)
        thread, outcome = run_collection(registry, opts)
        assert paused.listed.wait(10)
        # The server's op waits on the batch: let the collection go on while it waits.
        result = _call(server_op, paused.go, delay=0.3)
    thread.join(10)
    assert not thread.is_alive()
    summary = outcome[0]
    assert isinstance(summary, online.Summary), outcome
    # Spared when the collection saw the touch; deleted (and then repaired or refused) else.
    if touch_first:
        assert summary.spared >= 1
    else:
        assert summary.blobs >= 1 and summary.spared == 0
    return result, summary


def _call(op: Callable[[], object], release: threading.Event, *, delay: float) -> object:
    timer = threading.Timer(delay, release.set)
    timer.start()
    try:
        return op()
    except Exception as exc:
        return exc
    finally:
        timer.join()
