"""One conformance suite for every storage driver, then what only the filesystem driver does."""

from __future__ import annotations

import array
import os
import pathlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from distblob.errors import (
    InvalidOffsetError,
    InvalidPathError,
    PathNotFoundError,
    StorageDriverError,
)
from distblob.storage.driver import (
    FileInfo,
    FilesystemDriver,
    FileWriter,
    InMemoryDriver,
    S3Driver,
    StorageDriver,
)


@pytest.fixture(params=["filesystem", "inmemory", "s3"])
def driver(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> StorageDriver:
    if request.param == "filesystem":
        return FilesystemDriver(tmp_path / "root")
    if request.param == "s3":
        s3: StorageDriver = request.getfixturevalue("s3_driver")
        return s3
    return InMemoryDriver()


@pytest.fixture
def fs(tmp_path: pathlib.Path) -> FilesystemDriver:
    return FilesystemDriver(tmp_path / "root")


def all_paths(driver: StorageDriver) -> list[str]:
    return [info.path for info in driver.walk("/")]


def test_names() -> None:
    assert FilesystemDriver.name == "filesystem"
    assert InMemoryDriver.name == "inmemory"


# -- get_content / put_content -----------------------------------------------------------------


def test_put_then_get(driver: StorageDriver) -> None:
    driver.put_content("/a/b/c", b"hello")
    assert driver.get_content("/a/b/c") == b"hello"
    driver.put_content("/a/b/c", b"")
    assert driver.get_content("/a/b/c") == b""
    driver.put_content("/top", b"x", fsync=True)
    assert driver.get_content("/top") == b"x"


@pytest.mark.parametrize(
    "data",
    [bytearray(b"abc"), memoryview(b"xabcx")[1:4], array.array("B", b"abc")],
    ids=["bytearray", "memoryview", "array"],
)
def test_put_takes_any_buffer(driver: StorageDriver, data: Any) -> None:
    driver.put_content("/f", data)
    assert driver.get_content("/f") == b"abc"


def test_put_of_wide_items_stores_their_bytes(driver: StorageDriver) -> None:
    data = array.array("I", [1, 2, 3])
    driver.put_content("/f", data)
    assert driver.get_content("/f") == data.tobytes()


def test_get_missing(driver: StorageDriver) -> None:
    with pytest.raises(PathNotFoundError) as raised:
        driver.get_content("/nope")
    assert raised.value.path == "/nope"
    driver.put_content("/file", b"x")
    with pytest.raises(PathNotFoundError):
        driver.get_content("/file/below")


def test_get_of_a_directory_is_not_found(driver: StorageDriver) -> None:
    driver.put_content("/dir/file", b"x")
    with pytest.raises(PathNotFoundError):
        driver.get_content("/dir")


def test_put_conflicts_with_the_tree(driver: StorageDriver) -> None:
    driver.put_content("/dir/file", b"x")
    with pytest.raises(StorageDriverError):
        driver.put_content("/dir", b"over a directory")
    with pytest.raises(StorageDriverError):
        driver.put_content("/dir/file/below", b"under a file")
    assert driver.get_content("/dir/file") == b"x"
    assert all_paths(driver) == ["/dir", "/dir/file"]


def test_put_leaves_no_temporary_files(driver: StorageDriver) -> None:
    for i in range(5):
        driver.put_content("/d/f", bytes([i]) * 100, fsync=i % 2 == 0)
    driver.put_content("/d/g", b"")
    assert all_paths(driver) == ["/d", "/d/f", "/d/g"]


def test_concurrent_puts_of_one_path_are_atomic(driver: StorageDriver) -> None:
    if isinstance(driver, S3Driver):
        pytest.skip(
            "an S3 PUT is atomic by S3's promise, not the driver's doing; the test server "
            "(rclone serve s3) lets a reader see an empty object while a PUT replaces it"
        )
    payloads = [bytes([i]) * 65536 for i in range(8)]
    driver.put_content("/shared/f", payloads[0])
    stop = threading.Event()
    torn: list[bytes] = []

    def read() -> None:
        while not stop.is_set():
            data = driver.get_content("/shared/f")
            if data not in payloads:
                torn.append(data)

    def write(payload: bytes) -> None:
        for _ in range(20):
            driver.put_content("/shared/f", payload)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, payloads))
    finally:
        stop.set()
        reader.join()
    assert not torn
    assert driver.get_content("/shared/f") in payloads
    assert all_paths(driver) == ["/shared", "/shared/f"]


