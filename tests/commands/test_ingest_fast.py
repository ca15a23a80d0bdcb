"""The native ingest path: a whole file stored in one call (``_native.put_blob_fd``: kernel copy
into an unnamed file, hashed as stored, then linked), and ``UploadFile.read_from_fd``.

What must hold whatever the source does: the digest is of the bytes stored, a source whose size
changes while it is read is reported and not stored, and a failed or killed run stores nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest

from distblob import Registry, _native
from distblob.commands import ingest, main
from distblob.descriptor import Descriptor
from distblob.digest import Digest
from distblob.errors import BlobDigestUnsupportedError, BlobUnknownError
from distblob.storage import paths

#: The native copy works in chunks of this size: sizes around it are the interesting ones.
CHUNK = 4 << 20
SIZES = [0, 1, 4095, 4096, 1 << 20, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 12_345]


def templates(root: pathlib.Path, algorithm: str = "sha256") -> tuple[str, str]:
    local = str(root)
    return (
        local + paths.blob_data_path_template(algorithm),
        local + paths.layer_link_path_template("test/app", algorithm),
    )


def expected_hex(data: bytes, algorithm: str) -> str:
    return Digest.from_bytes(data, algorithm).encoded


def blob_files(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "blobs" in p.parts)


def check_store(root: pathlib.Path) -> None:
    """Every stored blob's content matches its path, no upload is left, nothing else is there."""
    for path in blob_files(root):
        assert path.name == "data", path
        algorithm, hexdigest = path.parts[-4], path.parts[-2]
        assert expected_hex(path.read_bytes(), algorithm) == hexdigest, path
    assert list(root.rglob("_uploads/*")) == []


# -- put_blob_fd -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("algorithm", ["sha256", "sha512", "blake3"])
def test_put_blob_fd_digest_and_content(tmp_path: pathlib.Path, size: int, algorithm: str) -> None:
    data = os.urandom(size)
    source = tmp_path / "source"
    source.write_bytes(data)
    root = tmp_path / "root"
    blob, link = templates(root, algorithm)
    with source.open("rb") as f:
        result = _native.put_blob_fd(f.fileno(), algorithm, blob, link, False, expected_size=size)
    want = expected_hex(data, algorithm)
    assert result == (want, size, True)
    assert pathlib.Path(blob.format(hex2=want[:2], hex=want)).read_bytes() == data
    assert pathlib.Path(link.format(hex=want)).read_text() == f"{algorithm}:{want}"
    with source.open("rb") as f:  # stored already: nothing written, the link kept
        assert _native.put_blob_fd(f.fileno(), algorithm, blob, link, True) == (want, size, False)
    check_store(root)


def test_put_blob_fd_starts_at_the_position(tmp_path: pathlib.Path) -> None:
    data = os.urandom(CHUNK + 100)
    source = tmp_path / "source"
    source.write_bytes(data)
    blob, link = templates(tmp_path / "root")
    with source.open("rb") as f:
        f.seek(1000)
        result = _native.put_blob_fd(f.fileno(), "sha256", blob, link, False)
    assert result == (hashlib.sha256(data[1000:]).hexdigest(), len(data) - 1000, True)


def test_put_blob_fd_refuses_a_changed_size(tmp_path: pathlib.Path) -> None:
    """The caller saw another size when it opened the file: an error, and nothing stored."""
    source = tmp_path / "source"
    source.write_bytes(b"x" * 5000)
    root = tmp_path / "root"
    blob, link = templates(root)
    for seen in (4999, 5001):
        with source.open("rb") as f, pytest.raises(OSError, match="changed size") as info:
            _native.put_blob_fd(f.fileno(), "sha256", blob, link, True, expected_size=seen)
        assert info.value.errno is None
        assert str(info.value).startswith("the file changed size while it was read")
    assert blob_files(root) == []
    assert not (root / paths.layers_root("test/app").lstrip("/")).exists()


def test_put_blob_fd_from_another_filesystem_and_a_pipe(tmp_path: pathlib.Path) -> None:
    """Where the kernel will not copy between the files (tmpfs to the store's filesystem, a
    pipe), ``sendfile`` or a plain read and write does it: same digest, same bytes."""
    blob, link = templates(tmp_path / "root")
    data = os.urandom(CHUNK + 777)
    shm = pathlib.Path("/dev/shm")
    source = shm / f"distblob-test-{os.getpid()}" if shm.is_dir() else tmp_path / "shm-source"
    try:
        source.write_bytes(data)
        with source.open("rb") as f:
            result = _native.put_blob_fd(f.fileno(), "sha256", blob, link, False)
        assert result == (hashlib.sha256(data).hexdigest(), len(data), True)
    finally:
        source.unlink()

    piped = os.urandom(300_000)
    read_end, write_end = os.pipe()

    def feed() -> None:
        os.write(write_end, piped)
        os.close(write_end)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        result = _native.put_blob_fd(read_end, "sha256", blob, link, False)
    finally:
        writer.join()
        os.close(read_end)
    assert result == (hashlib.sha256(piped).hexdigest(), len(piped), True)
    check_store(tmp_path / "root")


