"""The ``ingest``, ``verify`` and ``gc`` subcommands, run in-process and once each as a process."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from distblob import Registry
from distblob.commands import ingest, main
from distblob.digest import Digest
from distblob.storage import collection, garbagecollect, online, paths
from distblob.storage.writer import BlobWriter

V2 = pathlib.PurePosixPath("docker/registry/v2")
FIXTURE_MANIFEST = "sha256:34673efd11ed5362d5ab2f4bd35a42c838f90de61be174d98c7e59f386f0a847"
FIXTURE_BLOBS = {
    FIXTURE_MANIFEST,
    "sha256:7c82fb2e242c797ae53dcee46276fd736825c9d1f5a026af380809fb676bbc5e",
    "sha256:6d105b0d41ba5d6928d4a7e559bf94155c02380ab8d7ad75f8dce89d4472f8e3",
    "sha256:cb980270fb23f414e99bb16653ffc4a685f370ff4d4626bd311925552791df20",
}


def local(root: pathlib.Path, driver_path: str) -> pathlib.Path:
    return root / driver_path.lstrip("/")


def stored_blobs(root: pathlib.Path) -> set[str]:
    return {str(d) for d in Registry.filesystem(root).blobs.enumerate()}


def uploads(root: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in root.rglob("_uploads/*") if p.is_dir()]


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> pathlib.Path:
    """Nested directories, an empty file, a duplicate, a file above the small-file limit."""
    src = tmp_path / "src"
    (src / "a" / "b" / "c").mkdir(parents=True)
    (src / "a" / "one.txt").write_bytes(b"one\n")
    (src / "a" / "b" / "empty").write_bytes(b"")
    (src / "a" / "b" / "c" / "dup.txt").write_bytes(b"one\n")
    (src / "big.bin").write_bytes(os.urandom(ingest.SMALL + 12345))
    (src / "top.bin").write_bytes(os.urandom(100_000))
    os.mkfifo(src / "a" / "fifo")  # not a regular file: skipped
    (src / "a" / "inside").symlink_to("../top.bin")  # stays inside: followed
    (src / "a" / "outside").symlink_to(tmp_path / "secret")  # leaves SRC: not followed
    (tmp_path / "secret").write_bytes(b"secret")
    return src


def ingest_args(root: pathlib.Path, *sources: pathlib.Path | str, **options: Any) -> list[str]:
    argv = ["ingest", *map(str, sources), "--root", str(root), "--repo", "test/app"]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def run_json(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> tuple[int, list[dict[str, Any]], str]:
    status = main(argv)
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    return status, lines, captured.err


# -- ingest ------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["native", "python"])
def test_ingest_tree_matches_sha256sum(
    tree: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], engine: str
) -> None:
    root = tmp_path / "reg"
    status, lines, err = run_json(
        capsys, ingest_args(root, tree, json=True, jobs=3, engine=engine, no_fsync=True)
    )
    assert status == 0, err
    assert err == ""  # stderr is no TTY: no progress bar
    by_path = {line["path"]: line for line in lines}
    expected = {"a/one.txt", "a/b/empty", "a/b/c/dup.txt", "big.bin", "top.bin", "a/inside"}
    assert set(by_path) == {str(tree / p) for p in expected}
    sums = subprocess.run(
        ["sha256sum", *sorted(by_path)], check=True, capture_output=True, text=True
    ).stdout
    for row in sums.splitlines():
        hexdigest, path = row.split(maxsplit=1)
        line = by_path[path]
        assert line["digest"] == f"sha256:{hexdigest}"
        assert line["size"] == os.path.getsize(path)
        assert line["mediaType"] == "application/octet-stream"
    repo = Registry.filesystem(root).repository("test/app")
    for line in lines:
        assert repo.blobs.get(line["digest"]) == pathlib.Path(line["path"]).read_bytes()
    assert len(stored_blobs(root)) == 4  # one.txt and dup.txt, top.bin and inside are one blob
    assert uploads(root) == []


def test_ingest_rerun_skips_stored_blobs(
    tree: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "reg"
    assert main(ingest_args(root, tree, json=True)) == 0
    first = capsys.readouterr().out
    inodes = {p: p.stat().st_ino for p in root.rglob("blobs/**/data")}
    calls: list[str] = []
    original = BlobWriter.write

    def counting(self: BlobWriter, source: Any) -> int:
        calls.append(self.id)
        return original(self, source)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BlobWriter, "write", counting)
        assert main(ingest_args(root, tree, json=True, media_type="application/x-test")) == 0
    second = capsys.readouterr().out
    assert calls == []  # the large file was hashed, found stored, and only linked
    assert {p: p.stat().st_ino for p in root.rglob("blobs/**/data")} == inodes
    assert sorted(json.loads(x)["digest"] for x in first.splitlines()) == sorted(
        json.loads(x)["digest"] for x in second.splitlines()
    )
    assert all(json.loads(x)["mediaType"] == "application/x-test" for x in second.splitlines())


def test_ingest_blake3(tree: pathlib.Path, tmp_path: pathlib.Path) -> None:
    root = tmp_path / "reg"
    assert main(ingest_args(root, tree / "big.bin", algorithm="blake3")) == 0
    data = (tree / "big.bin").read_bytes()
    assert stored_blobs(root) == {Digest.from_bytes(data, "blake3")}


def test_ingest_file_vanishing_mid_run(
    tree: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file listed but removed before it is read is reported; the others are stored."""
    root = tmp_path / "reg"
    victim = tree / "a" / "one.txt"
    original = ingest.Ingester.ingest

    def vanish_first(self: ingest.Ingester, source: ingest.Source, buffer: memoryview) -> Any:
        if source.path == str(victim):
            victim.unlink()
        return original(self, source, buffer)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ingest.Ingester, "ingest", vanish_first)
        status, lines, err = run_json(capsys, ingest_args(root, tree, json=True, jobs=2))
    assert status == 1
    assert f"{victim}: No such file or directory" in err
    assert len(lines) == 5 and str(victim) not in {line["path"] for line in lines}