def test_concurrent_writes_under_new_shared_parents(driver: StorageDriver) -> None:
    def write(i: int) -> None:
        driver.put_content(f"/p/q/r/{i % 3}/f{i}", str(i).encode(), fsync=i % 4 == 0)
        with driver.writer(f"/p/q/s/{i % 3}/w{i}") as writer:
            writer.write(str(i).encode())
            writer.commit(fsync=i % 4 == 1)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(write, range(64)))
    for i in range(64):
        assert driver.get_content(f"/p/q/r/{i % 3}/f{i}") == str(i).encode()
        assert driver.get_content(f"/p/q/s/{i % 3}/w{i}") == str(i).encode()


# -- reader ------------------------------------------------------------------------------------


def test_reader_offsets(driver: StorageDriver) -> None:
    data = bytes(range(256)) * 40
    driver.put_content("/r", data)
    for offset in (0, 1, 4095, 4096, len(data) - 1, len(data)):
        with driver.reader("/r", offset) as reader:
            assert reader.tell() == offset
            assert reader.read() == data[offset:]
    with driver.reader("/r") as reader:
        assert reader.read(10) == data[:10]
        assert reader.seekable()
        reader.seek(100)
        assert reader.read(3) == data[100:103]
        reader.seek(-5, os.SEEK_END)
        assert reader.read() == data[-5:]
    assert reader.closed


def test_reader_errors(driver: StorageDriver) -> None:
    driver.put_content("/d/r", b"12345")
    for offset in (-1, 6, 1 << 40):
        with pytest.raises(InvalidOffsetError) as raised:
            driver.reader("/d/r", offset)
        assert raised.value.offset == offset
    with pytest.raises(PathNotFoundError):
        driver.reader("/d/missing")
    with pytest.raises(PathNotFoundError):
        driver.reader("/d")
    with pytest.raises(TypeError):
        driver.reader("/d/r", 1.5)  # type: ignore[arg-type]


def test_a_reader_of_an_empty_file(driver: StorageDriver) -> None:
    driver.put_content("/e", b"")
    with driver.reader("/e", 0) as reader:
        assert reader.read() == b""


# -- writer ------------------------------------------------------------------------------------


def test_writer_creates_and_truncates(driver: StorageDriver) -> None:
    driver.put_content("/w/f", b"old content that is long")
    with driver.writer("/w/f") as writer:
        assert isinstance(writer, FileWriter)
        assert writer.size == 0
        assert writer.write(b"ab") == 2
        assert writer.write(bytearray(b"cd")) == 2
        assert writer.write(memoryview(b"xefx")[1:3]) == 2
        assert writer.write(array.array("H", [0x4847])) == 2
        assert writer.write(b"") == 0
        assert writer.size == 8
        writer.commit()
    assert driver.get_content("/w/f") == b"abcdefGH"
    with driver.writer("/new/dir/file") as writer:
        writer.commit(fsync=True)
    assert driver.get_content("/new/dir/file") == b""


def test_writer_appends(driver: StorageDriver) -> None:
    with driver.writer("/u/data") as writer:
        writer.write(b"first.")
    with driver.writer("/u/data", append=True) as writer:
        assert writer.size == 6
        writer.write(b"second.")
        assert writer.size == 13
        writer.commit(fsync=True)
    with driver.writer("/u/data", append=True) as writer:
        writer.write(b"third")
        writer.flush()
        assert driver.get_content("/u/data") == b"first.second.third"
        assert driver.stat("/u/data").size == 18
    assert driver.get_content("/u/data") == b"first.second.third"


def test_closing_keeps_what_was_written(driver: StorageDriver) -> None:
    writer = driver.writer("/c")
    writer.write(b"kept")
    writer.close()
    writer.close()
    if not driver.visible_on_close:
        # Pending (an object store's open multipart upload): stat and append see it, readers
        # do not until a writer commits or flushes.
        assert driver.stat("/c").size == 4
        with pytest.raises(PathNotFoundError):
            driver.get_content("/c")
        with driver.writer("/c", append=True) as writer:
            assert writer.size == 4
            writer.commit()
    assert driver.get_content("/c") == b"kept"


def test_append_needs_a_file(driver: StorageDriver) -> None:
    with pytest.raises(PathNotFoundError):
        driver.writer("/missing", append=True)
    driver.put_content("/dir/f", b"")
    with pytest.raises(StorageDriverError):
        driver.writer("/dir", append=True)
    with pytest.raises(StorageDriverError):
        driver.writer("/dir")
    if driver.checks_tree:
        with pytest.raises(StorageDriverError):
            driver.writer("/dir/f/below")
    assert all_paths(driver) == ["/dir", "/dir/f"]


