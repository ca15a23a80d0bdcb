"""Online garbage collection (:mod:`distblob.storage.online`, :mod:`distblob.storage.collection`):
the grace period, the claim, and every ordering of a server relying on a blob against the
collection deleting it, forced step by step rather than left to timing.

The orderings: a server's ``touched`` write lands before the collection lists them (the blob is
spared), or after (the server then finds its digest in ``sweeping``, waits for the batch, finds
the blob gone and repairs or refuses). Whatever the ordering, what the server answered for is
there afterwards.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import anyio
import pytest

from distblob import Descriptor, Digest, Registry, Repository
from distblob.errors import BlobUnknownError, ManifestBlobUnknownError, PathNotFoundError
from distblob.storage import collection, garbagecollect, online, paths
from distblob.storage.collection import STATE_PATH, Fence, Need, State, read_state
from distblob.storage.manifests import ManifestStore
from distblob.storage.online import (
    Claim,
    CollectionBusyError,
    CollectionLostError,
    ScheduledCollection,
    collect,
)
from support.gcrace import age, in_sweep, manifest, options, push_image


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def registry(root: Path) -> Registry:
    return Registry.filesystem(root, delete_enabled=True)


# -- grace period -----------------------------------------------------------------------------


def test_only_old_garbage_goes(registry: Registry, root: Path) -> None:
    repo = registry.repository("gc/app")
    tagged, tagged_blobs = push_image(repo, "v1", "kept")
    stale = Digest.from_bytes(b"old garbage")
    registry.blobs.write(stale, b"old garbage")
    age(root)
    fresh = Digest.from_bytes(b"new garbage")
    registry.blobs.write(fresh, b"new garbage")  # written now: within the grace period

    _, summary = collect(registry, options())

    assert summary.blobs == 1 and summary.young == 1
    assert not registry.blobs.exists(stale)
    assert registry.blobs.exists(fresh)
    assert registry.blobs.exists(tagged)
    assert all(registry.blobs.exists(d) for d in tagged_blobs)


def test_a_young_untagged_revision_marks_its_blobs(registry: Registry, root: Path) -> None:
    """A manifest put by digest moments ago (a multi-arch child, before its index) is young:
    with ``delete_untagged`` it stays, and so do its layers."""
    repo = registry.repository("gc/app")
    config = repo.blobs.put(b'{"os":"linux"}', "application/json")
    layer = repo.blobs.put(b"child layer" * 40)
    age(root)  # the blobs are old; the manifest comes now
    body = manifest(config, layer)
    child = repo.manifests.put(str(Digest.from_bytes(body)), body).digest

    _, summary = collect(registry, options(delete_untagged=True, manifests_only=True))

    assert summary.blobs == 0 and summary.manifests == 0
    assert repo.manifests.exists(str(child))
    assert repo.blobs.exists(str(layer.digest))


def test_old_untagged_revisions_and_their_blobs_go(registry: Registry, root: Path) -> None:
    repo = registry.repository("gc/app")
    old, old_blobs = push_image(repo, "v1", "old")
    _, new_blobs = push_image(repo, "v1", "new")  # v1 moves on: ``old`` is untagged
    age(root)

    _, summary = collect(registry, options(delete_untagged=True, manifests_only=True))

    assert summary.manifests == 1 and summary.blobs == 3 and summary.layer_links == 2
    assert not repo.manifests.exists(str(old))
    assert not any(registry.blobs.exists(d) for d in old_blobs | {old})
    assert all(repo.blobs.exists(str(d)) for d in new_blobs)
    assert read_state(registry.driver) == State(generation=1, beat=read_state(registry.driver).beat)


def test_a_relinked_blob_is_young_again(registry: Registry, root: Path) -> None:
    """Pushing a blob that is stored already renews its link's time (the native put and the
    upload commit both): a push under way keeps it through a collection that starts now."""
    repo = registry.repository("gc/app")
    put = repo.blobs.put(b"reused layer" * 30)
    writer = repo.blobs.create()
    writer.write(b"uploaded layer" * 30)
    committed = writer.commit(Descriptor("", -1, Digest.from_bytes(b"uploaded layer" * 30)))
    age(root)
    repo.blobs.put(b"reused layer" * 30)
    again = repo.blobs.create()
    again.write(b"uploaded layer" * 30)
    again.commit(Descriptor("", -1, committed.digest))

    _, summary = collect(registry, options(manifests_only=True))

    assert summary.blobs == 0 and summary.layer_links == 0
    assert repo.blobs.exists(str(put.digest)) and repo.blobs.exists(str(committed.digest))


def test_dry_run_writes_nothing(registry: Registry, root: Path) -> None:
    registry.blobs.write(Digest.from_bytes(b"garbage"), b"garbage")
    age(root)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))

    result, summary = collect(registry, options(dry_run=True))

    assert (
        summary.dry_run and summary.blobs == 1 and result.blobs == [Digest.from_bytes(b"garbage")]
    )
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


# -- the claim --------------------------------------------------------------------------------


def test_a_running_collection_keeps_others_out(registry: Registry) -> None:
    first = Claim(registry.driver, lease=0.4, settle=0.0)
    first.acquire()
    try:
        with pytest.raises(CollectionBusyError):
            Claim(registry.driver, lease=0.4, settle=0.0).acquire()
    finally:
        first.release()
    second = Claim(registry.driver, lease=0.4, settle=0.0)
    assert second.acquire().generation == 2
    second.release()
    assert read_state(registry.driver).active is False


def test_a_dead_collection_is_taken_over_and_its_leftovers_cleared(registry: Registry) -> None:
    driver = registry.driver
    driver.put_content(STATE_PATH, State(4, active=True, owner="dead", lease=0.3).dumps())
    driver.put_content(collection.sweeping_path(4), b'{"digests": []}')
    started = time.monotonic()
    claim = Claim(driver, lease=1.0, settle=0.0)
    assert claim.acquire().generation == 5
    assert time.monotonic() - started >= 0.3  # it watched the dead one for its lease
    assert driver.list(collection.GC_ROOT) == [collection.LOCK_PATH, STATE_PATH]
    claim.release()


def test_a_collection_that_cannot_renew_stops_before_deleting(
    registry: Registry, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stray = Digest.from_bytes(b"garbage")
    registry.blobs.write(stray, b"garbage")
    age(root)
    # Renewals never happen (the storage is unreachable for them), and the check says so.
    monkeypatch.setattr(Claim, "_renew_loop", lambda self: None)
    real_check = Claim.check

    def late_check(self: Claim) -> None:
        self._renewed -= self.lease  # as if half a lease went by without a renewal
        real_check(self)

    monkeypatch.setattr(Claim, "check", late_check)
    with pytest.raises(CollectionLostError):
        collect(registry, options())
    assert registry.blobs.exists(stray)


# -- the fence --------------------------------------------------------------------------------


class CountingReads:
    """Counts reads of the collection state through a registry's driver."""

    def __init__(self, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        driver = registry.driver
        real = driver.get_content

        def get_content(path: str) -> bytes:
            if path == STATE_PATH:
                self.count += 1
            return real(path)

        monkeypatch.setattr(driver, "get_content", get_content)


def test_without_a_collection_a_push_reads_the_state_once(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = registry.repository("gc/app")
    registry.fence.begin()
    reads = CountingReads(registry, monkeypatch)
    repo.blobs.put(b"one blob")
    assert reads.count == 1
    with pytest.raises(PathNotFoundError):
        registry.driver.list(collection.GC_ROOT)  # nothing written: no collection ever ran


def test_a_collection_between_begin_and_secure_sends_the_server_to_check(
    registry: Registry,
) -> None:
    fence = Fence(registry.driver)
    began = fence.begin()
    digest = Digest.from_bytes(b"x")
    need = [Need(digest, (paths.blob_data_path(digest),))]
    claim = Claim(registry.driver, lease=5.0, settle=0.0)
    claim.acquire()
    claim.release()  # a whole collection ran in between: the blob is not there
    assert fence.secure(began, lambda: need) == need


@pytest.fixture
def garbage(registry: Registry, root: Path) -> tuple[Repository, bytes, Digest]:
    """An old blob linked in ``gc/old`` that no manifest names: swept with ``manifests_only``."""
    data = b"a layer pushed long ago" * 100
    repo = registry.repository("gc/old")
    digest = repo.blobs.put(data).digest
    assert digest is not None
    age(root)
    return repo, data, digest


@pytest.mark.parametrize("touch_first", [True, False], ids=["spared", "repaired"])
def test_a_put_of_a_blob_being_swept_is_there_afterwards(
    registry: Registry,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    garbage: tuple[Repository, bytes, Digest],
    touch_first: bool,
) -> None:
    _, data, digest = garbage
    repo = registry.repository("gc/new")
    result, _ = in_sweep(
        registry, monkeypatch, lambda: repo.blobs.put(data), touch_first=touch_first
    )
    assert isinstance(result, Descriptor) and result.digest == digest
    assert repo.blobs.get(str(digest)) == data


@pytest.mark.parametrize("touch_first", [True, False], ids=["spared", "repaired"])
def test_an_upload_committed_onto_a_blob_being_swept_is_there_afterwards(
    registry: Registry,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    garbage: tuple[Repository, bytes, Digest],
    touch_first: bool,
) -> None:
    _, data, digest = garbage
    repo = registry.repository("gc/new")
    writer = repo.blobs.create()
    writer.write(data[:100])
    writer.write(data[100:])  # two writes: committed through the upload's file, not put whole
    result, _ = in_sweep(
        registry,
        monkeypatch,
        lambda: writer.commit(Descriptor("", len(data), digest)),
        touch_first=touch_first,
    )
    assert isinstance(result, Descriptor) and result.digest == digest
    assert repo.blobs.get(str(digest)) == data


@pytest.mark.parametrize("touch_first", [True, False], ids=["spared", "refused"])
def test_a_mount_of_a_blob_being_swept_mounts_it_or_refuses(
    registry: Registry,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    garbage: tuple[Repository, bytes, Digest],
    touch_first: bool,
) -> None:
    source, data, digest = garbage
    repo = registry.repository("gc/new")
    result, _ = in_sweep(
        registry,
        monkeypatch,
        lambda: repo.blobs.mount(source.name, str(digest)),
        touch_first=touch_first,
    )
    if touch_first:
        assert isinstance(result, Descriptor)
        assert repo.blobs.get(str(digest)) == data
    else:
        # Swept: the client is told to upload it (a mount's fallback), and no link is left.
        assert isinstance(result, BlobUnknownError)
        assert not repo.blobs.exists(str(digest))
        assert not (root / paths.layer_link_path(repo.name, digest).lstrip("/")).exists()


@pytest.mark.parametrize("touch_first", [True, False], ids=["spared", "refused"])
def test_a_manifest_naming_a_blob_being_swept_is_complete_or_refused(
    registry: Registry,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    touch_first: bool,
) -> None:
    """The client checked its layer exists (HEAD) before the collection, and puts the manifest
    while the layer's batch is swept: either the manifest is stored with its layer there, or it
    is refused (``MANIFEST_BLOB_UNKNOWN``) and leaves no revision behind. Never a 201 for an
    image that lacks a blob."""
    repo = registry.repository("gc/app")
    config = repo.blobs.put(b'{"os":"linux"}', "application/json")
    layer = repo.blobs.put(b"an old layer" * 60)
    age(root)
    body = manifest(config, layer)
    result, _ = in_sweep(
        registry, monkeypatch, lambda: repo.manifests.put("v1", body), touch_first=touch_first
    )
    if touch_first:
        assert isinstance(result, Descriptor)
        for digest in (config.digest, layer.digest):
            assert registry.blobs.exists(str(digest)) and repo.blobs.exists(str(digest))
        assert repo.manifests.exists(str(result.digest))
        assert repo.manifests.resolve("v1") == result.digest
    else:
        assert isinstance(result, ManifestBlobUnknownError)
        assert not repo.manifests.exists(str(Digest.from_bytes(body)))


def test_a_dead_collection_is_not_waited_for(registry: Registry, root: Path) -> None:
    """A collection that died in its batch leaves ``sweeping`` behind: a server relying on a
    digest in it waits one lease without a beat, then goes on."""
    repo = registry.repository("gc/app")
    put = repo.blobs.put(b"a layer")
    assert put.digest is not None
    driver = registry.driver
    driver.put_content(STATE_PATH, State(3, active=True, owner="dead", lease=0.4).dumps())
    driver.put_content(
        collection.sweeping_path(3), json.dumps({"digests": [str(put.digest)]}).encode()
    )
    started = time.monotonic()
    again = repo.blobs.put(b"a layer")
    waited = time.monotonic() - started
    assert again.digest == put.digest
    assert 0.4 <= waited < 5
    started = time.monotonic()
    repo.blobs.put(b"a layer")  # judged dead already: no second wait
    assert time.monotonic() - started < 0.4


# -- the schedule inside distblob serve -------------------------------------------------------


def test_the_schedule_collects_every_interval(
    registry: Registry, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stray = Digest.from_bytes(b"garbage")
    registry.blobs.write(stray, b"garbage")
    age(root)
    scheduled = ScheduledCollection(registry, options(), interval=3600)
    monkeypatch.setattr(scheduled, "delay", lambda: 0.05)
    ran: list[online.Summary | None] = []
    real = scheduled.run_once
    monkeypatch.setattr(scheduled, "run_once", lambda: ran.append(real()))

    async def main() -> None:
        with anyio.move_on_after(2):
            await scheduled.run()

    anyio.run(main)
    assert len(ran) >= 2  # it goes on after the first
    first = ran[0]
    assert first is not None and first.blobs == 1
    assert not registry.blobs.exists(stray)
    assert read_state(registry.driver).generation == len(ran)


def test_the_schedule_skips_a_round_another_replica_collects(registry: Registry) -> None:
    other = Claim(registry.driver, lease=0.4, settle=0.0)
    other.acquire()
    try:
        assert ScheduledCollection(registry, options(lease=0.4), interval=60).run_once() is None
    finally:
        other.release()
    assert read_state(registry.driver).generation == 1


@pytest.mark.parametrize("touch_first", [True, False], ids=["spared", "repaired"])
def test_an_ingested_file_of_a_blob_being_swept_is_there_afterwards(
    registry: Registry,
    root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    garbage: tuple[Repository, bytes, Digest],
    touch_first: bool,
) -> None:
    """``distblob ingest``'s one-call file put (the native engine's) goes through the fence
    too: a file whose blob was swept as it was linked is stored again from the file."""
    _, data, digest = garbage
    repo = registry.repository("gc/ingested")
    put_file = repo.blobs.file_putter()
    assert put_file is not None
    source = tmp_path / "layer.tar"
    source.write_bytes(data)
    with source.open("rb") as file:
        result, _ = in_sweep(
            registry,
            monkeypatch,
            lambda: put_file(file.fileno(), len(data)),
            touch_first=touch_first,
        )
    assert result == (digest, len(data))
    assert repo.blobs.get(str(digest)) == data


def test_the_work_yields_the_cpu_and_the_caller_and_the_claim_do_not(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marking and sweeping run in a thread of their own under ``SCHED_IDLE``; the caller's
    thread and the claim's renewing thread keep their policy (a starved collection still
    renews, so servers do not judge it dead)."""
    seen: dict[str, int] = {}
    real_plan = garbagecollect.plan

    def spying_plan(*args: object, **kwargs: object) -> object:
        seen["work"] = os.sched_getscheduler(0)
        renewer = next(t for t in threading.enumerate() if t.name == "gc-claim")
        assert renewer.native_id is not None
        seen["renewer"] = os.sched_getscheduler(renewer.native_id)
        return real_plan(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(online, "plan", spying_plan)
    before = os.sched_getscheduler(0)
    collect(registry, options(yield_cpu=True))
    assert seen == {"work": os.SCHED_IDLE, "renewer": before}
    assert os.sched_getscheduler(0) == before != os.SCHED_IDLE


def test_new_data_during_a_collection_needs_no_touch_unless_its_batch_is_swept(
    registry: Registry,
) -> None:
    """A push that stores new data (not a blob stored already) writes no ``touched``: the
    collection looks at the data again after writing its batch and spares it as young. Unless
    its digest is in the batch being swept right now: then it is touched and waited for."""
    driver = registry.driver
    driver.put_content(STATE_PATH, State(3, active=True, owner="gc", lease=60).dumps())
    repo = registry.repository("gc/app")
    repo.blobs.put(b"new data")
    assert collection.list_touched(driver, 3) == set()
    swept = Digest.from_bytes(b"new data, in the batch")
    driver.put_content(collection.sweeping_path(3), json.dumps({"digests": [swept]}).encode())
    done = threading.Event()

    def push() -> None:
        repo.blobs.put(b"new data, in the batch")
        done.set()

    put = threading.Thread(target=push)
    put.start()
    time.sleep(0.3)
    assert not done.is_set()  # waiting for the batch
    assert collection.list_touched(driver, 3) == {swept}
    driver.delete(collection.sweeping_path(3))  # the batch ends
    put.join(5)
    assert done.is_set() and repo.blobs.exists(str(swept))


def test_a_collection_between_a_manifest_and_its_tag_leaves_no_tag_to_nothing(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a grace period shorter than a push, a collection can start after a manifest put
    checked its blobs and before it wrote its tag, see the revision untagged and remove it:
    the put checks again after its tag and stores the manifest again."""
    repo = registry.repository("gc/app")
    config = repo.blobs.put(b'{"os":"linux"}', "application/json")
    layer = repo.blobs.put(b"a layer" * 30)
    body = manifest(config, layer)
    digest = Digest.from_bytes(body)
    real_tag = ManifestStore._tag
    ran: list[online.Summary] = []

    def tag_after_a_collection(self: ManifestStore, tag: str, target: Digest) -> None:
        if not ran:
            time.sleep(0.01)  # the revision is older than the collection's start
            ran.append(collect(registry, options(grace=0, delete_untagged=True))[1])
            assert not self.exists(str(target))  # removed as untagged
        real_tag(self, tag, target)

    monkeypatch.setattr(ManifestStore, "_tag", tag_after_a_collection)
    repo.manifests.put("v1", body)
    assert ran and ran[0].manifests == 1
    assert repo.manifests.resolve("v1") == digest
    assert repo.manifests.get("v1")[0] == body
