"""A garbage-collection stress harness for any registry: pushes while collections run, then checks.

Online garbage collection (collecting while the registry serves) must never take a blob that an
image answered 201 still names. This harness pushes images to one or more registry replicas (URLs
over one storage) from several client threads while another thread runs the caller's
``collect()`` back to back, then checks that every image still tagged pulls whole. It knows
nothing of the registry under test: the collection is a callable the caller gives (a subprocess
for the Go registry's ``garbage-collect``, :func:`command_collector`), so the same run drives the
Go registry 2.8.2, distblob on a filesystem root, or distblob replicas on S3.

What the clients do, as real clients do: ``HEAD`` every blob first and skip the upload when it is
there; otherwise upload it (``POST`` + ``PUT``, sometimes ``POST`` + ``PATCH`` + ``PUT``) or mount
it (``POST ?mount=&from=``) from another repository the client pushed it to; then ``PUT`` the
manifest under a tag. Between images a client sometimes retags an image (the same manifest under
another tag) and sometimes deletes one (by tag where the registry supports it, else by digest:
distribution 2.8 answers a ``DELETE`` by tag with 400 ``DIGEST_INVALID``). Layers are mostly small
and new, sometimes large, sometimes from a pool shared by every client, sometimes layers of an
image the client deleted earlier: pushing garbage again, past a ``HEAD`` that says it is there,
is where a collector that does not see the push in time loses a blob.

After the run, with no pushes: :func:`verify` GETs every live tag's manifest and every blob it
names (checking the sha256), and fetches untagged manifests by digest; :func:`skopeo_check` has
skopeo copy a sample of live tags; after one more collection, :func:`deleted_blobs_gone` checks
that the blobs only deleted manifests named answer 404.

The bookkeeping is exact: each tag belongs to one client (``c<client>-t<k>``) and every config
carries a nonce, so no two clients write the same tag or manifest, and each client's requests are
sequential. A request whose answer never came (a transport error) makes what it touched
*uncertain*, and verification leaves that out rather than guess.

Choices are deterministic given the seed: each client round draws from its own generator seeded
with ``(seed, client, round)``, so only the server's answers (and so the timing) change a run.
Blob contents are derived from a key (SHAKE-256), never kept: the memory held is the small record
of each manifest answered 201 and a bounded memory per client.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from support.goregistry import (
    OCI_CONFIG,
    OCI_LAYER_TAR,
    OCI_MANIFEST,
    RegistryClient,
    RegistryHTTPError,
    SkopeoError,
    skopeo_pull,
)

#: Where a client took a blob from: a new layer, the shared pool, the large pool, the layers of
#: images it deleted (``garbage``: pushed again), or the image's config.
ORIGINS = ("new", "shared", "large", "garbage", "config")
#: How a push got each blob into the repository: ``HEAD`` found it there (so the client did not
#: upload it), it was mounted from another repository, or it was uploaded.
HOWS = ("found", "mounted", "uploaded")

KIB = 1 << 10
MIB = 1 << 20
REPO_PREFIX = "stress/r"

#: Error codes with which a registry refuses a ``DELETE`` by tag (distribution 2.8 parses the
#: reference as a digest and answers ``DIGEST_INVALID``; the spec's answer is ``UNSUPPORTED``).
TAG_DELETE_REFUSALS = frozenset({"UNSUPPORTED", "DIGEST_INVALID", "MANIFEST_INVALID"})

#: Transport failures: the answer never came, so what the request did is unknown.
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)

Key = tuple[str, str]
"""``(repository, tag)`` or ``(repository, digest)``."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StressConfig:
    """What the clients do; probabilities are per image (per layer for the layer sources)."""

    duration: float = 60.0
    #: Stop each client after this many images even before ``duration`` (``None``: no limit).
    #: With no collection running, a run with a limit is the same every time.
    images_per_client: int | None = None
    clients: int = 4
    repositories: int = 6
    #: Tags each client owns in each repository (``c<client>-t<k>``): pushing under one it
    #: already uses moves the tag, and the image it left may be collected as untagged.
    tags_per_client: int = 4
    min_layers: int = 1
    max_layers: int = 6
    small_min: int = 1 * KIB
    small_max: int = 64 * KIB
    #: Size of the large layers, a pool of ``large_layers`` every client draws from.
    large_size: int = 8 * MIB
    large_layers: int = 3
    large_probability: float = 0.05
    #: A pool of small layers every client draws from (the same base layers in many images).
    shared_layers: int = 24
    share_probability: float = 0.3
    #: A layer of an image this client deleted or untagged earlier: garbage pushed again.
    garbage_probability: float = 0.2
    #: How many layers of deleted images a client remembers (the oldest are forgotten).
    garbage_memory: int = 64
    #: A blob missing from the repository is mounted from another repository the client pushed
    #: it to, when it knows one.
    mount_probability: float = 0.3
    #: An upload is ``POST`` + ``PATCH`` + ``PUT`` rather than ``POST`` + ``PUT``.
    chunked_probability: float = 0.2
    retag_probability: float = 0.2
    delete_probability: float = 0.2
    #: ``auto``: by tag until the registry refuses that, then by digest.
    delete_by: Literal["auto", "tag", "digest"] = "auto"
    #: How many digests a client remembers the repositories of (for mounts).
    known_blobs: int = 2048
    timeout: float = 60.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.clients < 1 or self.repositories < 1 or self.tags_per_client < 1:
            raise ValueError("clients, repositories and tags_per_client must be >= 1")
        if not 1 <= self.min_layers <= self.max_layers:
            raise ValueError("need 1 <= min_layers <= max_layers")
        if not 0 < self.small_min <= self.small_max:
            raise ValueError("need 0 < small_min <= small_max")
        sources = self.large_probability + self.share_probability + self.garbage_probability
        if sources > 1:
            raise ValueError("large, share and garbage probabilities add up to more than 1")

    @property
    def repos(self) -> list[str]:
        return [f"{REPO_PREFIX}{number}" for number in range(self.repositories)]