def test_cancel_removes_the_file(driver: StorageDriver) -> None:
    writer = driver.writer("/x/f")
    writer.write(b"doomed")
    writer.cancel()
    writer.cancel()
    writer.close()
    with pytest.raises(PathNotFoundError):
        driver.stat("/x/f")
    with pytest.raises(ValueError, match="cancelled"):
        writer.write(b"more")
    with pytest.raises(ValueError, match="cancelled"):
        writer.commit()


def test_cancel_of_an_appending_writer_removes_the_whole_file(driver: StorageDriver) -> None:
    driver.put_content("/f", b"old")
    writer = driver.writer("/f", append=True)
    writer.write(b"new")
    writer.cancel()
    assert driver.list("/") == []


def test_cancel_after_commit_removes_the_file(driver: StorageDriver) -> None:
    writer = driver.writer("/f")
    writer.write(b"x")
    writer.commit()
    writer.cancel()
    assert driver.list("/") == []


def test_a_closed_writer_cannot_cancel(driver: StorageDriver) -> None:
    writer = driver.writer("/f")
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.cancel()
    if driver.visible_on_close:
        assert driver.get_content("/f") == b""
    else:
        assert driver.stat("/f").size == 0  # pending, and still there


def test_no_writes_after_commit_or_close(driver: StorageDriver) -> None:
    with driver.writer("/f") as writer:
        writer.write(b"a")
        writer.commit()
        with pytest.raises(ValueError, match="committed"):
            writer.write(b"b")
        with pytest.raises(ValueError, match="committed"):
            writer.commit()
        assert writer.size == 1
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"c")
    with pytest.raises(ValueError, match="closed"):
        writer.flush()
    assert driver.get_content("/f") == b"a"


def test_writers_of_different_files_in_threads(driver: StorageDriver) -> None:
    chunk = os.urandom(4096)

    def write(i: int) -> None:
        with driver.writer(f"/t/{i}") as writer:
            for _ in range(16):
                writer.write(chunk)
            writer.commit()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(16)))
    assert {driver.get_content(f"/t/{i}") for i in range(16)} == {chunk * 16}


# -- stat / list -------------------------------------------------------------------------------


def test_stat(driver: StorageDriver) -> None:
    before = time.time()
    driver.put_content("/s/f", b"12345")
    info = driver.stat("/s/f")
    assert info == FileInfo("/s/f", 5, info.mod_time, False)
    assert before - 2 <= info.mod_time <= time.time() + 2
    directory = driver.stat("/s")
    assert directory.is_dir and directory.size == 0 and directory.path == "/s"
    root = driver.stat("/")
    assert root.is_dir and root.path == "/"
    with pytest.raises(PathNotFoundError):
        driver.stat("/s/missing")
    with pytest.raises(PathNotFoundError):
        driver.stat("/s/f/below")


def test_fileinfo_is_frozen() -> None:
    info = FileInfo("/a", 1, 0.0, False)
    with pytest.raises(AttributeError):
        info.size = 2  # type: ignore[misc]


def test_list(driver: StorageDriver) -> None:
    assert driver.list("/") == []
    for path in ("/b/z", "/b/a", "/b/a-b/x", "/b/A", "/b/_", "/c", "/a=1"):
        driver.put_content(path, b"")
    assert driver.list("/") == ["/a=1", "/b", "/c"]
    assert driver.list("/b") == ["/b/A", "/b/_", "/b/a", "/b/a-b", "/b/z"]
    assert driver.list("/b/a-b") == ["/b/a-b/x"]
    with pytest.raises(PathNotFoundError):
        driver.list("/missing")
    with pytest.raises(PathNotFoundError):
        driver.list("/c")


def test_a_directory_stays_when_emptied(driver: StorageDriver) -> None:
    driver.put_content("/d/e/f", b"")
    driver.delete("/d/e/f")
    if driver.keeps_empty_directories:
        assert driver.list("/d/e") == []
        assert driver.stat("/d/e").is_dir
    else:
        # An object store's directory is only a prefix of stored keys: it goes with them.
        with pytest.raises(PathNotFoundError):
            driver.list("/d/e")
        assert driver.list("/") == []


# -- move --------------------------------------------------------------------------------------


