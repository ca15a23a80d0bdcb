"""The Go registry fixtures (``tests/fixtures/go-registry``): what they hold, and how the real
registry writes them again.

The fixtures are ground truth written by Debian's ``docker-registry`` 2.8.2 and ``skopeo``: a
chunked upload to repository ``fixture`` (its hash states as the registry left them before the
final PUT, then the committed blob) and a one-layer OCI image pushed as ``demo/app:v1``.
:func:`regenerate` drives the same registry through the same steps into a new directory;
:func:`differences` says which files came out different. Everything is a function of the inputs
below except the upload's ``startedat`` (the wall-clock time of the POST): see
``tests/fixtures/go-registry/README.md``.
"""

from __future__ import annotations

import argparse
import filecmp
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import struct
import sys
import tarfile
import tempfile
import urllib.parse
import zlib
from collections.abc import Sequence
from pathlib import Path

from support.goregistry import REGISTRY_BIN, GoRegistry, OciImage, sha256_digest, skopeo_push

#: The committed fixtures.
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "go-registry"
#: What a fixture directory holds (the README and the script beside them are not fixtures).
ENTRIES = ("upload.json", "upload", "tree")
#: Files that differ from run to run: the upload's start time.
VOLATILE = frozenset({"upload/startedat"})

V2 = Path("docker/registry/v2")

# -- the upload ---------------------------------------------------------------------------------

UPLOAD_REPO = "fixture"
SEED_PREFIX = "distblob-fixture-public-"
LENGTH = 225_289
#: PATCH sizes: across a block boundary, exactly one block, a partial block after whole ones,
#: and large chunks; the final PUT carries no data.
CHUNKS = (1, 63, 64, 65, 1000, 4096, 100_000, 70_000, 50_000)

# -- the image ----------------------------------------------------------------------------------

IMAGE_REPO = "demo/app"
IMAGE_TAG = "v1"
IMAGE_CREATED = "2026-11-28T00:00:00Z"
LAYER_FILE = "hello.txt"
LAYER_TEXT = b"hello from a hand-made OCI image\n"


def fixture_data(prefix: str = SEED_PREFIX, length: int = LENGTH) -> bytes:
    """Regenerate the upload: sha256(prefix + i) digests for i = 0, 1, ... cut to ``length``."""
    out = bytearray()
    i = 0
    while len(out) < length:
        out += hashlib.sha256(f"{prefix}{i}".encode()).digest()
        i += 1
    return bytes(out[:length])


def layer_tar() -> bytes:
    """The layer's tar: one file, root-owned, mode 0644, mtime 0 (ustar, 10 KiB records)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(LAYER_FILE)
        info.size = len(LAYER_TEXT)
        info.mode = 0o644
        info.mtime = 0
        info.uname = info.gname = "root"
        tar.addfile(info, io.BytesIO(LAYER_TEXT))
    return buffer.getvalue()


def layer_gzip(raw: bytes) -> bytes:
    """``raw`` gzipped as the fixture's layer is: level 9, mtime 0 and OS byte 255 ("unknown").

    The header is written here rather than by :func:`gzip.compress`, whose OS byte depends on
    the Python version (3.11 writes 255, later versions 3); the deflate stream is zlib's.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = compressor.compress(raw) + compressor.flush()
    header = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x02\xff"
    trailer = struct.pack("<II", zlib.crc32(raw), len(raw) & 0xFFFFFFFF)
    data = header + body + trailer
    assert gzip.decompress(data) == raw
    return data