# -- LinkedBlobStore.file_putter (the engine's verb over put_blob_fd) ----------------------------


@pytest.mark.parametrize("algorithm", ["sha256", "blake3"])
def test_file_putter_stores_and_links_a_whole_file(tmp_path: pathlib.Path, algorithm: str) -> None:
    data = os.urandom(CHUNK + 321)
    source = tmp_path / "source"
    source.write_bytes(data)
    registry = Registry.filesystem(tmp_path / "root", fsync=False)
    repo = registry.repository("test/app")
    put = repo.blobs.file_putter(algorithm)
    assert put is not None
    digest = Digest.from_bytes(data, algorithm)
    with source.open("rb") as f:
        assert put(f.fileno(), len(data)) == (digest, len(data))
    assert repo.blobs.get(str(digest)) == data
    with source.open("rb") as f:  # stored already: the same answer, the blob kept
        assert put(f.fileno(), None) == (digest, len(data))
    other = registry.repository("test/other")
    with pytest.raises(BlobUnknownError):
        other.blobs.stat(str(digest))  # linked into the putter's repository only
    check_store(tmp_path / "root")


def test_file_putter_refuses_a_changed_size(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"y" * 5000)
    put = Registry.filesystem(tmp_path / "root").repository("test/app").blobs.file_putter()
    assert put is not None
    with source.open("rb") as f, pytest.raises(OSError, match="changed size"):
        put(f.fileno(), 4000)
    assert blob_files(tmp_path / "root") == []


def test_file_putter_only_where_the_engine_has_one(tmp_path: pathlib.Path) -> None:
    """The python engine and drivers without local files have no one-call store."""
    assert (
        Registry.filesystem(tmp_path, engine="python").repository("a/b").blobs.file_putter() is None
    )
    assert Registry.in_memory().repository("a/b").blobs.file_putter() is None
    with pytest.raises(BlobDigestUnsupportedError):
        Registry.filesystem(tmp_path).repository("a/b").blobs.file_putter("md5")


def test_stored_sizes_per_algorithm(tmp_path: pathlib.Path) -> None:
    registry = Registry.filesystem(tmp_path)
    assert registry.blobs.stored_sizes("sha256") == set()
    repo = registry.repository("a/b")
    for data in (b"abc", b"hello", b"xyz"):
        repo.blobs.put(data)
    repo.blobs.put(b"seven b", algorithm="blake3")
    assert registry.blobs.stored_sizes("sha256") == {3, 5}
    assert registry.blobs.stored_sizes("blake3") == {7}
    assert registry.blobs.stored_sizes("sha512") == set()


# -- UploadFile.read_from_fd (BlobWriter.read_from) ---------------------------------------------


@pytest.mark.parametrize("size", [0, 5, CHUNK + 3])
def test_read_from_fd_resumes_and_matches_hashlib(tmp_path: pathlib.Path, size: int) -> None:
    data = os.urandom(size)
    source = tmp_path / "source"
    source.write_bytes(data)
    repo = Registry.filesystem(tmp_path / "root").repository("test/app")
    with repo.blobs.create() as writer:
        writer.write(b"head")
        fd = os.open(source, os.O_RDONLY)
        try:
            assert writer.read_from(fd) == size
        finally:
            os.close(fd)
        assert writer.hashed == size + 4
        upload_id = writer.id
    resumed = repo.blobs.resume(upload_id)
    read_end, write_end = os.pipe()
    os.write(write_end, b"tail")
    os.close(write_end)
    try:
        assert resumed.read_from(read_end) == 4
    finally:
        os.close(read_end)
    whole = b"head" + data + b"tail"
    assert resumed.digest() == Digest.from_bytes(whole)
    descriptor = resumed.commit(
        Descriptor(media_type="", size=len(whole), digest=Digest.from_bytes(whole))
    )
    assert repo.blobs.get(str(descriptor.digest)) == whole


# -- the ingest command ------------------------------------------------------------------------


def run_ingest(
    capsys: pytest.CaptureFixture[str],
    root: pathlib.Path,
    *sources: pathlib.Path | str,
    **extra: str,
) -> tuple[int, dict[str, dict[str, Any]], str]:
    argv = ["ingest", *map(str, sources), "--root", str(root), "--repo", "test/app", "--json"]
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}", value]
    status = main(argv)
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    return status, {line["path"]: line for line in lines}, captured.err