def test_move(driver: StorageDriver) -> None:
    driver.put_content("/up/data", b"payload")
    driver.move("/up/data", "/blobs/ab/abc/data")
    assert driver.get_content("/blobs/ab/abc/data") == b"payload"
    with pytest.raises(PathNotFoundError):
        driver.get_content("/up/data")
    assert driver.list("/") == ["/blobs", "/up"] if driver.keeps_empty_directories else ["/blobs"]


def test_move_replaces_a_file(driver: StorageDriver) -> None:
    driver.put_content("/src", b"new")
    driver.put_content("/dst", b"old")
    driver.move("/src", "/dst", fsync=True)
    assert driver.get_content("/dst") == b"new"
    assert driver.list("/") == ["/dst"]


def test_move_errors(driver: StorageDriver) -> None:
    with pytest.raises(PathNotFoundError) as raised:
        driver.move("/missing", "/dst")
    assert raised.value.path == "/missing"
    driver.put_content("/f", b"f")
    driver.put_content("/dir/x", b"x")
    with pytest.raises(StorageDriverError):
        driver.move("/f", "/dir")
    with pytest.raises(StorageDriverError):
        driver.move("/f", "/dir/x/below")
    with pytest.raises(StorageDriverError):
        driver.move("/dir", "/dir/sub")
    with pytest.raises(StorageDriverError):
        driver.move("/dir", "/f")
    assert all_paths(driver) == ["/dir", "/dir/x", "/f"]


def test_move_to_itself_changes_nothing(driver: StorageDriver) -> None:
    driver.put_content("/f", b"f")
    driver.move("/f", "/f")
    assert driver.get_content("/f") == b"f"


def test_move_a_directory(driver: StorageDriver) -> None:
    driver.put_content("/u/1/data", b"1")
    driver.put_content("/u/1/hashstates/sha256/0", b"s")
    driver.move("/u/1", "/done/1", fsync=True)
    assert all_paths(driver) == [
        "/done",
        "/done/1",
        "/done/1/data",
        "/done/1/hashstates",
        "/done/1/hashstates/sha256",
        "/done/1/hashstates/sha256/0",
        *(["/u"] if driver.keeps_empty_directories else []),
    ]


# -- delete ------------------------------------------------------------------------------------


def test_delete(driver: StorageDriver) -> None:
    driver.put_content("/a/b/c", b"")
    driver.put_content("/a/b/d/e", b"")
    driver.put_content("/a/x", b"")
    driver.delete("/a/x")
    assert all_paths(driver) == ["/a", "/a/b", "/a/b/c", "/a/b/d", "/a/b/d/e"]
    driver.delete("/a/b")
    assert all_paths(driver) == (["/a"] if driver.keeps_empty_directories else [])
    with pytest.raises(PathNotFoundError):
        driver.delete("/a/b")
    with pytest.raises(PathNotFoundError):
        driver.delete("/nothing/here")
    driver.put_content("/a/file", b"")
    with pytest.raises(PathNotFoundError):
        driver.delete("/a/file/below")


def test_delete_files_removes_each_file_and_its_emptied_directory(driver: StorageDriver) -> None:
    """Garbage collection's bulk delete: many files at once (more than one S3 DeleteObjects
    request takes), each file's directory with it when nothing else is in it; missing files
    and an empty list are fine; nothing else is touched."""
    many = [f"/blobs/{n:04d}/data" for n in range(1_005)]
    for path in many:
        driver.put_content(path, b"x")
    driver.put_content("/blobs/0001/other", b"kept")
    driver.put_content("/keep/data", b"kept")
    driver.delete_files([*many, "/blobs/9999/data", "/nothing/here"])
    driver.delete_files([])
    assert all_paths(driver) == [
        "/blobs",
        "/blobs/0001",
        "/blobs/0001/other",
        "/keep",
        "/keep/data",
    ]
    with pytest.raises(InvalidPathError):
        driver.delete_files(["/ok", "../escape"])


# -- walk --------------------------------------------------------------------------------------