def _json(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def demo_image(path: Path) -> OciImage:
    """Write the fixture's image as an OCI layout at ``path`` (tagged :data:`IMAGE_TAG`)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = sha256_digest(data)
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return digest

    raw = layer_tar()
    layer = layer_gzip(raw)
    layer_digest = put(layer)
    config = _json(
        {
            "created": IMAGE_CREATED,
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": [f"/{LAYER_FILE}"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(raw)]},
            "history": [{"created": IMAGE_CREATED, "created_by": "make_oci.py"}],
        }
    )
    config_digest = put(config)
    layer_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": len(layer)}],
        }
    )
    manifest_digest = put(manifest)
    (path / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": IMAGE_TAG},
            }
        ],
    }
    (path / "index.json").write_bytes(_json(index))
    return OciImage(
        path=path,
        tag=IMAGE_TAG,
        manifest_digest=manifest_digest,
        manifest=manifest,
        config_digest=config_digest,
        config=config,
        layer_digests=[layer_digest],
        layer_media_types=[layer_type],
    )


def _prune_empty_dirs(root: Path) -> None:
    """Remove the directories left empty under ``root`` (git keeps none): the registry leaves
    ``_uploads`` behind after a commit."""
    # Bottom up, so a directory whose subdirectories were all removed goes too.
    for directory, _, _ in os.walk(root, topdown=False):
        if Path(directory) != root and not os.listdir(directory):
            os.rmdir(directory)


def regenerate(out: Path, *, binary: Path = REGISTRY_BIN) -> None:
    """Write the fixtures afresh into ``out`` (which must not exist) with the real registry.

    1. The registry, on a filesystem root ``out/tree``, takes a POST and one PATCH per entry of
       :data:`CHUNKS` to repository ``fixture``.
    2. The upload's directory, less its ``data`` file, is copied to ``out/upload``.
    3. A PUT with the digest and no body commits the upload.
    4. skopeo pushes :func:`demo_image` as ``demo/app:v1`` (digests preserved).
    5. The registry stops; empty directories are removed and ``upload.json`` is written.
    """
    assert sum(CHUNKS) == LENGTH
    data = fixture_data()
    digest = sha256_digest(data)
    out.mkdir(parents=True)
    root = out / "tree"
    with GoRegistry(root, binary=binary) as registry, registry.client() as client:
        location = client.start_upload(UPLOAD_REPO)
        upload_id = urllib.parse.urlsplit(location).path.rsplit("/", 1)[1]
        offset = 0
        for size in CHUNKS:
            location = client.patch(location, data[offset : offset + size], offset)
            offset += size
        upload_dir = root / V2 / "repositories" / UPLOAD_REPO / "_uploads" / upload_id
        shutil.copytree(upload_dir, out / "upload", ignore=shutil.ignore_patterns("data"))
        client.finish(location, digest)
        with tempfile.TemporaryDirectory(prefix="go-fixtures-") as tmp:
            skopeo_push(demo_image(Path(tmp) / "oci"), registry.host, f"{IMAGE_REPO}:{IMAGE_TAG}")
    _prune_empty_dirs(root)
    states = out / "upload" / "hashstates" / "sha256"
    spec = {
        "generator": (
            f"concat(sha256(utf8('{SEED_PREFIX}' + str(i))).digest() for i in 0,1,2,...)"
            f" cut to {LENGTH} bytes"
        ),
        "seed_prefix": SEED_PREFIX,
        "length": LENGTH,
        "chunks": list(CHUNKS),
        "digest": digest,
        "offsets_with_state": sorted(int(state.name) for state in states.iterdir()),
    }
    (out / "upload.json").write_text(json.dumps(spec, indent=1))


def _files(root: Path) -> set[str]:
    found: set[str] = set()
    for entry in ENTRIES:
        path = root / entry
        if path.is_file():
            found.add(entry)
        elif path.is_dir():
            found.update(p.relative_to(root).as_posix() for p in path.rglob("*") if p.is_file())
    return found


def differences(expected: Path, actual: Path) -> list[str]:
    """The fixture files (relative paths) that are missing from one side or differ in bytes."""
    ours, theirs = _files(expected), _files(actual)
    differing = {
        name
        for name in ours & theirs
        if not filecmp.cmp(expected / name, actual / name, shallow=False)
    }
    return sorted(differing | (ours ^ theirs))


def started_at_is_valid(upload: Path) -> bool:
    """Whether ``upload/startedat`` holds what 2.8.2 writes: RFC 3339 UTC, whole seconds."""
    text = (upload / "startedat").read_text()
    return re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text) is not None


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of ``tests/fixtures/go-registry/regenerate.py``."""
    parser = argparse.ArgumentParser(
        description="Regenerate the Go registry fixtures with Debian's docker-registry 2.8.2 "
        "and skopeo, and compare them with the committed ones.",
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help=f"replace the committed fixtures in {FIXTURES} with the regenerated ones",
    )
    parser.add_argument("--registry", type=Path, default=REGISTRY_BIN, help="registry binary")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="go-fixtures-") as tmp:
        out = Path(tmp) / "go-registry"
        regenerate(out, binary=args.registry)
        differing = differences(FIXTURES, out)
        unexpected = [name for name in differing if name not in VOLATILE]
        for name in differing:
            why = "run-dependent" if name in VOLATILE else "DIFFERS"
            print(f"{why}: {name}")
        if not started_at_is_valid(out / "upload"):
            unexpected.append("upload/startedat (malformed)")
        if args.write:
            for entry in ENTRIES:
                target = FIXTURES / entry
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
                shutil.move(out / entry, target)
            print(f"wrote {FIXTURES}")
            return 0
    if unexpected:
        print(f"{len(unexpected)} file(s) differ from the committed fixtures", file=sys.stderr)
        return 1
    print(f"the committed fixtures are what the registry writes (but {', '.join(VOLATILE)})")
    return 0
