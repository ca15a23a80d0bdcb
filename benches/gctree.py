"""The store ``benches.gc`` collects: a registry tree in distribution's layout, written directly.

Pushing 100,000 blobs over HTTP would take many minutes, so the tree is written straight to the
filesystem, in the layout of :mod:`distblob.storage.paths`: blob data under
``blobs/sha256/<hh>/<hex>/data`` and ``link`` files (``sha256:<hex>``, no newline) under
``repositories/<name>``. Every blob is real (random bytes, 64 to 512 of them, and their sha256
digest); manifests are OCI image manifests whose descriptors give the real digests and sizes of
their config and layers, stored as blobs like any other.

What the tree holds, for ``blobs`` blobs (:func:`shape_of` works the counts out exactly):

- ``blobs // 100`` repositories of :data:`IMAGES` images each. Every image has a manifest
  (revision link), a config and layers (``_layers`` links); the first :data:`UNTAGGED` images of
  a repository are earlier ``latest`` images (revisions that the ``latest`` tag's index still
  lists, no current tag), the others are tagged ``v<n>``, the last one ``latest`` too.
  Each image has layers of its own and :data:`BASE_LAYERS` base layers taken in turn from a
  pool shared by every repository (one blob in twenty of the referenced ones), so that each
  base layer is in several repositories.
- One blob in ten is referenced by nothing: nine in ten of those are the manifests, configs and
  own layers of deleted images (their revision links, tags and layer links removed), whose base
  layers stay referenced by other images; the rest were never linked anywhere (abandoned pushes).

No unreferenced blob has a layer link in any repository, so distribution's garbage-collect
(which marks from manifest revisions only) and ``distblob gc`` (which by default also keeps
what a ``_layers`` link names) delete the same set: exactly :attr:`Tree.garbage`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass, field

#: Images per repository.
IMAGES = 8
#: Of them, the first ones are earlier ``latest`` images: revisions without a current tag.
UNTAGGED = 2
#: Layers each image takes from the pool shared by every repository.
BASE_LAYERS = 2
#: Bump when the tree's shape changes, so that trees cached by an older version are rebuilt.
LAYOUT_VERSION = 1

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class Shape:
    """How many of everything: :func:`shape_of` derives it from the blob count."""

    blobs: int
    repositories: int
    pool: int  # base layers shared between repositories
    own_layers: list[int]  # per live image, repository by repository
    deleted_own_layers: list[int]  # per deleted image
    orphans: int  # blobs never linked anywhere
    seed: int

    @property
    def garbage(self) -> int:
        return len(self.deleted_own_layers) * 2 + sum(self.deleted_own_layers) + self.orphans

    def key(self) -> str:
        """The name of the cached tree of this shape."""
        return f"v{LAYOUT_VERSION}-{self.blobs}b-{self.repositories}r-s{self.seed}"


@dataclass
class Tree:
    """What was written: counts, and the digests (hex) no manifest revision references."""

    shape: Shape
    images: int = 0
    layer_links: int = 0
    tags: int = 0
    garbage: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` integers that differ by one at most."""
    quotient, remainder = divmod(total, parts)
    return [quotient + (1 if i < remainder else 0) for i in range(parts)]