def test_walk_is_depth_first_in_sorted_order(driver: StorageDriver) -> None:
    for path in ("/r/b/y", "/r/b-x", "/r/a", "/r/b/x/1", "/r/c/d/e", "/other"):
        driver.put_content(path, b"12")
    infos = list(driver.walk("/r"))
    assert [info.path for info in infos] == [
        "/r/a",
        "/r/b",
        "/r/b/x",
        "/r/b/x/1",
        "/r/b/y",
        "/r/b-x",
        "/r/c",
        "/r/c/d",
        "/r/c/d/e",
    ]
    assert [info.is_dir for info in infos] == [
        *(False, True, True, False, False, False),
        *(True, True, False),
    ]
    assert {info.size for info in infos if not info.is_dir} == {2}
    assert {info.size for info in infos if info.is_dir} == {0}
    assert all_paths(driver)[0] == "/other"


def test_walk_errors_at_the_call(driver: StorageDriver) -> None:
    driver.put_content("/file", b"")
    with pytest.raises(PathNotFoundError):
        driver.walk("/missing")
    with pytest.raises(PathNotFoundError):
        driver.walk("/file")
    assert list(driver.walk("/")) == [FileInfo("/file", 0, driver.stat("/file").mod_time, False)]


def test_walk_of_an_empty_driver(driver: StorageDriver) -> None:
    assert list(driver.walk("/")) == []


# -- the rest ----------------------------------------------------------------------------------


def test_redirect_url(driver: StorageDriver) -> None:
    driver.put_content("/f", b"redirected")
    if not isinstance(driver, S3Driver):
        assert driver.redirect_url("/f") is None
        assert driver.redirect_url("/f", "HEAD") is None
        return
    # A presigned URL from which anyone can read the object, for a limited time.
    get = httpx.get(driver.redirect_url("/f") or "")
    assert (get.status_code, get.content) == (200, b"redirected")
    head = httpx.head(driver.redirect_url("/f", "HEAD") or "")
    assert (head.status_code, head.headers["content-length"]) == (200, "10")
    assert httpx.put(driver.redirect_url("/f") or "", content=b"x").status_code == 403


def test_local_path(driver: StorageDriver, tmp_path: pathlib.Path) -> None:
    local = driver.local_path("/not/yet/there")
    if isinstance(driver, FilesystemDriver):
        assert local == str(tmp_path / "root" / "not" / "yet" / "there")
    else:
        assert local is None


def test_sync(driver: StorageDriver) -> None:
    driver.put_content("/f", b"x")
    driver.sync()
    assert driver.get_content("/f") == b"x"


BAD_PATHS = [
    "",
    "a",
    "a/b",
    "./a",
    "/a/",
    "//a",
    "/a//b",
    "/..",
    "/.",
    "/a/..",
    "/a/../b",
    "/a/./b",
    "/é",
    "/a b",
    "/a\n",
    "/a\x00",
    "/a:b",
    "/a+b",
    "\\a",
    "/a\\b",
    "/" + "x" * 256,
]


def calls(path: str) -> dict[str, Callable[[StorageDriver], object]]:
    """Every driver method, given ``path`` where it takes one."""
    return {
        "get_content": lambda d: d.get_content(path),
        "put_content": lambda d: d.put_content(path, b"x"),
        "reader": lambda d: d.reader(path),
        "writer": lambda d: d.writer(path),
        "writer_append": lambda d: d.writer(path, append=True),
        "stat": lambda d: d.stat(path),
        "list": lambda d: d.list(path),
        "move_src": lambda d: d.move(path, "/ok"),
        "move_dst": lambda d: d.move("/ok", path),
        "delete": lambda d: d.delete(path),
        "walk": lambda d: d.walk(path),
        "redirect_url": lambda d: d.redirect_url(path),
        "local_path": lambda d: d.local_path(path),
    }


@pytest.mark.parametrize("path", BAD_PATHS)
def test_invalid_paths_are_refused_everywhere(driver: StorageDriver, path: str) -> None:
    driver.put_content("/ok", b"untouched")
    for method, call in calls(path).items():
        with pytest.raises(InvalidPathError) as raised:
            call(driver)
        assert raised.value.path == path, method
    assert all_paths(driver) == ["/ok"]
    assert driver.get_content("/ok") == b"untouched"


def test_the_root_is_only_for_looking(driver: StorageDriver) -> None:
    driver.put_content("/ok", b"")
    for method, call in calls("/").items():
        if method in ("stat", "list", "walk"):
            call(driver)
        else:
            with pytest.raises(InvalidPathError):
                call(driver)
    assert driver.list("/") == ["/ok"]


def test_a_path_is_a_str(driver: StorageDriver) -> None:
    with pytest.raises(TypeError):
        driver.get_content(b"/a")  # type: ignore[arg-type]


