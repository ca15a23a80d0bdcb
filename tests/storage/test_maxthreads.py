"""``storage.filesystem.maxthreads``: read as distribution reads it, and the bound on storage
verbs running at once in :class:`~distblob.storage.aio.ThreadedRegistry`."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import anyio
import pytest

from distblob.config import ConfigError, parse_config
from distblob.errors import DistblobError
from distblob.registry import Registry
from distblob.storage.aio import ThreadedRegistry
from distblob.storage.driver import FilesystemDriver, InMemoryDriver

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, 100), (200, 200), ("60", 60), (10, 25), (0, 25), (-5, 25)],
)
def test_maxthreads_is_read_as_distribution_reads_it(
    tmp_path: Path, given: object, expected: int
) -> None:
    parameters: dict[str, object] = {"rootdirectory": str(tmp_path)}
    if given is not None:
        parameters["maxthreads"] = given
    driver = FilesystemDriver.from_parameters(parameters)
    assert driver.maxthreads == expected
    config = parse_config({"version": 0.1, "storage": {"filesystem": parameters}})
    assert config.storage.driver == "filesystem"


@pytest.mark.parametrize("bad", ["many", True, 2.5])
def test_a_bad_maxthreads_names_its_key(tmp_path: Path, bad: object) -> None:
    doc = {"storage": {"filesystem": {"rootdirectory": str(tmp_path), "maxthreads": bad}}}
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert info.value.key == "storage.filesystem.maxthreads"


class CountingDriver(FilesystemDriver):
    """A filesystem driver whose ``stat`` and ``list`` hold until released, counting the calls
    under way."""

    def __init__(self, root: Path, maxthreads: int) -> None:
        super().__init__(root, maxthreads=maxthreads)
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.release = threading.Event()

    def _held(self) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.release.wait(60)

    def _done(self) -> None:
        with self.lock:
            self.running -= 1

    def stat(self, path: str):  # type: ignore[no-untyped-def]
        self._held()
        try:
            return super().stat(path)
        finally:
            self._done()

    def list(self, path: str):  # type: ignore[no-untyped-def]
        self._held()
        try:
            return super().list(path)
        finally:
            self._done()


def test_no_more_than_maxthreads_storage_verbs_run_at_once(tmp_path: Path) -> None:
    driver = CountingDriver(tmp_path, maxthreads=25)
    served = ThreadedRegistry(Registry(driver))
    assert served.pool is not None and served.pool.limit == 25
    calls = 60  # more than maxthreads and than anyio's default limiter (40)

    async def main() -> None:
        async def one() -> None:
            with contextlib.suppress(DistblobError):
                await served.repository("library/busybox").manifests.tags()

        # The default limiter is widened so that only maxthreads can be what bounds the calls.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 100
        async with anyio.create_task_group() as group:
            for _ in range(calls):
                group.start_soon(one)
            with anyio.fail_after(60):
                while driver.running < 25:
                    await anyio.sleep(0.01)
            await anyio.sleep(0.2)  # time for a 26th call to start, were it allowed to
            assert driver.running == 25
            driver.release.set()

    anyio.run(main)
    assert driver.most == 25


def test_other_drivers_keep_the_default_limiter() -> None:
    assert ThreadedRegistry(Registry(InMemoryDriver())).pool is None