def test_ingest_permission_denied_and_bad_sources(
    tree: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tests run as root, where chmod 000 denies nothing: os.open is made to refuse instead."""
    root = tmp_path / "reg"
    denied = str(tree / "top.bin")
    real_open = os.open

    def refusing(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if path == denied:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ingest.os, "open", refusing)
        status, lines, err = run_json(
            capsys,
            ingest_args(root, tree, tmp_path / "missing", tree / "a" / "fifo", json=True),
        )
    assert status == 1
    assert f"{denied}: Permission denied" in err
    assert "missing: No such file or directory" in err
    assert "fifo: not a regular file or directory" in err
    assert denied not in {line["path"] for line in lines}
    assert len(lines) == 5


def test_ingest_failed_commit_leaves_nothing(
    tree: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through an upload (the python engine's way; the native engine stores a local file in one
    call, whose failures tests/commands/test_ingest_fast.py covers)."""
    root = tmp_path / "reg"

    def broken(self: BlobWriter, provisional: Any) -> Any:
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BlobWriter, "commit", broken)
        status = main(ingest_args(root, tree / "big.bin", engine="python"))
    assert status == 1
    assert "No space left on device" in capsys.readouterr().err
    assert stored_blobs(root) == set()
    assert uploads(root) == []


def test_ingest_bad_repository_name(tmp_path: pathlib.Path, tree: pathlib.Path) -> None:
    argv = ingest_args(tmp_path / "reg", tree)
    argv[argv.index("test/app")] = "Bad/Name"
    assert main(argv) == 2


# -- verify ------------------------------------------------------------------------------------