def shape_of(blobs: int, repositories: int | None = None, seed: int = 1) -> Shape:
    """The counts of a tree of exactly ``blobs`` blobs, one in ten unreferenced."""
    repositories = repositories or max(1, blobs // 100)
    garbage = blobs // 10
    live = blobs - garbage
    orphans = garbage // 10
    pool = max(BASE_LAYERS, live // 20)
    images = repositories * IMAGES
    own = live - pool - 2 * images  # a manifest and a config per image, then its own layers
    if own < images or images * BASE_LAYERS < pool:
        raise ValueError(f"{blobs} blobs do not fit {repositories} repositories")
    per_image = 2 + own / images
    deleted = max(1, round((garbage - orphans) / per_image))
    return Shape(
        blobs=blobs,
        repositories=repositories,
        pool=pool,
        own_layers=split(own, images),
        deleted_own_layers=split(garbage - orphans - 2 * deleted, deleted),
        orphans=orphans,
        seed=seed,
    )


class _Writer:
    """Writes blobs and links under one root, directories made as it goes."""

    def __init__(self, root: str, rng: random.Random) -> None:
        self.v2 = os.path.join(root, "docker", "registry", "v2")
        self.blobs = os.path.join(self.v2, "blobs", "sha256")
        self.rng = rng
        self.count = 0
        for prefix in range(256):
            os.makedirs(os.path.join(self.blobs, f"{prefix:02x}"))

    def blob(self, data: bytes) -> dict[str, object]:
        """Store ``data``; its descriptor (without a media type)."""
        encoded = hashlib.sha256(data).hexdigest()
        directory = os.path.join(self.blobs, encoded[:2], encoded)
        os.mkdir(directory)
        _write(os.path.join(directory, "data"), data)
        self.count += 1
        return {"digest": f"sha256:{encoded}", "size": len(data)}

    def random_blob(self, media_type: str = OCI_LAYER) -> dict[str, object]:
        data = self.rng.randbytes(self.rng.randint(64, 512))
        return {"mediaType": media_type, **self.blob(data)}

    def image(self, base: list[dict[str, object]], own: int) -> dict[str, object]:
        """An image's layers, config and manifest stored; its manifest's descriptor, with the
        descriptors it references under ``references``."""
        layers = base + [self.random_blob() for _ in range(own)]
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"bench.nonce": self.rng.randbytes(8).hex()}},
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
        }
        config_descriptor = {"mediaType": OCI_CONFIG, **self.blob(_json(config))}
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_descriptor,
            "layers": layers,
        }
        descriptor = {"mediaType": OCI_MANIFEST, **self.blob(_json(manifest))}
        return {**descriptor, "references": [config_descriptor, *layers]}

    def link(self, repository: str, *parts: str, digest: object) -> None:
        """``repositories/<repository>/<parts...>/link`` naming ``digest``."""
        directory = os.path.join(self.v2, "repositories", repository, *parts)
        os.makedirs(directory, exist_ok=True)
        _write(os.path.join(directory, "link"), str(digest).encode())


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _json(value: object) -> bytes:
    return json.dumps(value, indent=3).encode()


def _hex(descriptor: dict[str, object]) -> str:
    return str(descriptor["digest"]).removeprefix("sha256:")


def repository_name(index: int) -> str:
    """Two components, as most names on a registry: ``team07/app0712``."""
    return f"team{index // 50:02d}/app{index:04d}"


def _link_repository(
    writer: _Writer, tree: Tree, name: str, images: list[dict[str, object]]
) -> None:
    """The revision, layer and tag links of one repository's images."""
    layers: set[str] = set()
    for descriptor in images:
        parts = ("_manifests", "revisions", "sha256", _hex(descriptor))
        writer.link(name, *parts, digest=descriptor["digest"])
        references = descriptor["references"]
        assert isinstance(references, list)
        layers.update(_hex(reference) for reference in references)
    for encoded in sorted(layers):
        writer.link(name, "_layers", "sha256", encoded, digest=f"sha256:{encoded}")
    tree.layer_links += len(layers)
    latest = [*images[:UNTAGGED], images[-1]]
    for number, descriptor in enumerate(images[UNTAGGED:], start=UNTAGGED):
        _tag(writer, name, f"v{number}", [descriptor])
    _tag(writer, name, "latest", latest)
    tree.tags += len(images) - UNTAGGED + 1


def _tag(writer: _Writer, name: str, tag: str, history: list[dict[str, object]]) -> None:
    """A tag pointing at the last of ``history``, each of which its index lists."""
    for descriptor in history:
        parts = ("_manifests", "tags", tag, "index", "sha256", _hex(descriptor))
        writer.link(name, *parts, digest=descriptor["digest"])
    writer.link(name, "_manifests", "tags", tag, "current", digest=history[-1]["digest"])


def build(root: str, shape: Shape) -> Tree:
    """Write the tree of ``shape`` under ``root`` (which must not hold one yet)."""
    rng = random.Random(shape.seed)
    writer = _Writer(root, rng)
    tree = Tree(shape)
    pool = [writer.random_blob() for _ in range(shape.pool)]
    pool_digests = {_hex(layer) for layer in pool}
    own = iter(shape.own_layers)
    for index in range(shape.repositories):
        images = []
        for _ in range(IMAGES):
            # Round the pool in turn, so that every base layer is some live image's.
            first = tree.images * BASE_LAYERS
            base = [pool[(first + i) % len(pool)] for i in range(BASE_LAYERS)]
            images.append(writer.image(base, next(own)))
            tree.images += 1
        _link_repository(writer, tree, repository_name(index), images)
    for count in shape.deleted_own_layers:
        deleted = writer.image(rng.sample(pool, BASE_LAYERS), count)
        references = deleted["references"]
        assert isinstance(references, list)
        tree.garbage.append(_hex(deleted))
        tree.garbage.extend(_hex(r) for r in references if _hex(r) not in pool_digests)
    tree.garbage.extend(_hex(writer.random_blob()) for _ in range(shape.orphans))
    assert len(tree.garbage) == shape.garbage and writer.count == shape.blobs
    return tree


__all__ = ["IMAGES", "LAYOUT_VERSION", "Shape", "Tree", "build", "repository_name", "shape_of"]
