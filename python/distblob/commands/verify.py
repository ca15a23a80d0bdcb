"""``distblob verify --root DIR | --config FILE``: check a store (ours or Go's) for damage.

The checks are :mod:`distblob.storage.verify`'s: blobs rehashed by ``--jobs`` threads, with a
progress bar on a terminal, then every link and upload directory. Each finding is printed on
stdout (one JSON object per line with ``--json``), naming its file on a filesystem store:
``corrupt``, ``unreadable`` or ``misplaced`` blobs, ``invalid-link`` and ``dangling-link``,
``orphan-upload`` and ``stale-upload``: an upload started more than ``--upload-age`` ago (168h
by default, distribution's upload purging age; ``0`` turns this off), such as one a killed
``ingest`` left behind. ``distblob serve``'s upload purging removes those. Exit status 1 on any
finding, 0 when the tree is clean, 2 when it cannot be read at all.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Final

from distblob.commands.store import add_store_arguments, open_registry
from distblob.storage.verify import check_blobs, check_repositories

from .ingest import _positive
from .progress import Progress

#: Uploads older than this are reported (distribution's default upload purging age).
DEFAULT_UPLOAD_AGE: Final = 168 * 3600.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``verify`` subcommand (its handler is set as the ``run`` default)."""
    parser = subparsers.add_parser(
        "verify",
        help="rehash every blob and check links and uploads",
        description="Rehash every blob; report corrupt blobs, broken links, orphan uploads.",
    )
    add_store_arguments(parser)
    parser.add_argument(
        "--jobs", type=_positive, default=os.cpu_count() or 1, help="parallel rehashing threads"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per finding")
    parser.add_argument(
        "--upload-age",
        type=_duration,
        default=DEFAULT_UPLOAD_AGE,
        metavar="DURATION",
        help="report uploads started longer ago than this (default 168h; 0: never)",
    )
    parser.set_defaults(run=run)


def _duration(text: str) -> float:
    from distblob.config import ConfigError, parse_duration

    try:
        return parse_duration(text, "--upload-age")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def run(args: argparse.Namespace) -> int:
    """Run ``distblob verify``; 1 on any finding, 0 when clean, 2 if the root is unusable."""
    registry = open_registry(args, "verify")
    if registry is None:
        return 2
    progress = Progress(0, 0, label="verify")
    with progress:
        findings = check_blobs(registry, args.jobs, progress)
    findings.extend(check_repositories(registry, args.upload_age))
    for finding in findings:
        finding = finding.located(registry.driver)
        print(finding.to_json() if args.json else str(finding))
    sys.stdout.flush()
    if not args.json:
        summary = f"{progress.total_files} blobs checked, {len(findings)} problem(s)"
        print(f"distblob verify: {summary}", file=sys.stderr)
    return 1 if findings else 0


__all__ = ["register", "run"]