def test_the_longest_component_is_allowed(driver: StorageDriver) -> None:
    path = "/" + "x" * 200 + "/" + "y" * 255
    driver.put_content(path, b"long")
    assert driver.get_content(path) == b"long"


def test_dots_inside_names_are_fine(driver: StorageDriver) -> None:
    for path in ("/...", "/a..b", "/.hidden", "/a./.b"):
        driver.put_content(path, path.encode())
        assert driver.get_content(path) == path.encode()


# -- the filesystem driver only ----------------------------------------------------------------


def snapshot(directory: pathlib.Path) -> dict[str, bytes | None]:
    return {
        str(path.relative_to(directory)): path.read_bytes() if path.is_file() else None
        for path in sorted(directory.rglob("*"))
    }


def test_the_root_is_created_and_kept(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "deep" / "root"
    driver = FilesystemDriver(root)
    assert root.is_dir()
    assert driver.root == str(root)
    assert repr(driver) == f"FilesystemDriver({str(root)!r})"
    driver.put_content("/docker/registry/v2/f", b"x")
    assert (root / "docker/registry/v2/f").read_bytes() == b"x"


def test_nothing_is_written_outside_the_root(tmp_path: pathlib.Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_bytes(b"keep")
    (tmp_path / "beside").write_bytes(b"keep")
    before = snapshot(tmp_path)
    driver = FilesystemDriver(tmp_path / "root")
    for path in [*BAD_PATHS, "/../outside/sentinel", "/../beside", "/root/../beside"]:
        for call in calls(path).values():
            with pytest.raises(InvalidPathError):
                call(driver)
    driver.put_content("/a/b", b"in")
    driver.move("/a/b", "/c/d")
    with driver.writer("/w") as writer:
        writer.write(b"w")
    driver.delete("/a")
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("root")} == before


def test_symlinks_out_of_the_root_are_not_written_through(tmp_path: pathlib.Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep")
    root = tmp_path / "root"
    driver = FilesystemDriver(root)
    (root / "escape").symlink_to(outside)
    (root / "file-link").symlink_to(outside / "victim")
    driver.put_content("/inside/f", b"")
    attempts: list[Callable[[], object]] = [
        lambda: driver.put_content("/escape/new", b"x"),
        lambda: driver.put_content("/escape/a/b/new", b"x"),
        lambda: driver.put_content("/file-link", b"x"),
        lambda: driver.writer("/escape/victim", append=True),
        lambda: driver.writer("/escape/victim"),
        lambda: driver.writer("/file-link"),
        lambda: driver.move("/inside/f", "/escape/victim"),
        lambda: driver.move("/escape/victim", "/inside/g"),
        lambda: driver.delete("/escape/victim"),
        lambda: driver.delete("/escape"),
        lambda: driver.local_path("/escape/new"),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidPathError, match="outside the storage root"):
            attempt()
    assert snapshot(outside) == {"victim": b"keep"}
    # Reading through an administrator's symlink is allowed.
    assert driver.get_content("/escape/victim") == b"keep"


def test_a_symlinked_root_is_fine(tmp_path: pathlib.Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    driver = FilesystemDriver(tmp_path / "link")
    driver.put_content("/a/b", b"x")
    assert (real / "a" / "b").read_bytes() == b"x"
    assert driver.local_path("/a/b") == str(tmp_path / "link" / "a" / "b")


def test_symlinks_inside_the_root_are_followed(fs: FilesystemDriver) -> None:
    fs.put_content("/volume/blob", b"data")
    os.symlink("volume", os.path.join(fs.root, "blobs"))
    assert fs.get_content("/blobs/blob") == b"data"
    fs.put_content("/blobs/new", b"new")
    assert fs.get_content("/volume/new") == b"new"
    assert fs.stat("/blobs").is_dir
    assert [info.path for info in fs.walk("/blobs")] == ["/blobs/blob", "/blobs/new"]


def test_walk_survives_a_symlink_loop(fs: FilesystemDriver) -> None:
    fs.put_content("/a/f", b"")
    os.symlink("..", os.path.join(fs.root, "a", "up"))
    os.symlink("self", os.path.join(fs.root, "a", "self"))
    os.symlink("nowhere", os.path.join(fs.root, "a", "dangling"))
    assert [info.path for info in fs.walk("/")] == ["/a", "/a/f", "/a/up"]


def test_names_no_driver_path_can_hold_are_skipped(fs: FilesystemDriver) -> None:
    # A dedicated volume has lost+found; other stray files must not break a walk either.
    os.mkdir(os.path.join(fs.root, "lost+found"), 0)
    pathlib.Path(fs.root, "with space").write_bytes(b"")
    pathlib.Path(fs.root, "é").write_bytes(b"")
    fs.put_content("/ok", b"")
    assert fs.list("/") == ["/ok"]
    assert [info.path for info in fs.walk("/")] == ["/ok"]
    os.rmdir(os.path.join(fs.root, "lost+found"))


def test_files_get_go_s_permissions(fs: FilesystemDriver) -> None:
    umask = os.umask(0o022)
    try:
        fs.put_content("/d/f", b"")
        with fs.writer("/d/w"):
            pass
    finally:
        os.umask(umask)
    assert os.stat(os.path.join(fs.root, "d")).st_mode & 0o777 == 0o755
    assert os.stat(os.path.join(fs.root, "d", "f")).st_mode & 0o777 == 0o644
    assert os.stat(os.path.join(fs.root, "d", "w")).st_mode & 0o777 == 0o644


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The OS path of everything fsynced while the test runs."""
    synced: list[str] = []
    real = os.fsync

    def record(fd: Any) -> None:
        number = fd if isinstance(fd, int) else fd.fileno()
        synced.append(os.readlink(f"/proc/self/fd/{number}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    yield synced


def real(fs: FilesystemDriver, path: str = "/") -> str:
    return os.path.realpath(fs.root + ("" if path == "/" else path))


def test_put_content_fsyncs_the_file_and_every_changed_directory(
    fs: FilesystemDriver, fsyncs: list[str]
) -> None:
    fs.put_content("/old/f", b"")
    assert fsyncs == []
    fs.put_content("/old/new1/new2/f", b"data", fsync=True)
    file, *directories = fsyncs
    assert file.startswith(real(fs, "/old/new1/new2/f.")) and file.endswith(".tmp")
    assert sorted(directories) == [
        real(fs, "/old"),
        real(fs, "/old/new1"),
        real(fs, "/old/new1/new2"),
    ]
    fsyncs.clear()
    fs.put_content("/old/new1/new2/f", b"again", fsync=True)
    assert len(fsyncs) == 2 and fsyncs[1] == real(fs, "/old/new1/new2")


def test_move_fsyncs_the_destination_directories(fs: FilesystemDriver, fsyncs: list[str]) -> None:
    fs.put_content("/up/data", b"x")
    fs.put_content("/blobs/sha256/other", b"x")
    fs.move("/up/data", "/blobs/sha256/ab/abc/data", fsync=True)
    assert sorted(fsyncs) == [
        real(fs, "/blobs/sha256"),
        real(fs, "/blobs/sha256/ab"),
        real(fs, "/blobs/sha256/ab/abc"),
    ]
    fsyncs.clear()
    fs.put_content("/up/data", b"y")
    fs.move("/up/data", "/blobs/sha256/ab/abc/data", fsync=True)
    assert fsyncs == [real(fs, "/blobs/sha256/ab/abc")]
    fsyncs.clear()
    fs.put_content("/up/data", b"z")
    fs.move("/up/data", "/blobs/sha256/ab/abc/data")
    assert fsyncs == []


def test_commit_fsyncs_what_the_writer_created(fs: FilesystemDriver, fsyncs: list[str]) -> None:
    fs.put_content("/u/existing", b"")
    with fs.writer("/u/id/data") as writer:
        writer.write(b"abc")
        writer.commit(fsync=True)
    assert fsyncs[0] == real(fs, "/u/id/data")
    assert sorted(fsyncs[1:]) == [real(fs, "/u"), real(fs, "/u/id")]
    fsyncs.clear()
    with fs.writer("/u/id/data", append=True) as writer:
        writer.write(b"def")
        writer.commit(fsync=True)
    assert fsyncs == [real(fs, "/u/id/data")]
    fsyncs.clear()
    with fs.writer("/u/id/data", append=True) as writer:
        writer.write(b"ghi")
        writer.commit()
    assert fsyncs == []
    assert fs.get_content("/u/id/data") == b"abcdefghi"


def test_deferred_sync_syncs_everything_in_parallel_when_the_block_ends(
    fs: FilesystemDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[str, str]] = []
    real_fsync = os.fsync

    def record(fd: Any) -> None:
        number = fd if isinstance(fd, int) else fd.fileno()
        synced.append((os.readlink(f"/proc/self/fd/{number}"), threading.current_thread().name))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    fs.put_content("/up/data", b"blob")
    fs.put_content("/blobs/sha256/other", b"x")
    with fs.deferred_sync():
        fs.move("/up/data", "/blobs/sha256/ab/abc/data", fsync=True)
        with fs.deferred_sync():  # nested: the outer block syncs
            fs.put_content("/layers/sha256/abc/link", b"sha256:abc", fsync=True)
        assert synced == []
        fs.put_content("/scratch", b"not durable")  # fsync=False: never synced
    paths = sorted(path for path, _ in synced)
    assert paths == sorted(
        [
            real(fs, "/blobs/sha256"),
            real(fs, "/blobs/sha256/ab"),
            real(fs, "/blobs/sha256/ab/abc"),
            real(fs, "/layers/sha256/abc/link"),  # the file itself, after its rename
            real(fs),
            real(fs, "/layers"),
            real(fs, "/layers/sha256"),
            real(fs, "/layers/sha256/abc"),
        ]
    )
    assert any(name.startswith("distblob-fsync") for _, name in synced)
    assert fs.get_content("/layers/sha256/abc/link") == b"sha256:abc"
    files = sorted(
        os.path.relpath(os.path.join(top, name), fs.root)
        for top, _, names in os.walk(fs.root)
        for name in names
    )
    assert files == [
        "blobs/sha256/ab/abc/data",
        "blobs/sha256/other",
        "layers/sha256/abc/link",
        "scratch",
    ]
    # After the block, writes sync at once again.
    synced.clear()
    fs.put_content("/layers/sha256/abc/link", b"sha256:abd", fsync=True)
    assert [path for path, _ in synced][1:] == [real(fs, "/layers/sha256/abc")]


def test_deferred_sync_syncs_a_replacing_file_before_its_rename(
    fs: FilesystemDriver, fsyncs: list[str]
) -> None:
    fs.put_content("/d/link", b"old")
    with fs.deferred_sync():
        fs.put_content("/d/link", b"new", fsync=True)
        # Synced in the block, under its temporary name: a crash leaves old or new content.
        assert len(fsyncs) == 1 and fsyncs[0].startswith(real(fs, "/d/link.")), fsyncs
    assert fsyncs[1:] == [real(fs, "/d")]
    assert fs.get_content("/d/link") == b"new"


def test_deferred_sync_still_syncs_when_the_block_fails(
    fs: FilesystemDriver, fsyncs: list[str]
) -> None:
    fs.put_content("/up/data", b"blob")
    with pytest.raises(PathNotFoundError), fs.deferred_sync():
        fs.move("/up/data", "/b/data", fsync=True)
        fs.move("/up/missing", "/b/other", fsync=True)
    assert sorted(fsyncs) == [real(fs), real(fs, "/b")]
    fsyncs.clear()
    fs.put_content("/c/f", b"x", fsync=True)  # the failed block left no deferral behind
    assert len(fsyncs) == 3


def test_deferred_sync_is_per_thread(fs: FilesystemDriver, fsyncs: list[str]) -> None:
    with fs.deferred_sync():
        worker = threading.Thread(
            target=fs.put_content, args=("/t/f", b"x"), kwargs={"fsync": True}
        )
        worker.start()
        worker.join()
        assert len(fsyncs) == 3  # the other thread's write was synced at once


def test_a_failed_put_leaves_no_temporary_file(
    fs: FilesystemDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        fs.put_content("/d/f", b"x")
    monkeypatch.undo()
    assert fs.list("/d") == []


def test_a_vanished_root_is_reported(tmp_path: pathlib.Path) -> None:
    driver = FilesystemDriver(tmp_path / "root")
    os.rmdir(tmp_path / "root")
    with pytest.raises(StorageDriverError, match="root"):
        driver.put_content("/a/b", b"")
    assert not (tmp_path / "root").exists()


def test_delete_files_on_a_filesystem_leaves_what_a_symlink_leads_to(
    tmp_path: pathlib.Path,
) -> None:
    """A file reached through a symlink out of the root is not deleted; the others are."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data").write_bytes(b"keep me")
    driver = FilesystemDriver(tmp_path / "root")
    driver.put_content("/blobs/aa/data", b"x")
    os.symlink(outside, tmp_path / "root" / "blobs" / "bb")
    driver.delete_files(["/blobs/aa/data", "/blobs/bb/data"])
    assert (outside / "data").read_bytes() == b"keep me"
    assert not (tmp_path / "root" / "blobs" / "aa").exists()