def go_tree(tmp_path: pathlib.Path, go_fixtures: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "go"
    shutil.copytree(go_fixtures / "tree", root)
    return root


def test_verify_clean_go_tree(
    tmp_path: pathlib.Path, go_fixtures: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = go_tree(tmp_path, go_fixtures)
    assert main(["verify", "--root", str(root)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "4 blobs checked, 0 problem(s)" in captured.err


def test_verify_finds_damage(
    tree: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "reg"
    assert main(ingest_args(root, tree, json=True)) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    digests = {line["path"].rsplit("/", 1)[1]: Digest(line["digest"]) for line in lines}
    flipped = local(root, paths.blob_data_path(digests["big.bin"]))
    data = bytearray(flipped.read_bytes())
    data[1000] ^= 1
    flipped.write_bytes(data)
    truncated = local(root, paths.blob_data_path(digests["top.bin"]))
    truncated.write_bytes(truncated.read_bytes()[:-1])
    gone = Digest.from_bytes(b"never stored")
    dangling = local(root, paths.layer_link_path("test/app", gone))
    dangling.parent.mkdir(parents=True)
    dangling.write_text(gone)
    invalid = local(root, paths.manifest_tag_current_path("test/app", "v1"))
    invalid.parent.mkdir(parents=True)
    invalid.write_text("sha256:nope")
    orphan = local(root, paths.upload_dir_path("test/app", "0f0e"))
    orphan.mkdir(parents=True)
    (orphan / "data").write_bytes(b"x")

    assert main(["verify", "--root", str(root), "--json", "--jobs", "2"]) == 1
    findings = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    kinds = {(f["kind"], f["path"]) for f in findings}
    assert kinds == {
        ("corrupt", paths.blob_data_path(digests["big.bin"])),
        ("corrupt", paths.blob_data_path(digests["top.bin"])),
        ("dangling-link", paths.layer_link_path("test/app", gone)),
        ("invalid-link", paths.manifest_tag_current_path("test/app", "v1")),
        ("orphan-upload", paths.upload_dir_path("test/app", "0f0e")),
    }
    # On a filesystem each finding also names its file, which is what the text output shows.
    assert {f["file"] for f in findings} == {str(local(root, f["path"])) for f in findings}
    assert main(["verify", "--root", str(root)]) == 1
    text = capsys.readouterr().out
    assert f"orphan-upload: {orphan}: " in text
    assert f"corrupt: {local(root, paths.blob_data_path(digests['big.bin']))}: " in text
    assert main(["verify", "--root", str(tmp_path / "absent")]) == 2


def test_verify_reports_stale_uploads(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An upload left behind (a killed ingest, an abandoned push) is reported once older than
    --upload-age; a fresh one (a push in progress) is not."""
    root = tmp_path / "reg"
    registry = Registry.filesystem(root)
    fresh = registry.repository("up/app").blobs.create()
    fresh.write(b"in progress")
    fresh.close()
    old = registry.repository("up/app").blobs.create()
    old.close()
    started = local(root, paths.upload_started_at_path("up/app", old.id))
    started.write_text("2020-01-01T00:00:00Z")
    garbled = registry.repository("up/app").blobs.create()
    garbled.close()
    local(root, paths.upload_started_at_path("up/app", garbled.id)).write_text("yesterday")

    assert main(["verify", "--root", str(root), "--json"]) == 1
    findings = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {(f["kind"], f["path"]) for f in findings} == {
        ("stale-upload", paths.upload_dir_path("up/app", old.id)),
        ("orphan-upload", paths.upload_dir_path("up/app", garbled.id)),
    }
    assert "2020-01-01T00:00:00Z" in findings[0]["detail"] + findings[1]["detail"]
    # Age checks off: only the unreadable one is left.
    assert main(["verify", "--root", str(root), "--upload-age", "0"]) == 1
    out = capsys.readouterr().out
    assert "stale-upload" not in out and "orphan-upload" in out
    # A short age makes the fresh upload stale too.
    time.sleep(1.1)
    assert main(["verify", "--root", str(root), "--upload-age", "1s", "--json"]) == 1
    kinds = [json.loads(x)["kind"] for x in capsys.readouterr().out.splitlines()]
    assert kinds.count("stale-upload") == 2
    with pytest.raises(SystemExit) as bad:
        main(["verify", "--root", str(root), "--upload-age", "a week"])
    assert bad.value.code == 2


# -- gc ----------------------------------------------------------------------------------------


def add_stray_blob(root: pathlib.Path, data: bytes) -> Digest:
    digest = Digest.from_bytes(data)
    path = local(root, paths.blob_data_path(digest))
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return digest


def test_gc_keeps_image_and_links_removes_stray(
    tmp_path: pathlib.Path, go_fixtures: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = go_tree(tmp_path, go_fixtures)
    stray = add_stray_blob(root, b"unreferenced")
    before = sorted(p for p in root.rglob("*"))

    assert main(["gc", "--root", str(root), "--dry-run"]) == 0
    assert capsys.readouterr().out == f"would delete blob {stray}\n"
    assert sorted(p for p in root.rglob("*")) == before

    assert main(["gc", "--root", str(root)]) == 0
    assert capsys.readouterr().out == f"delete blob {stray}\n"
    assert stored_blobs(root) == FIXTURE_BLOBS
    assert main(["verify", "--root", str(root)]) == 0


def test_gc_follows_an_index_into_a_child_another_repository_marked_first(
    tmp_path: pathlib.Path,
) -> None:
    """Two repositories tag one index over one untagged child manifest; the first repository
    no longer has the child as a revision (deleted there). Its walk marks the child without
    following it; the second repository must still follow it to its layer and config."""
    registry = Registry.filesystem(tmp_path / "root")
    child_body = b""
    for name in ("x/a", "x/b"):
        blobs = registry.repository(name).blobs
        config = blobs.put(b'{"architecture":"amd64","os":"linux"}', "application/json")
        layer = blobs.put(b"the only layer", "application/vnd.oci.image.layer.v1.tar")
        child_body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": json.loads(config.to_json()),
                "layers": [json.loads(layer.to_json())],
            }
        ).encode()
        manifests = registry.repository(name).manifests
        child = manifests.put(str(Digest.from_bytes(child_body, "sha256")), child_body)
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [json.loads(child.to_json())],
            }
        ).encode()
        manifests.put("multi", index)
    child_digest = Digest.from_bytes(child_body, "sha256")
    revision = paths.manifest_revision_link_path("x/a", child_digest)
    shutil.rmtree(local(tmp_path / "root", revision).parent)
    for layer_links in (True, False):
        found = garbagecollect.plan(registry, delete_untagged=True, manifests_only=not layer_links)
        assert found.blobs == [] and found.manifests == [] and found.layer_links == []


def test_gc_delete_untagged_and_manifests_only(
    tmp_path: pathlib.Path, go_fixtures: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = go_tree(tmp_path, go_fixtures)
    shutil.rmtree(local(root, paths.manifest_tag_path("demo/app", "v1")) / "current")
    # Tagged: an index over the fixture manifest, so that manifest stays through the index.
    registry = Registry.filesystem(root)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"digest": FIXTURE_MANIFEST, "size": 1}],
        }
    ).encode()
    index_digest = add_stray_blob(root, index)
    for link in (
        paths.manifest_revision_link_path("demo/app", index_digest),
        paths.manifest_tag_current_path("demo/app", "v2"),
    ):
        local(root, link).parent.mkdir(parents=True)
        local(root, link).write_text(index_digest)
    plan = garbagecollect.plan(registry, delete_untagged=True)
    assert plan.manifests == [] and plan.blobs == []

    # Without the index, the untagged manifest goes; its layers stay, being linked.
    shutil.rmtree(local(root, paths.manifest_tag_path("demo/app", "v2")))
    assert main(["gc", "--root", str(root), "--delete-untagged"]) == 0
    out = capsys.readouterr().out
    assert f"delete manifest demo/app@{FIXTURE_MANIFEST}" in out
    assert stored_blobs(root) == FIXTURE_BLOBS - {FIXTURE_MANIFEST}
    assert not local(root, paths.manifest_revision_link_path("demo/app", FIXTURE_MANIFEST)).exists()
    assert (
        not local(root, paths.manifest_tag_index_path("demo/app", "v1"))
        .joinpath("sha256", Digest(FIXTURE_MANIFEST).encoded)
        .exists()
    )

    # distribution's rule: only manifests are roots, and layer links to swept blobs go too.
    assert main(["gc", "--root", str(root), "--manifests-only"]) == 0
    assert stored_blobs(root) == set()
    assert not any(root.rglob("_layers/**/link"))
    assert main(["verify", "--root", str(root)]) == 0


def test_gc_stops_on_unreadable_manifest(
    tmp_path: pathlib.Path, go_fixtures: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = go_tree(tmp_path, go_fixtures)
    shutil.rmtree(local(root, paths.blob_dir_path(FIXTURE_MANIFEST)))
    stray = add_stray_blob(root, b"unreferenced")
    assert main(["gc", "--root", str(root)]) == 1
    assert "nothing deleted" in capsys.readouterr().err
    assert stray in stored_blobs(root)


def test_gc_online_json_summary_and_grace(
    tmp_path: pathlib.Path, go_fixtures: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = go_tree(tmp_path, go_fixtures)
    stray = add_stray_blob(root, b"unreferenced")
    # Written just now: within the default grace period (1h), so nothing goes.
    assert main(["gc", "--root", str(root), "--online", "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["online"], summary["dry_run"], summary["generation"]) == (True, False, 1)
    assert (summary["blobs"], summary["young"]) == (0, 1)
    assert summary["stored"] == len(FIXTURE_BLOBS) + 1
    assert set(summary["seconds"]) >= {"claim", "list", "read", "sweep", "total"}
    assert "collection 1 claimed the storage" in captured.err
    assert stray in stored_blobs(root)

    # A dry run with the candidates, and nothing written (no claim: generation stays 1).
    assert main(["gc", "--root", str(root), "--online", "--grace", "0", "--dry-run", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["generation"] is None and summary["blobs"] == 1
    assert summary["bytes"] == len(b"unreferenced")
    assert summary["candidates"] == {"blobs": [stray], "manifests": [], "layer_links": []}
    assert stray in stored_blobs(root)

    assert main(["gc", "--root", str(root), "--online", "--grace", "0s", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["generation"], summary["blobs"], summary["bytes"]) == (2, 1, 12)
    assert stored_blobs(root) == FIXTURE_BLOBS
    assert main(["verify", "--root", str(root)]) == 0


def test_gc_online_refuses_while_another_collection_runs(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = Registry.filesystem(tmp_path / "root")
    claim = online.Claim(registry.driver, lease=3.0, settle=0.0)
    claim.acquire()
    try:
        assert main(["gc", "--root", str(tmp_path / "root"), "--online"]) == 3
    finally:
        claim.release()
    assert "collection 1 is running" in capsys.readouterr().err


def test_gc_every_collects_until_sigterm(tmp_path: pathlib.Path) -> None:
    """``--every 0``: collections back to back in one process, ended by SIGTERM between
    collections (or between batches), the claim released."""
    registry = Registry.filesystem(tmp_path / "root")
    registry.repository("gc/app").blobs.put(b"linked")
    code = "import sys; from distblob.commands import main; sys.exit(main(sys.argv[1:]))"
    argv = ["gc", "--root", str(tmp_path / "root"), "--online", "--every", "0", "--json"]
    process = subprocess.Popen(
        [sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if collection.read_state(registry.driver).generation >= 3:
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out.count(b'"online": true') >= 2
    state = collection.read_state(registry.driver)
    assert state.generation >= 3 and not state.active
    assert main(["gc", "--root", str(tmp_path), "--every", "1m"]) == 2  # only with --online


@pytest.mark.parametrize("grace", ["an hour", "-5", "1y"])
def test_gc_refuses_a_grace_that_is_no_duration(tmp_path: pathlib.Path, grace: str) -> None:
    with pytest.raises(SystemExit) as bad:
        main(["gc", "--root", str(tmp_path), "--online", "--grace", grace])
    assert bad.value.code == 2


# -- as processes ------------------------------------------------------------------------------


def test_commands_as_processes(
    tree: pathlib.Path, tmp_path: pathlib.Path, go_fixtures: pathlib.Path
) -> None:
    root = go_tree(tmp_path, go_fixtures)
    stray = add_stray_blob(root, b"stray")

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        code = "import sys; from distblob.commands import main; sys.exit(main(sys.argv[1:]))"
        return subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60
        )

    done = cli(*ingest_args(root, tree / "a", json=True, jobs=2))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    # one.txt, empty, dup.txt; "inside" points out of this SRC (to ../top.bin): not followed.
    assert len(done.stdout.splitlines()) == 3
    done = cli("verify", "--root", str(root))
    assert done.returncode == 0, done.stdout
    done = cli("gc", "--root", str(root))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"delete blob {stray}\n"
    assert len(stored_blobs(root)) == 4 + 2  # the fixture's and the tree's blobs