@pytest.mark.parametrize("engine", ["native", "python"])
def test_ingest_empty_small_and_big_files(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], engine: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    contents = {
        f"f{size}": os.urandom(size) for size in [0, 1, 1 << 20, ingest.SMALL + 1, 3 * CHUNK + 5]
    }
    for name, data in contents.items():
        (src / name).write_bytes(data)
    root = tmp_path / "root"
    status, lines, err = run_ingest(capsys, root, src, engine=engine, jobs="2")
    assert status == 0, err
    for name, data in contents.items():
        line = lines[str(src / name)]
        assert line["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
        assert line["size"] == len(data)
    check_store(root)
    assert len(blob_files(root)) == len(contents)


@pytest.mark.parametrize("engine", ["native", "python"])
@pytest.mark.parametrize("size", [1000, ingest.SMALL + 1000])
@pytest.mark.parametrize("delta", [-1, 1])
def test_ingest_source_that_changed_size_is_reported_not_stored(
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    engine: str,
    size: int,
    delta: int,
) -> None:
    """The size seen at open is not what is read (as if the file grew or shrank in between):
    the file is reported and nothing is stored for it; the others are."""
    src = tmp_path / "src"
    src.mkdir()
    victim, other = src / "victim", src / "other"
    victim.write_bytes(os.urandom(size))
    other.write_bytes(b"fine")
    real_fstat = os.fstat
    victim_ino = victim.stat().st_ino

    def lying(fd: int) -> os.stat_result:
        info = real_fstat(fd)
        if info.st_ino != victim_ino:
            return info
        fields = list(info)
        fields[6] = info.st_size + delta  # st_size
        return os.stat_result(fields)

    root = tmp_path / "root"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fstat", lying)
        status, lines, err = run_ingest(capsys, root, src, engine=engine, jobs="1")
    assert status == 1
    assert f"{victim}: the file changed size while it was read" in err
    assert set(lines) == {str(other)}
    check_store(root)
    assert [p.read_bytes() for p in blob_files(root)] == [b"fine"]


@pytest.mark.parametrize("engine", ["native", "python"])
def test_ingest_file_modified_while_read_never_stores_a_wrong_blob(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], engine: str
) -> None:
    """A writer appends to, truncates and rewrites a file while it is ingested again and again.
    Each run either stores a blob whose content matches its digest or reports the file; no
    run stores anything else. (Which happens depends on timing; the rule does not.)"""
    src = tmp_path / "src"
    src.mkdir()
    moving = src / "moving"
    moving.write_bytes(os.urandom(3 * CHUNK))
    stop = threading.Event()

    def churn() -> None:
        chunk = os.urandom(CHUNK // 2)
        n = 0
        while not stop.is_set():
            n += 1
            with moving.open("r+b") as f:
                if n % 3 == 0:
                    f.truncate(CHUNK + n % 4096)
                elif n % 3 == 1:
                    f.seek(0, os.SEEK_END)
                    f.write(chunk)
                else:
                    f.seek(n * 4096 % CHUNK)
                    f.write(chunk[:65536])

    writer = threading.Thread(target=churn)
    writer.start()
    root = tmp_path / "root"
    outcomes = []
    try:
        for _ in range(6):
            status, lines, err = run_ingest(capsys, root, moving, engine=engine)
            outcomes.append(status)
            if status == 0:
                line = lines[str(moving)]
                stored = Registry.filesystem(root).repository("test/app").blobs.get(line["digest"])
                assert len(stored) == line["size"]
                assert line["digest"] == "sha256:" + hashlib.sha256(stored).hexdigest()
            else:
                assert "the file changed size while it was read" in err, err
    finally:
        stop.set()
        writer.join()
    check_store(root)
    assert set(outcomes) <= {0, 1}


def test_ingest_pseudo_file_is_read_whole(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """/proc files say they are empty; the kernel will not copy them: they are read instead."""
    content = pathlib.Path("/proc/version").read_bytes()
    assert os.stat("/proc/version").st_size == 0 and content
    status, lines, err = run_ingest(capsys, tmp_path / "root", "/proc/version")
    assert status == 0, err
    assert lines["/proc/version"]["digest"] == "sha256:" + hashlib.sha256(content).hexdigest()


def test_ingest_error_after_copying_stores_nothing(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The blob's directory cannot be made (a file is in the way) after the data was copied
    and hashed: the file is reported, and no blob, link, upload or temporary file remains."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(ingest.SMALL + 5)
    (src / "big").write_bytes(data)
    root = tmp_path / "root"
    hexdigest = hashlib.sha256(data).hexdigest()
    blocker = root / paths.blobs_root("sha256").lstrip("/") / hexdigest[:2]
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"in the way")
    status, lines, err = run_ingest(capsys, root, src)
    assert status == 1
    assert "Not a directory" in err
    assert lines == {}
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == [hexdigest[:2]]


def test_ingest_killed_leaves_nothing_half_stored(tmp_path: pathlib.Path) -> None:
    """SIGKILL while a large file is being copied: whatever was stored is whole and correct,
    and nothing else is left (the data was in an unnamed file)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(64 << 20))
    root = tmp_path / "root"
    staging = root / paths.blobs_root("sha256").lstrip("/")
    code = "import sys; from distblob.commands import main; sys.exit(main(sys.argv[1:]))"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "ingest", str(src), "--root", str(root), "--repo", "t/a"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not staging.exists() and process.poll() is None:
            threading.Event().wait(0.001)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    check_store(root)
    leftovers = [p for p in root.rglob("*") if p.is_file() and p.name not in ("data", "link")]
    assert leftovers == []