# --------------------------------------------------------------------------------------------
# Blobs and images
# --------------------------------------------------------------------------------------------


def content(key: str, size: int) -> bytes:
    """``size`` bytes derived from ``key``: the same key always gives the same blob."""
    return hashlib.shake_256(key.encode()).digest(size)


@dataclass(frozen=True)
class Blob:
    """A blob known by its key: its bytes are derived again when it is uploaded."""

    key: str
    size: int
    digest: str
    #: Bytes kept as they are (configs: small, not derived from the key).
    inline: bytes | None = None

    @classmethod
    def derived(cls, key: str, size: int) -> Blob:
        data = content(key, size)
        return cls(key, size, "sha256:" + hashlib.sha256(data).hexdigest())

    @classmethod
    def of(cls, key: str, data: bytes) -> Blob:
        return cls(key, len(data), "sha256:" + hashlib.sha256(data).hexdigest(), data)

    def data(self) -> bytes:
        return self.inline if self.inline is not None else content(self.key, self.size)


@dataclass(frozen=True)
class ManifestRecord:
    """A manifest answered 201: where, under which tag first, its digest, the blobs it names
    (config first) and their sources in that push (``"<origin>/<how>"``, see :data:`ORIGINS`
    and :data:`HOWS`), which client pushed it and when (seconds since the run started)."""

    repo: str
    tag: str
    digest: str
    blobs: tuple[str, ...]
    sources: tuple[str, ...]
    client: int
    time: float


@dataclass(frozen=True)
class Image:
    """An image a client built: its manifest body and the blobs behind it."""

    repo: str
    manifest: bytes
    digest: str
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (*self.layers, self.config)

    @property
    def named(self) -> tuple[str, ...]:
        """The digests the manifest names, config first."""
        return (self.config.digest, *(layer.digest for layer in self.layers))

    def record(
        self, tag: str, sources: Mapping[str, str], client: int, when: float
    ) -> ManifestRecord:
        """``sources``: each blob's ``"<origin>/<how>"``, by digest (``?`` when left out)."""
        named = tuple(sources.get(digest, "?") for digest in self.named)
        return ManifestRecord(self.repo, tag, self.digest, self.named, named, client, when)


