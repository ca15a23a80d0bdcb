"""Checking a store for damage: every blob rehashed, every link and upload directory looked at.

The walks of ``distblob verify`` (:mod:`distblob.commands.verify`), over any store distribution's
layout describes (ours or the Go registry's). Each problem is a :class:`Finding` of one kind:

- ``corrupt``: a blob whose content does not hash to the digest its path names (a flipped byte,
  a truncated file), ``unreadable`` when it cannot be read, ``misplaced`` when its directory
  does not match its digest (``blobs/<alg>/<hex[:2]>/<hex>``): :func:`check_blobs`;
- ``invalid-link``: a link file under ``_layers``, ``_manifests/revisions`` or
  ``_manifests/tags`` that does not hold a valid digest; ``dangling-link``: a link whose target
  blob is not stored: :func:`check_repositories`;
- ``orphan-upload``: an upload directory without its ``data`` or ``startedat`` file, or whose
  ``startedat`` is unreadable; ``stale-upload``: an upload started longer ago than an age given
  by the caller, such as one a killed ``ingest`` left behind (upload purging,
  :mod:`distblob.storage.purge`, removes those): :func:`check_repositories` too.

Nothing is changed: the checks only read. Blobs are rehashed through the engine's
``hash_object`` (the native ``hash_file`` releases the GIL), so threads scale.
"""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from distblob.digest import Digest
from distblob.errors import DistblobError, PathNotFoundError
from distblob.storage import paths
from distblob.storage.driver import StorageDriver
from distblob.storage.writer import parse_started_at

if TYPE_CHECKING:
    from distblob.registry import Registry


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: its kind, the driver path where it is, and what is wrong; ``file`` is the
    OS path of that place when the store is a local filesystem."""

    kind: str
    path: str
    detail: str
    file: str | None = None

    def located(self, driver: StorageDriver) -> Finding:
        """The same finding with its OS path, when ``driver`` has one."""
        try:
            file = driver.local_path(self.path)
        except DistblobError:  # a path the driver refuses: reported as it is
            file = None
        return Finding(self.kind, self.path, self.detail, file)

    def to_json(self) -> str:
        """One line of JSON: ``kind``, ``path``, ``detail``, and ``file`` when known."""
        fields = {"kind": self.kind, "path": self.path, "detail": self.detail}
        if self.file is not None:
            fields["file"] = self.file
        return json.dumps(fields, separators=(",", ":"))

    def __str__(self) -> str:
        return f"{self.kind}: {self.file or self.path}: {self.detail}"


class RehashProgress(Protocol):
    """What :func:`check_blobs` reports its progress to (a command's progress bar)."""

    def start(self, total_bytes: int, total_files: int) -> None:
        """The blobs about to be rehashed: their total size and count."""
        ...

    def advance(self, nbytes: int) -> None:
        """One blob of ``nbytes`` rehashed (called from the hashing threads)."""
        ...


def _read_link(driver: StorageDriver, path: str) -> Digest | None:
    """The digest a link file holds, or ``None`` if it holds none."""
    return paths.parse_link(driver.get_content(path))


def check_blobs(
    registry: Registry, jobs: int, progress: RehashProgress | None = None
) -> list[Finding]:
    """Rehash every blob under ``blobs/`` with ``jobs`` threads; a finding for each that is not
    what its path says."""
    driver = registry.driver
    try:
        entries = [
            e for e in driver.walk(paths.blobs_root()) if not e.is_dir and e.path.endswith("/data")
        ]
    except PathNotFoundError:
        return []
    findings: list[Finding] = []
    to_hash: list[tuple[str, Digest, int]] = []
    for entry in entries:
        parts = entry.path.split("/")
        try:
            digest = Digest.from_parts(parts[-4], parts[-2])
        except DistblobError:
            findings.append(Finding("misplaced", entry.path, "not the path of a valid digest"))
            continue
        if parts[-3] != digest.encoded[:2]:
            findings.append(Finding("misplaced", entry.path, f"{digest} belongs elsewhere"))
            continue
        to_hash.append((entry.path, digest, entry.size))
    if progress is not None:
        progress.start(sum(size for _, _, size in to_hash), len(to_hash))

    def rehash(item: tuple[str, Digest, int]) -> Finding | None:
        path, digest, size = item
        try:
            actual = registry.engine.hash_object(driver, path, digest.algorithm)
        except (OSError, DistblobError) as exc:
            return Finding("unreadable", path, str(exc))
        finally:
            if progress is not None:
                progress.advance(size)
        if actual != digest.encoded:
            return Finding(
                "corrupt", path, f"content hashes to {digest.algorithm}:{actual}, not {digest}"
            )
        return None

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        findings.extend(f for f in pool.map(rehash, to_hash) if f is not None)
    return findings


def check_repositories(
    registry: Registry, upload_age: float = 0.0, now: dt.datetime | None = None
) -> list[Finding]:
    """Check every link and upload directory under ``repositories/``; uploads started more
    than ``upload_age`` seconds before ``now`` are reported too (``0``: never)."""
    driver = registry.driver
    root = paths.repositories_root()
    try:
        entries = list(driver.walk(root))
    except PathNotFoundError:
        return []
    findings: list[Finding] = []
    uploads: dict[str, set[str]] = {}
    stored: dict[Digest, bool] = {}
    for entry in entries:
        parts = entry.path[len(root) + 1 :].split("/")
        # Repository names have no component starting with "_": the first one is the layout's.
        marker = next((i for i, part in enumerate(parts) if part.startswith("_")), None)
        if marker is None:
            continue
        if parts[marker] == "_uploads":
            if len(parts) == marker + 2 and entry.is_dir:
                uploads.setdefault(entry.path, set())
            elif len(parts) == marker + 3:
                directory = entry.path.rsplit("/", 1)[0]
                uploads.setdefault(directory, set()).add(parts[-1])
            continue
        if entry.is_dir or parts[-1] != "link":
            continue
        target = _read_link(driver, entry.path)
        if target is None:
            findings.append(Finding("invalid-link", entry.path, "does not hold a valid digest"))
            continue
        if target not in stored:
            stored[target] = registry.blobs.exists(target)
        if not stored[target]:
            findings.append(Finding("dangling-link", entry.path, f"{target} is not stored"))
    now = now or dt.datetime.now(dt.UTC)
    for directory, names in sorted(uploads.items()):
        missing = [name for name in ("data", "startedat") if name not in names]
        if missing:
            findings.append(Finding("orphan-upload", directory, f"no {' and no '.join(missing)}"))
        else:
            findings.extend(_check_upload(driver, directory, upload_age, now))
    return findings


def _check_upload(
    driver: StorageDriver, directory: str, upload_age: float, now: dt.datetime
) -> list[Finding]:
    try:
        started = parse_started_at(driver.get_content(f"{directory}/startedat").decode("ascii"))
    except PathNotFoundError:
        return []  # finished or purged meanwhile
    except (UnicodeDecodeError, ValueError):
        return [Finding("orphan-upload", directory, "unreadable startedat")]
    age = (now - started).total_seconds()
    if upload_age <= 0 or age <= upload_age:
        return []
    hours = age / 3600
    return [
        Finding(
            "stale-upload",
            directory,
            f"started {started:%Y-%m-%dT%H:%M:%SZ}, "
            f"{hours:.1f}h ago (more than {upload_age / 3600:g}h)",
        )
    ]


__all__ = ["Finding", "RehashProgress", "check_blobs", "check_repositories"]
