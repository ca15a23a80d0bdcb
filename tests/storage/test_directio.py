"""``storage.filesystem.directio``: large uploads written past the page cache (``O_DIRECT``).

What is stored, its digest and the commit are the same in every mode; what differs is whether
the upload's pages are left in the page cache, which is what these tests look at from outside
(``mincore`` on the committed blob) with a real server and the store's own API.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from distblob import Descriptor, Digest, _native
from distblob.config import ConfigError, parse_config
from distblob.registry import Registry
from distblob.storage import paths
from distblob.storage.driver import FilesystemDriver
from support.pagecache import cached_fraction, directio_refused
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(180)

MIB = 1 << 20


def blob_file(root: Path, digest: str) -> Path:
    return root / paths.blob_data_path(digest).lstrip("/")


def test_directio_is_read_as_auto_on_or_off(tmp_path: Path) -> None:
    for given, expected in [
        (None, "auto"),
        ("auto", "auto"),
        ("on", "on"),
        ("OFF", "off"),
        (True, "on"),  # YAML's unquoted on / true / yes
        (False, "off"),
    ]:
        parameters: dict[str, object] = {"rootdirectory": str(tmp_path)}
        if given is not None:
            parameters["directio"] = given
        assert FilesystemDriver.from_parameters(parameters).directio == expected
    doc = {"storage": {"filesystem": {"rootdirectory": str(tmp_path), "directio": "sometimes"}}}
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert info.value.key == "storage.filesystem.directio"


@pytest.fixture
def direct_ok(tmp_path: Path) -> bool:
    """Whether this machine's temporary filesystem takes O_DIRECT (asked of the kernel)."""
    return not directio_refused(str(tmp_path))


def test_the_probe_agrees_with_the_native_writer(tmp_path: Path, direct_ok: bool) -> None:
    upload = _native.UploadFile(str(tmp_path / "data"), create=True, direct="on")
    try:
        assert upload.direct == direct_ok
    finally:
        upload.close()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # the probe left nothing
    with pytest.raises(ValueError, match="direct is 'auto', 'on' or 'off'"):
        _native.UploadFile(str(tmp_path / "other"), create=True, direct="always")


@pytest.mark.parametrize("mode", ["on", "auto", "off"])
def test_store_api_uploads_leave_the_page_cache_as_the_mode_says(
    tmp_path: Path, direct_ok: bool, mode: str
) -> None:
    data = os.urandom(48 * MIB + 12_345)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    driver = FilesystemDriver(tmp_path / "root", directio=mode)  # type: ignore[arg-type]
    repo = Registry(driver).repository("direct/io")
    writer = repo.blobs.create()
    view = memoryview(data)
    for at in range(0, len(data), MIB + 7):  # unaligned pieces, as a client's PATCHes are
        writer.write(view[at : at + MIB + 7])
    descriptor = writer.commit(Descriptor(digest=Digest(digest)))
    assert str(descriptor.digest) == digest and descriptor.size == len(data)
    path = blob_file(tmp_path / "root", digest)
    cached = cached_fraction(path)
    if mode == "off" or not direct_ok:
        assert cached > 0.99
    elif mode == "on":
        assert cached < 0.05  # the odd head and tail pages of each write
    else:  # the first 32 MiB through the page cache, the rest past it
        first = 32 * MIB / len(data)
        assert first - 0.02 < cached < first + 0.05
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest.split(":")[1]
    assert repo.blobs.stat(Digest(digest)).size == len(data)


@pytest.mark.parametrize(
    ("extra", "chunks", "expect_direct"),
    [
        ({}, None, "auto"),  # the default: a monolithic PUT of a large blob
        ({"storage": {"filesystem": {"directio": "on"}}}, 5, "on"),  # PATCHes
        ({"storage": {"filesystem": {"directio": False}}}, None, "off"),  # YAML's off
    ],
    ids=["default-auto", "on-patches", "off"],
)
def test_served_uploads_follow_the_config(
    tmp_path: Path,
    direct_ok: bool,
    extra: dict[str, object],
    chunks: int | None,
    expect_direct: str,
) -> None:
    data = os.urandom(64 * MIB + 4_321)
    root = tmp_path / "root"
    with DistblobServer(root, extra_config=extra) as server, server.client() as client:
        digest = client.push_blob("direct/served", data, chunks)
        path = blob_file(root, digest)
        cached = cached_fraction(path)
        if expect_direct == "off" or not direct_ok:
            assert cached > 0.99
        elif expect_direct == "on":
            assert cached < 0.05
        else:
            first = 32 * MIB / len(data)
            assert first - 0.02 < cached < first + 0.05
        # The first GET reads what the disk holds: the same bytes.
        answer = client.get_blob("direct/served", digest)
        assert answer.status == 200 and answer.body == data
