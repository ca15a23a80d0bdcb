"""Online garbage collection under load: two ``distblob serve`` replicas on one storage take
pushes, retags, tag deletes, mounts and re-pushed garbage from several clients while
``distblob gc --online --delete-untagged --manifests-only`` runs back to back from another
process (the harness: ``tests/support/gcstress.py``). On a filesystem root and on rclone S3.

Afterwards every manifest answered 201 and not deleted has every blob it names, with the right
bytes; every live tag resolves; skopeo copies a sample; and a last collection with no pushes
removes the blobs of deleted images. The same stress against the Go registry's collector
breaks images (``tests/interop/test_gc_stress_go.py``, ``benches/gc_stress.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from distblob.storage.driver.s3 import MIN_CHUNK_SIZE
from support.gcstress import (
    MIB,
    StressConfig,
    deleted_blobs_gone,
    distblob_collector,
    live_refs,
    run_stress,
    skopeo_check,
    verify,
)
from support.s3server import RcloneS3
from support.server import DistblobServer, S3DistblobServer

SECRET = "gc-stress-test"
#: Longer than any push here takes from its first blob to its manifest.
GRACE = 3.0
CONFIG = StressConfig(duration=15.0, clients=3, large_size=4 * MIB, seed=5)


def stress_and_check(
    replicas: Sequence[DistblobServer],
    store: Sequence[str],
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    urls = [replica.url for replica in replicas]

    def logs() -> list[str]:
        """The replicas' warnings and errors, for a failure's message."""
        lines = [line for r in replicas for line in r.log_text().splitlines()]
        return [line for line in lines if "WARNING" in line or "ERROR" in line][-20:]

    result = run_stress(urls, CONFIG, distblob_collector(store, grace=GRACE), collect_pause=0.0)
    found = verify(urls[0], result)

    assert result.collections.runs >= 2, result.collections.messages
    assert result.collections.failures == 0, result.collections.messages
    assert result.images_pushed >= 20
    assert result.errors == {}, (result.errors, result.error_examples, logs())
    # Nothing a client was answered 201 for lost a blob, tagged or not yet collected.
    assert found.broken_images == 0, found.summary()
    assert found.tags_checked == found.live_tags == len(result.live)
    copied = skopeo_check(urls[0].split("://", 1)[1], live_refs(result), 4, seed=CONFIG.seed)
    assert copied.failures == [], copied.failures
    distblob_collector(store, grace=0)()  # a last collection with no pushes: the garbage goes
    gone = deleted_blobs_gone(urls[0], result, untagged_collected=True)
    assert gone.still_there == 0, gone.summary()
    assert verify(urls[0], result).broken_images == 0
    with capsys.disabled():
        print(f"\n{name}:", result.summary(), found.summary(), gone.summary(), sep="\n")


@pytest.fixture
def filesystem_replicas(tmp_path: Path) -> Iterator[tuple[Path, list[DistblobServer]]]:
    root = tmp_path / "root"
    a = DistblobServer(root, secret=SECRET, delete_enabled=True)
    b = DistblobServer(root, secret=SECRET, delete_enabled=True)
    with a, b:
        yield root, [a, b]
        for replica in (a, b):
            assert "Traceback" not in replica.log_text(), replica.log_text()


def test_two_replicas_on_a_filesystem_root_lose_nothing_to_online_collections(
    filesystem_replicas: tuple[Path, list[DistblobServer]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, replicas = filesystem_replicas
    stress_and_check(replicas, ["--root", str(root)], capsys, "filesystem, 2 replicas")


def test_two_replicas_on_s3_lose_nothing_to_online_collections(
    s3_server: RcloneS3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parameters = s3_server.parameters(s3_server.new_bucket("gcstress"), chunksize=MIN_CHUNK_SIZE)
    config = tmp_path / "gc.yml"
    config.write_text(json.dumps({"version": 0.1, "storage": {"s3": parameters}}))
    a = S3DistblobServer(tmp_path / "a", parameters, secret=SECRET)
    b = S3DistblobServer(tmp_path / "b", parameters, secret=SECRET)
    with a, b:
        stress_and_check([a, b], ["--config", str(config)], capsys, "rclone S3, 2 replicas")
        for replica in (a, b):
            assert "Traceback" not in replica.log_text(), replica.log_text()
