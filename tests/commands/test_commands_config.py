"""``ingest``, ``verify`` and ``gc`` on the store a config names (``--config``, not ``--root``).

With ``--config`` the commands use the config's storage driver (a filesystem root or an S3
bucket, here on ``rclone serve s3``) and its blob descriptor cache, so ``gc`` clears what it
deletes from a Redis cache the registries share (a real ``redis-server`` here).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import yaml

from distblob import Registry
from distblob.commands import main
from distblob.config import build_registry, load_config
from distblob.descriptor import Descriptor
from distblob.errors import BlobUnknownError
from distblob.storage import paths
from distblob.storage.cache import RedisBlobDescriptorCache
from distblob.storage.driver import FilesystemDriver
from support.blobstore import payload, sha256
from support.redisserver import RedisServer
from support.s3server import RcloneS3

pytestmark = pytest.mark.timeout(120)

KEPT = payload(5000, seed=21)
STRAY = payload(6000, seed=22)


def write_config(path: pathlib.Path, doc: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump({"version": 0.1, **doc}))
    return str(path)


def fs_config(tmp_path: pathlib.Path, root: pathlib.Path, **extra: Any) -> str:
    storage = {"filesystem": {"rootdirectory": str(root)}, **extra.pop("storage", {})}
    return write_config(tmp_path / "config.yml", {"storage": storage, **extra})


def stray_blob(registry: Registry) -> None:
    """KEPT stays linked in ``keep/me``; STRAY is stored and its only link removed."""
    registry.repository("keep/me").blobs.put(KEPT)
    registry.repository("drop/me").blobs.put(STRAY)
    registry.driver.delete(paths.layer_link_path("drop/me", sha256(STRAY)).rsplit("/", 1)[0])


def test_root_and_config_exclude_each_other(tmp_path: pathlib.Path) -> None:
    config = fs_config(tmp_path, tmp_path / "root")
    for argv in (["verify"], ["gc", "--root", str(tmp_path), "--config", config]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2


def test_a_bad_config_is_refused_naming_the_key(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_config(tmp_path / "bad.yml", {"storage": {"filesystem": {"rootdir": "/x"}}})
    assert main(["verify", "--config", bad]) == 2
    assert "storage.filesystem.rootdir" in capsys.readouterr().err
    missing = fs_config(tmp_path, tmp_path / "absent")
    assert main(["gc", "--config", missing]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert not (tmp_path / "absent").exists()


def test_filesystem_config(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    stray_blob(Registry.filesystem(root))
    config = fs_config(tmp_path, root)
    assert main(["gc", "--config", config, "--dry-run"]) == 0
    assert f"would delete blob {sha256(STRAY)}" in capsys.readouterr().out
    assert main(["gc", "--config", config]) == 0
    assert set(Registry.filesystem(root).blobs.enumerate()) == {sha256(KEPT)}
    assert main(["verify", "--config", config]) == 0


def test_gc_clears_what_it_deletes_from_a_shared_redis_cache(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    root = tmp_path / "root"
    with RedisServer(redis_dir) as redis_server:
        # A registry process with the shared cache has answered for both blobs.
        serving = Registry(FilesystemDriver(root), descriptor_cache=redis_server.cache())
        stray_blob(serving)
        for data in (KEPT, STRAY):
            assert serving.blobs.stat(sha256(data)).size == len(data)
        client = redis_server.client()
        assert client.exists(f"blobs::{sha256(STRAY)}")

        config = fs_config(tmp_path, root, **redis_server.config())
        assert main(["gc", "--config", config]) == 0
        assert "unreachable" not in capsys.readouterr().err
        assert not client.exists(f"blobs::{sha256(STRAY)}")
        assert client.exists(f"blobs::{sha256(KEPT)}")
        # Another registry on the same cache no longer answers for the deleted blob.
        replica = Registry(FilesystemDriver(root), descriptor_cache=redis_server.cache())
        with pytest.raises(BlobUnknownError):
            replica.blobs.stat(sha256(STRAY))
        assert replica.blobs.stat(sha256(KEPT)).size == len(KEPT)


def test_gc_keeps_in_storage_the_clears_redis_missed(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    root = tmp_path / "root"
    with RedisServer(redis_dir) as redis_server:
        serving = Registry(FilesystemDriver(root), descriptor_cache=redis_server.cache())
        stray_blob(serving)
        assert serving.blobs.stat(sha256(STRAY)).size == len(STRAY)
        config = fs_config(tmp_path, root, **redis_server.config())
        redis_server.stop(save=True)
        assert main(["gc", "--config", config]) == 0  # gc runs, and exits, during the outage
        assert "kept in storage" in capsys.readouterr().err
        assert FilesystemDriver(root).list(paths.CACHE_CLEARS_ROOT)
        redis_server.start()
        client = redis_server.client()
        assert client.exists(f"blobs::{sha256(STRAY)}")  # Redis came back with the entry
        # The next registry to start on the config applies the clear before it trusts Redis.
        registry = build_registry(load_config(config))
        cache = registry.descriptor_cache
        assert isinstance(cache, RedisBlobDescriptorCache)
        assert cache.wait_available(timeout=30)
        assert not client.exists(f"blobs::{sha256(STRAY)}")
        assert client.exists(f"blobs::{sha256(KEPT)}")
        assert FilesystemDriver(root).list(paths.CACHE_CLEARS_ROOT) == []
        with pytest.raises(BlobUnknownError):
            registry.blobs.stat(sha256(STRAY))
        cache.close()


def test_ingest_verify_gc_on_s3(
    s3_server: RcloneS3, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = s3_server.new_bucket()
    config = write_config(
        tmp_path / "s3.yml",
        {"storage": {"s3": s3_server.parameters(bucket, rootdirectory="/registry")}},
    )
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    files = {src / "a.bin": payload(300_000, seed=23), src / "sub" / "b.txt": b"bee\n"}
    for path, data in files.items():
        path.write_bytes(data)

    assert main(["ingest", str(src), "--config", config, "--repo", "s3/app", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(line["digest"] for line in lines) == sorted(
        str(sha256(data)) for data in files.values()
    )
    assert main(["verify", "--config", config]) == 0
    assert main(["gc", "--config", config]) == 0  # linked blobs are roots: nothing goes
    capsys.readouterr()

    # The blobs are in the bucket, under the config's rootdirectory, readable by a registry.
    from distblob.storage.driver.s3 import S3Driver

    driver = S3Driver.from_parameters(s3_server.parameters(bucket, rootdirectory="/registry"))
    registry = Registry(driver)
    for data in files.values():
        digest = sha256(data)
        assert registry.repository("s3/app").blobs.stat(digest) == Descriptor(
            media_type=registry.repository("s3/app").blobs.stat(digest).media_type,
            size=len(data),
            digest=digest,
        )
        with registry.blobs.open(digest) as reader:
            assert reader.read() == data

    # A flipped byte in the bucket is found.
    key = f"registry{paths.blob_data_path(sha256(files[src / 'sub' / 'b.txt']))}"
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=b"bea\n")
    assert main(["verify", "--config", config]) == 1
    assert str(sha256(b"bee\n")) in capsys.readouterr().out