def build_image(repo: str, layers: Sequence[Blob], nonce: str) -> Image:
    """An OCI image of ``layers`` (plain tar layers) whose config carries ``nonce``."""
    diff_ids = [layer.digest for layer in layers]
    config_doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"gcstress": nonce}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "gcstress"} for _ in layers],
    }
    config = Blob.of(f"config:{nonce}", json.dumps(config_doc, separators=(",", ":")).encode())
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [
            {"mediaType": OCI_LAYER_TAR, "digest": layer.digest, "size": layer.size}
            for layer in layers
        ],
    }
    manifest = json.dumps(manifest_doc, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    return Image(repo, manifest, digest, config, tuple(layers))


# --------------------------------------------------------------------------------------------
# Bookkeeping
# --------------------------------------------------------------------------------------------


class Ledger:
    """What the registry answered, kept exact under one lock: every manifest answered 201, the
    live tags, the deleted manifests, and what is uncertain; plus the run's counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.manifests: dict[Key, ManifestRecord] = {}
        self.live: dict[Key, str] = {}
        self.deleted: dict[Key, float] = {}
        #: Tags whose manifest PUT or DELETE got no answer: what they point at is unknown.
        self.uncertain_tags: set[Key] = set()
        #: Manifests whose PUT or DELETE got no answer, with the blobs they name.
        self.uncertain_manifests: dict[Key, tuple[str, ...]] = {}
        self.counts: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        #: The first few errors, with what they said and when (seconds since the epoch).
        self.error_examples: list[str] = []

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[name] += amount

    def refuse(self, step: str, error: RegistryHTTPError) -> None:
        codes = ",".join(sorted(set(error.codes))) or "-"
        with self._lock:
            self.refused[f"{step} {error.status} {codes}"] += 1

    def fail(self, step: str, error: BaseException) -> None:
        with self._lock:
            self.errors[f"{step} {type(error).__name__}"] += 1
            if len(self.error_examples) < 10:
                self.error_examples.append(f"{time.time():.3f} {step}: {error!r}")

    def tagged(self, record: ManifestRecord, tag: str, *, retag: bool) -> None:
        """``record`` was answered 201 under ``tag`` (for a retag: again, under a new tag)."""
        with self._lock:
            key = (record.repo, record.digest)
            self.manifests.setdefault(key, record)
            self.live[(record.repo, tag)] = record.digest
            self.uncertain_tags.discard((record.repo, tag))
            self.counts["retags" if retag else "images pushed"] += 1
            self.counts["manifest 201"] += 1

    def untagged(self, repo: str, tag: str) -> None:
        """A ``DELETE`` by tag was answered 202: the tag is gone, the manifest may be too."""
        with self._lock:
            self.live.pop((repo, tag), None)
            self.counts["tag deletes"] += 1

    def deleted_manifest(self, repo: str, digest: str, when: float) -> None:
        """A ``DELETE`` by digest was answered 202: the manifest and all its tags are gone."""
        with self._lock:
            for key in [k for k, d in self.live.items() if k[0] == repo and d == digest]:
                del self.live[key]
            self.deleted[(repo, digest)] = when
            self.counts["manifest deletes"] += 1

    def uncertain(self, repo: str, tag: str | None, image: Image | None) -> None:
        """A manifest request got no answer: leave its tag and manifest out of the checks."""
        with self._lock:
            if tag is not None:
                self._unsure_tag((repo, tag))
            if image is not None:
                self.uncertain_manifests[(repo, image.digest)] = image.named
                for key in [k for k, d in self.live.items() if k[0] == repo and d == image.digest]:
                    self._unsure_tag(key)
            self.counts["uncertain"] += 1

    def _unsure_tag(self, key: Key) -> None:
        """The tag may name what it named or something else: both are left out, and what it
        named keeps its blobs (it may still be tagged)."""
        self.uncertain_tags.add(key)
        old = self.live.pop(key, None)
        if old is not None:
            self.uncertain_manifests[(key[0], old)] = self.manifests[(key[0], old)].blobs


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class Collections:
    """What the collecting thread saw."""

    runs: int = 0
    failures: int = 0
    seconds: list[float] = field(default_factory=list)
    #: The first few failure messages.
    messages: list[str] = field(default_factory=list)


@dataclass
class StressResult:
    """A finished run: counters, what the registry answered, and the exact final bookkeeping."""

    config: StressConfig
    urls: list[str]
    elapsed: float
    counts: dict[str, int]
    #: Refused requests by ``"<step> <status> <codes>"``.
    refused: dict[str, int]
    #: Requests that got no answer, by ``"<step> <exception>"``.
    errors: dict[str, int]
    collections: Collections
    #: Every manifest answered 201, by ``(repo, digest)``.
    manifests: dict[Key, ManifestRecord]
    #: ``(repo, tag) -> digest`` at the end.
    live: dict[Key, str]
    #: ``(repo, digest) -> time`` of every manifest deleted by digest.
    deleted: dict[Key, float]
    uncertain_tags: set[Key]
    uncertain_manifests: dict[Key, tuple[str, ...]]
    #: How deletes were done in the end: ``tag``, ``digest`` or ``none`` (no delete was tried).
    delete_mode: str
    #: The first few requests that got no answer: when, which step, what was raised.
    error_examples: list[str] = field(default_factory=list)

    @property
    def images_pushed(self) -> int:
        return self.counts.get("images pushed", 0)

    def tagged_manifests(self) -> set[Key]:
        return {(repo, digest) for (repo, _), digest in self.live.items()}

    def untagged_manifests(self) -> set[Key]:
        """Manifests answered 201, neither deleted nor uncertain, that no live tag names."""
        tagged = self.tagged_manifests()
        return {
            key
            for key in self.manifests
            if key not in tagged and key not in self.deleted and key not in self.uncertain_manifests
        }

    def summary(self) -> str:
        """A few lines for a report."""
        collections = self.collections
        lines = [
            f"{self.elapsed:.1f} s, {self.config.clients} clients over {len(self.urls)} URL(s), "
            f"{self.config.repositories} repositories, seed {self.config.seed}",
            "counts: " + counts_line(self.counts),
            f"live tags {len(self.live)}, manifests answered 201 {len(self.manifests)}, "
            f"deleted {len(self.deleted)}, untagged {len(self.untagged_manifests())}, "
            f"uncertain tags {len(self.uncertain_tags)}, deletes by {self.delete_mode}",
            f"collections {collections.runs} ({collections.failures} failed)"
            + (
                f", {min(collections.seconds):.2f}-{max(collections.seconds):.2f} s each"
                if collections.seconds
                else ""
            ),
        ]
        lines += [f"  refused: {key}: {n}" for key, n in sorted(self.refused.items())]
        lines += [f"  no answer: {key}: {n}" for key, n in sorted(self.errors.items())]
        lines += [f"  collection failed: {message}" for message in collections.messages]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The clients
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pools:
    """Layers every client draws from."""

    shared: tuple[Blob, ...]
    large: tuple[Blob, ...]

    @classmethod
    def make(cls, config: StressConfig) -> _Pools:
        sizes = random.Random(f"{config.seed}/shared")
        shared = tuple(
            Blob.derived(
                f"{config.seed}/shared/{n}", sizes.randint(config.small_min, config.small_max)
            )
            for n in range(config.shared_layers)
        )
        large = tuple(
            Blob.derived(f"{config.seed}/large/{n}", config.large_size)
            for n in range(config.large_layers)
        )
        return cls(shared, large)


class _Client:
    """One pushing client: one connection to one URL, its own tags and memory, one thread."""

    def __init__(
        self, number: int, url: str, config: StressConfig, ledger: Ledger, pools: _Pools
    ) -> None:
        self.number = number
        self.config = config
        self.ledger = ledger
        self.pools = pools
        self.http = RegistryClient(url, timeout=config.timeout)
        self.start = 0.0
        #: This client's live tags and the images they name.
        self.images: dict[Key, Image] = {}
        #: Layers of images this client deleted or untagged: garbage to push again.
        self.garbage: deque[Blob] = deque(maxlen=config.garbage_memory)
        #: digest -> repositories this client pushed or mounted it to (most recent last).
        self.known: OrderedDict[str, list[str]] = OrderedDict()
        #: Whether ``DELETE`` by tag works here (``None``: not known yet).
        self.tag_delete: bool | None = {"auto": None, "tag": True, "digest": False}[
            config.delete_by
        ]
        #: What ended this client's thread other than its deadline (a bug: re-raised).
        self.crash: Exception | None = None

    def now(self) -> float:
        return time.monotonic() - self.start

    def run(self, start: float, deadline: float) -> None:
        self.start = start
        round_number = 0
        try:
            limit = self.config.images_per_client
            while time.monotonic() < deadline and (limit is None or round_number < limit):
                self.round(random.Random(f"{self.config.seed}/{self.number}/{round_number}"))
                round_number += 1
        except Exception as error:
            self.crash = error
        finally:
            self.http.close()

    def round(self, rng: random.Random) -> None:
        """Push one image, then perhaps retag one and perhaps delete one."""
        config = self.config
        repo = rng.choice(config.repos)
        tag = f"c{self.number}-t{rng.randrange(config.tags_per_client)}"
        image, origins = self.build(rng, repo)
        rolls = [rng.random() for _ in image.blobs]
        chunked = [rng.random() < config.chunked_probability for _ in image.blobs]
        retag, delete, pick = rng.random(), rng.random(), rng.random()
        self.ledger.count("images tried")
        hows = self.push_blobs(image, rolls, chunked)
        if hows is not None:
            sources = {d: sys.intern(f"{origins[d]}/{how}") for d, how in hows.items()}
            self.put_manifest(image, tag, sources)
        if retag < config.retag_probability:
            self.retag(rng, pick)
        if delete < config.delete_probability:
            self.delete(pick)

    # -- building ---------------------------------------------------------------------------

    def build(self, rng: random.Random, repo: str) -> tuple[Image, dict[str, str]]:
        """An image for ``repo``, and the origin of each of its blobs (see ORIGINS)."""
        config = self.config
        nonce = f"{config.seed}/{self.number}/{rng.getrandbits(64):016x}"
        layers: list[Blob] = []
        origins: dict[str, str] = {}
        for index in range(rng.randint(config.min_layers, config.max_layers)):
            source, pick = rng.random(), rng.random()
            size = rng.randint(config.small_min, config.small_max)
            layer, origin = self.layer(source, pick, size, f"{nonce}/{index}")
            if layer.digest not in origins:
                layers.append(layer)
                origins[layer.digest] = origin
        image = build_image(repo, layers, nonce)
        origins[image.config.digest] = "config"
        return image, origins

    def layer(self, source: float, pick: float, size: int, key: str) -> tuple[Blob, str]:
        """The layer the rolls ``source`` and ``pick`` (in [0, 1)) choose, and its origin."""
        config = self.config
        bounds = [config.large_probability, config.share_probability, config.garbage_probability]
        pools = (self.pools.large, self.pools.shared, self.garbage)
        for pool, bound, origin in zip(pools, bounds, ("large", "shared", "garbage"), strict=True):
            if source < bound and pool:
                return pool[int(pick * len(pool))], origin
            source -= bound
        return Blob.derived(key, size), "new"

    # -- pushing ----------------------------------------------------------------------------

    def push_blobs(
        self, image: Image, rolls: list[float], chunked: list[bool]
    ) -> dict[str, str] | None:
        """Every blob of ``image`` into its repository: how each got there (see :data:`HOWS`),
        or ``None`` once one fails."""
        sources: dict[str, str] = {}
        for blob, roll, in_chunks in zip(image.blobs, rolls, chunked, strict=True):
            try:
                sources[blob.digest] = self.push_blob(image.repo, blob, roll, in_chunks)
            except RegistryHTTPError as error:
                self.ledger.refuse(f"blob {error.method or '?'}", error)
                return None
            except TRANSPORT_ERRORS as error:
                self.http.close()
                self.ledger.fail("blob", error)
                return None
        return sources

    def push_blob(self, repo: str, blob: Blob, roll: float, chunked: bool) -> str:
        """``HEAD``, then nothing, a mount or an upload, as a client does; which (HOWS)."""
        head = self.http.head_blob(repo, blob.digest)
        if head.status == 200:
            self.ledger.count("blobs present")
            return "found"
        if head.status != 404:
            raise RegistryHTTPError(head.status, head.body, method="HEAD", target=blob.digest)
        source = self.mount_source(repo, blob.digest)
        if roll < self.config.mount_probability and source is not None:
            query = f"?mount={blob.digest}&from={source}"
            answer = self.http.request(
                "POST", f"/v2/{repo}/blobs/uploads/{query}", expect=(201, 202)
            )
            if answer.status == 201:
                self.ledger.count("blobs mounted")
                self.remember(blob.digest, repo)
                return "mounted"
            self.ledger.count("mounts refused")
            location = answer.headers.get("Location", "")
        else:
            location = self.http.start_upload(repo)
        data = blob.data()
        if chunked:
            half = len(data) // 2
            location = self.http.patch(location, data[:half], 0)
            self.http.finish(location, blob.digest, data[half:])
            self.ledger.count("chunked uploads")
        else:
            self.http.finish(location, blob.digest, data)
        self.ledger.count("blobs uploaded")
        self.ledger.count("bytes uploaded", len(data))
        self.remember(blob.digest, repo)
        return "uploaded"

    def mount_source(self, repo: str, digest: str) -> str | None:
        repos = [other for other in self.known.get(digest, ()) if other != repo]
        return repos[-1] if repos else None

    def remember(self, digest: str, repo: str) -> None:
        repos = self.known.pop(digest, [])
        if repo in repos:
            repos.remove(repo)
        repos.append(repo)
        self.known[digest] = repos
        while len(self.known) > self.config.known_blobs:
            self.known.popitem(last=False)

    def put_manifest(self, image: Image, tag: str, sources: Mapping[str, str] | None) -> bool:
        """PUT the manifest under ``tag``: a new image (``sources``: how its blobs got there) or,
        with ``None``, a retag."""
        retag = sources is None
        step = "retag PUT" if retag else "manifest PUT"
        try:
            headers = self.http.put_manifest(image.repo, tag, image.manifest, OCI_MANIFEST)
        except RegistryHTTPError as error:
            self.ledger.refuse(step, error)
            return False
        except TRANSPORT_ERRORS as error:
            self.http.close()
            self.ledger.fail(step, error)
            self.forget_tag(image.repo, tag)
            # A retag's manifest is there anyway (under its other tags): only the tag is unsure.
            self.ledger.uncertain(image.repo, tag, None if retag else image)
            return False
        answered = headers.get("Docker-Content-Digest")
        if answered not in (None, image.digest):
            self.ledger.count("wrong Docker-Content-Digest")
        self.forget_tag(image.repo, tag)
        self.images[(image.repo, tag)] = image
        record = image.record(tag, sources or {}, self.number, self.now())
        self.ledger.tagged(record, tag, retag=retag)
        return True

    def forget_tag(self, repo: str, tag: str) -> None:
        """``tag`` no longer names what it did; an image left without tags is garbage."""
        old = self.images.pop((repo, tag), None)
        if old is not None and old not in self.images.values():
            self.garbage.extend(old.layers)

    # -- retagging and deleting -------------------------------------------------------------

    def live_choice(self, pick: float) -> tuple[Key, Image] | None:
        if not self.images:
            return None
        keys = sorted(self.images)
        key = keys[int(pick * len(keys))]
        return key, self.images[key]

    def retag(self, rng: random.Random, pick: float) -> None:
        chosen = self.live_choice(pick)
        if chosen is None:
            return
        (_, tag), image = chosen
        others = [k for k in range(self.config.tags_per_client) if f"c{self.number}-t{k}" != tag]
        if not others:
            return
        self.put_manifest(image, f"c{self.number}-t{rng.choice(others)}", None)

    def delete(self, pick: float) -> None:
        chosen = self.live_choice(pick)
        if chosen is None:
            return
        (repo, tag), image = chosen
        if self.tag_delete is not False and self.delete_tag(repo, tag, image):
            return
        self.delete_digest(repo, image)

    def delete_tag(self, repo: str, tag: str, image: Image) -> bool:
        """``DELETE`` by tag; ``False`` when the registry does not do that (then by digest)."""
        try:
            self.http.request("DELETE", f"/v2/{repo}/manifests/{tag}", expect=(202,))
        except RegistryHTTPError as error:
            if error.status == 405 or set(error.codes) & TAG_DELETE_REFUSALS:
                self.tag_delete = False
                return False
            self.ledger.refuse("tag DELETE", error)
            return True
        except TRANSPORT_ERRORS as error:
            self.http.close()
            self.ledger.fail("tag DELETE", error)
            self.forget_tag(repo, tag)
            self.ledger.uncertain(repo, tag, None)
            return True
        self.tag_delete = True
        self.forget_tag(repo, tag)
        self.ledger.untagged(repo, tag)
        return True

    def delete_digest(self, repo: str, image: Image) -> None:
        try:
            self.http.request("DELETE", f"/v2/{repo}/manifests/{image.digest}", expect=(202,))
        except RegistryHTTPError as error:
            self.ledger.refuse("manifest DELETE", error)
            return
        except TRANSPORT_ERRORS as error:
            self.http.close()
            self.ledger.fail("manifest DELETE", error)
            for key in [k for k, other in self.images.items() if other is image]:
                self.forget_tag(*key)
            self.ledger.uncertain(repo, None, image)
            return
        self.ledger.deleted_manifest(repo, image.digest, self.now())
        for key in [k for k, other in self.images.items() if other is image]:
            self.forget_tag(*key)


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


class CollectError(RuntimeError):
    """A collection failed (the command's status and the end of its output)."""


def distblob_collector(
    store: Sequence[str], *, grace: float, delete_untagged: bool = True
) -> Callable[[], None]:
    """``distblob gc --online --manifests-only`` (and ``--delete-untagged``) on ``store``
    (``--root DIR`` or ``--config FILE``) with ``grace`` seconds, as another process."""
    argv = [sys.executable, "-m", "distblob.commands", "gc", *store, "--online"]
    argv += ["--grace", str(grace), "--manifests-only"]
    return command_collector(argv + (["--delete-untagged"] if delete_untagged else []))


def command_collector(argv: Sequence[str], *, timeout: float = 600.0) -> Callable[[], None]:
    """A ``collect()`` that runs ``argv`` and raises :class:`CollectError` when it fails."""
    command = [str(arg) for arg in argv]

    def collect() -> None:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            lines = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()
            tail = " | ".join(lines[-2:])[-600:]
            raise CollectError(f"{Path(command[0]).name} exited with {done.returncode}: {tail}")

    return collect


def _collect_loop(
    collect: Callable[[], None],
    pause: float,
    deadline: float,
    stop: threading.Event,
    seen: Collections,
) -> None:
    while not stop.is_set() and time.monotonic() < deadline:
        began = time.monotonic()
        try:
            collect()
        except Exception as error:  # A failed collection is counted, and the next one runs.
            seen.failures += 1
            if len(seen.messages) < 5:
                seen.messages.append(str(error)[:500])
        else:
            seen.runs += 1
        seen.seconds.append(time.monotonic() - began)
        stop.wait(max(0.0, min(pause, deadline - time.monotonic())))


def run_stress(
    urls: Sequence[str],
    config: StressConfig,
    collect: Callable[[], None] | None = None,
    collect_pause: float = 0.0,
) -> StressResult:
    """Push from ``config.clients`` threads (spread over ``urls`` round robin) for
    ``config.duration`` seconds (or until each pushed ``images_per_client``) while another
    thread calls ``collect()`` back to back, ``collect_pause`` seconds apart; wait for every
    thread to finish what it started."""
    if not urls:
        raise ValueError("need at least one URL")
    ledger = Ledger()
    pools = _Pools.make(config)
    clients = [
        _Client(n, urls[n % len(urls)], config, ledger, pools) for n in range(config.clients)
    ]
    seen = Collections()
    stop = threading.Event()
    start = time.monotonic()
    deadline = start + config.duration
    pushers = [
        threading.Thread(target=client.run, args=(start, deadline), name=f"gcstress-{n}")
        for n, client in enumerate(clients)
    ]
    collector = threading.Thread(
        target=_collect_loop,
        args=(collect, collect_pause, deadline, stop, seen),
        name="gcstress-collect",
    )
    for thread in pushers:
        thread.start()
    if collect is not None:
        collector.start()
    try:
        for thread in pushers:
            thread.join()
    finally:
        # The collection under way finishes; no other starts once the clients are done.
        stop.set()
        if collect is not None:
            collector.join()
    for client in clients:
        if client.crash is not None:
            raise RuntimeError(f"client {client.number} crashed") from client.crash
    modes = {client.tag_delete for client in clients}
    delete_mode = "tag" if True in modes else "digest" if False in modes else "none"
    return StressResult(
        config=config,
        urls=list(urls),
        elapsed=time.monotonic() - start,
        counts=dict(ledger.counts),
        refused=dict(ledger.refused),
        errors=dict(ledger.errors),
        error_examples=list(ledger.error_examples),
        collections=seen,
        manifests=ledger.manifests,
        live=ledger.live,
        deleted=ledger.deleted,
        uncertain_tags=ledger.uncertain_tags,
        uncertain_manifests=ledger.uncertain_manifests,
        delete_mode=delete_mode,
    )


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------


class Problem(NamedTuple):
    """One thing wrong with an image: ``kind`` is one of :data:`PROBLEM_KINDS`."""

    kind: str
    text: str


#: What can be wrong with an image, worst first: its manifest is gone, its tag names another
#: manifest, or the manifest is there but names a blob that is gone (a pull fails half way) or
#: that has other bytes.
PROBLEM_KINDS = ("manifest missing", "tag names another manifest", "blob missing", "blob corrupt")


@dataclass(frozen=True)
class Broken:
    """An image that does not pull whole: by which references, and why."""

    repo: str
    digest: str
    refs: tuple[str, ...]
    problems: tuple[Problem, ...]
    #: Checked by digest, no live tag naming it.
    untagged: bool = False

    @property
    def kind(self) -> str:
        """The worst of its problems (see :data:`PROBLEM_KINDS`)."""
        return min((p.kind for p in self.problems), key=PROBLEM_KINDS.index)

    def __str__(self) -> str:
        refs = ", ".join(f"{self.repo}:{ref}" for ref in self.refs)
        untagged = "untagged, " if self.untagged else ""
        texts = "; ".join(problem.text for problem in self.problems)
        return f"{refs} ({untagged}{self.digest[:19]}): {texts}"


@dataclass
class Verification:
    """What :func:`verify` found."""

    live_tags: int = 0
    #: Distinct manifests the live tags name.
    live_images: int = 0
    tags_checked: int = 0
    #: Untagged manifests (answered 201, tag moved or deleted, manifest not deleted).
    untagged: int = 0
    #: Of those, the ones a GET by digest still found (whole or not) and the ones gone.
    untagged_present: int = 0
    untagged_gone: int = 0
    blobs_checked: int = 0
    broken: list[Broken] = field(default_factory=list)
    #: Blobs missing under manifests still served by tag, by their source in the push that
    #: named them (``"<origin>/<how>"``: ``garbage/found`` is a deleted image's layer that the
    #: client's HEAD found, so it did not upload it).
    missing_by_source: Counter[str] = field(default_factory=Counter)

    @property
    def broken_images(self) -> int:
        return len(self.broken)

    def kinds(self) -> Counter[str]:
        """Broken images by their worst problem."""
        return Counter(broken.kind for broken in self.broken)

    def examples(self, limit: int = 5) -> list[str]:
        """A few broken images, of every kind found first."""
        firsts = {broken.kind: broken for broken in reversed(self.broken)}
        chosen = [firsts[kind] for kind in PROBLEM_KINDS if kind in firsts]
        chosen += [broken for broken in self.broken if broken not in chosen]
        return [str(broken) for broken in chosen[:limit]]

    def summary(self, limit: int = 5) -> str:
        untagged = sum(broken.untagged for broken in self.broken)
        lines = [
            f"broken images {self.broken_images}: {self.broken_images - untagged} of the "
            f"{self.live_images} tagged, {untagged} of the {self.untagged} untagged",
            f"  tags checked {self.tags_checked} of {self.live_tags} live, blobs checked "
            f"{self.blobs_checked}; untagged manifests still there {self.untagged_present}, "
            f"gone {self.untagged_gone}",
        ]
        if self.broken:
            lines.append(f"  by kind: {counts_line(self.kinds())}")
        if self.missing_by_source:
            how = counts_line(self.missing_by_source)
            lines.append(f"  blobs missing under served manifests, by source in their push: {how}")
        return "\n".join(lines + [f"  broken: {text}" for text in self.examples(limit)])


class _BlobChecker:
    """GETs blobs and checks their sha256, each ``(repo, digest)`` once."""

    def __init__(self, http: RegistryClient) -> None:
        self.http = http
        self.seen: dict[Key, Problem | None] = {}

    def problems(self, repo: str, blobs: Iterable[str]) -> list[Problem]:
        found = [self.problem(repo, blob) for blob in blobs]
        return [problem for problem in found if problem is not None]

    def problem(self, repo: str, digest: str) -> Problem | None:
        key = (repo, digest)
        if key not in self.seen:
            self.seen[key] = self._check(repo, digest)
        return self.seen[key]

    def _check(self, repo: str, digest: str) -> Problem | None:
        answer = self.http.get_blob(repo, digest)
        if answer.status != 200:
            return Problem("blob missing", f"blob {digest[:19]} answers {answer.status}")
        if "sha256:" + hashlib.sha256(answer.body).hexdigest() != digest:
            text = f"blob {digest[:19]} has other bytes ({len(answer.body)} bytes)"
            return Problem("blob corrupt", text)
        return None


def _manifest_problem(http: RegistryClient, repo: str, ref: str, digest: str) -> Problem | None:
    answer = http.get_manifest(repo, ref, expect=None)
    if answer.status != 200:
        return Problem("manifest missing", f"manifest {ref[:19]} answers {answer.status}")
    got = "sha256:" + hashlib.sha256(answer.body).hexdigest()
    if got != digest:
        return Problem("tag names another manifest", f"{ref} names {got[:19]}")
    return None


def verify(
    url: str, result: StressResult, *, untagged_must_survive: bool = False, timeout: float = 60.0
) -> Verification:
    """Check every live tag pulls whole: the manifest by tag is the recorded one, and every blob
    it names is there with its bytes. Untagged manifests are fetched by digest: one still there
    must be whole; one gone is broken only with ``untagged_must_survive`` (a collector that
    deletes untagged manifests may take it)."""
    found = Verification(live_tags=len(result.live), untagged=len(result.untagged_manifests()))
    by_image: dict[Key, list[str]] = {}
    for (repo, tag), digest in sorted(result.live.items()):
        by_image.setdefault((repo, digest), []).append(tag)
    found.live_images = len(by_image)
    with RegistryClient(url, timeout=timeout) as http:
        checker = _BlobChecker(http)
        for (repo, digest), tags in sorted(by_image.items()):
            problems = [p for tag in tags if (p := _manifest_problem(http, repo, tag, digest))]
            found.tags_checked += len(tags)
            record = result.manifests[(repo, digest)]
            served_wrong = bool(problems)
            for blob, source in zip(record.blobs, record.sources, strict=True):
                problem = checker.problem(repo, blob)
                if problem is not None:
                    problems.append(problem)
                if problem is not None and problem.kind == "blob missing" and not served_wrong:
                    found.missing_by_source[source] += 1
            if problems:
                found.broken.append(Broken(repo, digest, tuple(tags), tuple(problems)))
        for repo, digest in sorted(result.untagged_manifests()):
            problem = _manifest_problem(http, repo, digest, digest)
            if problem is not None:
                found.untagged_gone += 1
                if untagged_must_survive:
                    found.broken.append(Broken(repo, digest, (digest,), (problem,), True))
                continue
            found.untagged_present += 1
            problems = checker.problems(repo, result.manifests[(repo, digest)].blobs)
            if problems:
                found.broken.append(Broken(repo, digest, (digest,), tuple(problems), True))
        found.blobs_checked = len(checker.seen)
    return found


@dataclass
class GarbageCheck:
    """What :func:`deleted_blobs_gone` found."""

    #: ``(repo, blob)`` pairs named only by deleted manifests, and how many still answer.
    checked: int = 0
    still_there: int = 0
    examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"garbage blobs still there {self.still_there} of {self.checked} checked"]
        return "\n".join(lines + [f"  still there: {text}" for text in self.examples])


def garbage_blobs(result: StressResult, *, untagged_collected: bool = True) -> set[Key]:
    """``(repo, blob)`` for every blob named by a deleted manifest (and, with
    ``untagged_collected``, an untagged one) and by no manifest still alive in any repository
    (nor by one whose fate is uncertain)."""
    alive = result.tagged_manifests()
    dead = set(result.deleted)
    if untagged_collected:
        dead |= result.untagged_manifests()
    else:
        alive |= result.untagged_manifests()
    kept = {blob for key in alive for blob in result.manifests[key].blobs}
    kept.update(blob for blobs in result.uncertain_manifests.values() for blob in blobs)
    return {
        (repo, blob)
        for repo, digest in dead
        if (repo, digest) in result.manifests
        for blob in result.manifests[(repo, digest)].blobs
        if blob not in kept
    }


def deleted_blobs_gone(
    url: str,
    result: StressResult,
    *,
    untagged_collected: bool = True,
    examples: int = 5,
    timeout: float = 60.0,
) -> GarbageCheck:
    """After a final collection with no pushes: every blob named only by deleted manifests (see
    :func:`garbage_blobs`) must answer 404 in the repository of the manifest that named it."""
    found = GarbageCheck()
    with RegistryClient(url, timeout=timeout) as http:
        for repo, blob in sorted(garbage_blobs(result, untagged_collected=untagged_collected)):
            found.checked += 1
            status = http.head_blob(repo, blob).status
            if status != 404:
                found.still_there += 1
                if len(found.examples) < examples:
                    found.examples.append(f"{repo}@{blob} answers {status}")
    return found


@dataclass
class SkopeoCheck:
    """What :func:`skopeo_check` found: references copied, and the failures with skopeo's
    last words."""

    checked: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def skopeo_check(
    host: str, refs: Iterable[str], limit: int | None = None, *, seed: int = 0
) -> SkopeoCheck:
    """``skopeo copy`` each of ``refs`` (``repo:tag``; a seeded sample of ``limit`` of them) from
    ``host`` over plain HTTP into a ``dir:`` layout, as a real client would pull it."""
    chosen = sorted(refs)
    if limit is not None and limit < len(chosen):
        chosen = sorted(random.Random(seed).sample(chosen, limit))
    found = SkopeoCheck()
    with tempfile.TemporaryDirectory(prefix="gcstress-skopeo-") as tmp:
        for number, ref in enumerate(chosen):
            found.checked += 1
            try:
                skopeo_pull(host, ref, Path(tmp, str(number)))
            except SkopeoError as error:
                stderr = error.stderr.decode(errors="replace") if error.stderr else ""
                lines = stderr.strip().splitlines() or [f"exit {error.returncode}"]
                found.failures.append((ref, lines[-1][-300:]))
    return found


def live_refs(result: StressResult) -> list[str]:
    """``repo:tag`` of every live tag, for :func:`skopeo_check`."""
    return [f"{repo}:{tag}" for repo, tag in sorted(result.live)]


def counts_line(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
