"""Blob GETs with ``storage.filesystem.directio``: with ``on``, a large blob that is not in the
page cache is read past it (``O_DIRECT``), as it was written, and still answered byte for byte,
whole and in ranges with unaligned ends; a cached blob, and any blob with ``auto`` or ``off``,
is sent from the page cache (``sendfile``), which keeps it there for the next readers."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from distblob.server.sendfile import FileSender
from distblob.storage import paths
from support.pagecache import cached_fraction, directio_refused, drop_from_page_cache
from support.server import DistblobServer

pytestmark = pytest.mark.timeout(180)

MIB = 1 << 20
REPO = "direct/reads"


def blob_file(root: Path, digest: str) -> Path:
    return root / paths.blob_data_path(digest).lstrip("/")


@pytest.fixture(scope="module")
def data() -> bytes:
    return os.urandom(72 * MIB + 1_234)


@pytest.mark.parametrize("mode", ["on", "auto", "off"])
def test_cold_blobs_are_read_as_the_mode_says(tmp_path: Path, data: bytes, mode: str) -> None:
    if directio_refused(str(tmp_path)):
        pytest.fail("this test needs a filesystem that takes O_DIRECT (ext4, xfs, tmpfs >= 6.6)")
    root = tmp_path / "root"
    extra = {"storage": {"filesystem": {"directio": mode}}}
    with DistblobServer(root, extra_config=extra) as server, server.client() as client:
        digest = client.push_blob(REPO, data)
        path = blob_file(root, digest)
        drop_from_page_cache(path)
        assert cached_fraction(path) < 0.01

        whole = client.get_blob(REPO, digest)
        assert whole.status == 200 and whole.body == data
        if mode == "on":
            assert cached_fraction(path) < 0.01  # read past it (the probes' few pages aside)
        else:
            assert cached_fraction(path) > 0.99  # sendfile filled the page cache

        # A long range with unaligned ends, and several ranges, from the cold file.
        first, last = 4097, len(data) - 4_099
        ranged = client.get_blob(REPO, digest, {"Range": f"bytes={first}-{last}"})
        assert ranged.status == 206 and ranged.body == data[first : last + 1]
        assert ranged.headers["Content-Range"] == f"bytes {first}-{last}/{len(data)}"
        tail = client.get_blob(REPO, digest, {"Range": f"bytes=-{40 * MIB + 3}"})
        assert tail.status == 206 and tail.body == data[-(40 * MIB + 3) :]

        # Once the blob is in the page cache, it is sent from there whatever the mode.
        with open(path, "rb") as file:
            while file.read(8 * MIB):
                pass
        assert cached_fraction(path) > 0.99
        again = client.get_blob(REPO, digest)
        assert again.status == 200 and again.body == data


def _send_and_receive(path: Path, offset: int, count: int) -> tuple[bytes, BaseException | None]:
    """Send ``count`` bytes of ``path`` from ``offset`` with a direct-reading FileSender over a
    socket pair; what arrived, and what the sender raised."""
    left, right = socket.socketpair()
    received = bytearray()

    def drain() -> None:
        while chunk := right.recv(1 << 20):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    left.setblocking(False)
    sender = FileSender(os.dup(left.fileno()))
    fd = os.open(path, os.O_RDONLY)
    error: BaseException | None = None
    try:
        sender.send(fd, offset, count, direct=True)
    except (EOFError, OSError) as raised:
        error = raised
    finally:
        os.close(fd)
        left.close()
        reader.join()
        right.close()
    return bytes(received), error


def test_the_direct_sender_sends_exactly_the_region(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "blob"
    path.write_bytes(data)
    for offset, count in [(0, len(data)), (4095, 33 * MIB + 3), (len(data) - 40 * MIB, 40 * MIB)]:
        drop_from_page_cache(path)
        body, error = _send_and_receive(path, offset, count)
        assert error is None
        assert body == data[offset : offset + count]
    assert cached_fraction(path) < 0.01


def test_a_file_shorter_than_the_region_ends_the_direct_send_early(
    tmp_path: Path, data: bytes
) -> None:
    """The file holds less than the region (cut short on disk): the sender stops with
    EOFError after sending a prefix of the file, never other bytes."""
    path = tmp_path / "blob"
    path.write_bytes(data[: 50 * MIB + 7])
    drop_from_page_cache(path)
    body, error = _send_and_receive(path, 100, len(data) - 100)
    assert isinstance(error, EOFError)
    assert len(body) < len(data) - 100
    assert body == data[100 : 100 + len(body)]
