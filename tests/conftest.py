"""Shared fixtures: paths to the ground-truth data the real Go registry produced, and the
registries of the blob store conformance suite (one per engine and driver)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import distblob
import distblob.storage
from distblob.storage.driver.s3 import MIN_CHUNK_SIZE, S3Driver
from support import gofixtures
from support.s3server import RcloneS3

#: What the real Go registry wrote (see the README there, and ``support.gofixtures``).
GO_FIXTURES = gofixtures.FIXTURES


@pytest.fixture(scope="session")
def go_fixtures() -> pathlib.Path:
    assert GO_FIXTURES.is_dir(), f"the Go registry fixtures are missing at {GO_FIXTURES}"
    return GO_FIXTURES


@pytest.fixture(scope="session")
def go_upload(go_fixtures: pathlib.Path) -> dict[str, Any]:
    """The fixture upload's description, with its data regenerated as ``data``."""
    spec: dict[str, Any] = json.loads((go_fixtures / "upload.json").read_text())
    spec["data"] = gofixtures.fixture_data(spec["seed_prefix"], spec["length"])
    return spec


# -- a real S3-compatible server --------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[RcloneS3]:
    """``rclone serve s3`` on loopback, for the whole session (each test takes its own bucket)."""
    with RcloneS3() as server:
        yield server


@pytest.fixture
def s3_driver(s3_server: RcloneS3) -> S3Driver:
    """An S3 driver over a fresh bucket, with S3's smallest part size so multipart shows soon."""
    bucket = s3_server.new_bucket()
    return S3Driver.from_parameters(s3_server.parameters(bucket, chunksize=MIN_CHUNK_SIZE))


# -- the blob store conformance suite: every engine over every driver --------------------------

#: The engines and drivers every blob store test runs against (distribution's ``testsuites``).
BLOB_ENGINES = ("native", "python")
BLOB_DRIVERS = ("filesystem", "inmemory", "s3")


@pytest.fixture(
    # S3 runs with the native engine only: over S3 both engines share one byte path
    # (StreamUpload), and what the python engine does differently there (resuming without a
    # saved state) has its own test in test_s3_driver.py. It keeps the suite's time down.
    params=[
        (engine, driver)
        for engine in BLOB_ENGINES
        for driver in BLOB_DRIVERS
        if (engine, driver) != ("python", "s3")
    ],
    ids=lambda combination: "-".join(combination),
)
def blob_combination(request: pytest.FixtureRequest) -> tuple[str, str]:
    """``(engine, driver)`` names, one test run per combination."""
    combination: tuple[str, str] = request.param
    return combination


@pytest.fixture
def blob_driver(
    blob_combination: tuple[str, str], tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> distblob.storage.StorageDriver:
    """A fresh storage driver of the combination's kind (a directory ``tmp_path/root``, or a
    bucket of its own on the session's S3 server)."""
    if blob_combination[1] == "filesystem":
        return distblob.storage.FilesystemDriver(tmp_path / "root")
    if blob_combination[1] == "s3":
        s3: S3Driver = request.getfixturevalue("s3_driver")
        return s3
    return distblob.storage.InMemoryDriver()


@pytest.fixture
def make_registry(
    blob_combination: tuple[str, str], blob_driver: distblob.storage.StorageDriver
) -> Callable[..., distblob.Registry]:
    """Build a ``Registry`` over the test's driver with the combination's engine.

    Every registry it builds shares the one driver, so a second one sees what the first stored
    (a restart, or the same storage with other options).
    """

    def make(
        *,
        delete_enabled: bool = False,
        fsync: bool = True,
        redirect: bool = False,
        **options: Any,
    ) -> distblob.Registry:
        # No redirects unless a test asks: the suite checks the bytes the store itself serves
        # (an S3 driver would otherwise answer every GET with its presigned URL).
        return distblob.Registry(
            blob_driver,
            engine=blob_combination[0],
            delete_enabled=delete_enabled,
            fsync=fsync,
            redirect=redirect,
            **options,
        )

    return make


@pytest.fixture
def registry(make_registry: Callable[..., distblob.Registry]) -> distblob.Registry:
    """A registry with distribution's defaults: deletes disabled, durable writes."""
    return make_registry()


@pytest.fixture
def repo(registry: distblob.Registry) -> distblob.Repository:
    """The repository ``library/test`` of :func:`registry`."""
    return registry.repository("library/test")
