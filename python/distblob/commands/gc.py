"""``distblob gc --root DIR | --config FILE``: mark and sweep, offline or while serving.

The marking is :mod:`distblob.storage.garbagecollect` (what is marked, what is swept, and how
this differs from distribution's). By default the collection is distribution's: run it while
nothing pushes; it prints one ``delete ...`` line per deletion on stdout (``would delete ...``
with ``--dry-run``), then sweeps. ``--online`` runs the protocol of
:mod:`distblob.storage.online` instead, safe while any number of replicas serve the storage:
whatever is younger than ``--grace`` is kept, and what servers use meanwhile is spared; the
collection's work runs only on CPUs the servers leave idle (``SCHED_IDLE``).

Progress and the summary go to stderr; ``--json`` prints the summary as one JSON document on
stdout instead of the per-deletion lines (with ``--dry-run``, the candidates too). ``--every``
makes an online collector of its own: a collection every DURATION until SIGTERM or SIGINT (a
sidecar beside the servers, when the schedule is not to run inside them).
``--delete-untagged`` and ``--manifests-only`` are the collection's ``delete_untagged`` and
``manifests_only``. Exit status 1 when a manifest cannot be read (then nothing is deleted), 2
when the store cannot be opened, 3 when another collection runs or this one lost its claim.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable

from distblob.commands.store import add_store_arguments, open_registry
from distblob.registry import Registry
from distblob.storage.garbagecollect import GCError, Plan
from distblob.storage.online import (
    DEFAULT_BATCH,
    DEFAULT_GRACE,
    DEFAULT_WORKERS,
    CollectionBusyError,
    CollectionLostError,
    CollectionStoppedError,
    Options,
    Summary,
    collect,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``gc`` subcommand (its handler is set as the ``run`` default)."""
    parser = subparsers.add_parser(
        "gc",
        help="delete blobs no manifest or repository link references",
        description="Mark and sweep unreferenced blobs, like distribution's garbage-collect; "
        "with --online, safely while registries serve the storage.",
    )
    add_store_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="list what would go, delete none")
    parser.add_argument(
        "--delete-untagged",
        action="store_true",
        help="also remove manifest revisions no tag reaches",
    )
    parser.add_argument(
        "--manifests-only",
        action="store_true",
        help="mark from manifests only and remove layer links to unmarked blobs (distribution)",
    )
    parser.add_argument(
        "--online",
        action="store_true",
        help="collect while registries serve the storage (grace period, claim, checked batches)",
    )
    parser.add_argument(
        "--grace",
        type=_duration,
        default=DEFAULT_GRACE,
        metavar="DURATION",
        help="with --online: keep whatever was written this long before the start "
        "(default 1h; 90s, 15m, 2h or seconds)",
    )
    parser.add_argument(
        "--every",
        type=_duration,
        metavar="DURATION",
        help="with --online: go on collecting, one collection every DURATION (0: back to "
        "back), until SIGTERM or SIGINT",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"threads reading manifests and deleting (default {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        help=f"with --online: digests deleted per checked batch (default {DEFAULT_BATCH})",
    )
    parser.set_defaults(run=run)


def _duration(text: str) -> float:
    # Imported here: the config package is needed only with --config (or a duration to read),
    # and a collection's start-up time is part of what it costs.
    from distblob.config.values import ConfigError, parse_duration

    text = text.strip()
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ConfigError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 90s, 15m or 1h, or seconds, not {text!r}"
        ) from None


def run(args: argparse.Namespace) -> int:
    """Run ``distblob gc``; 0 on success, 1 if marking failed (then nothing is deleted)."""
    if args.every is not None and (not args.online or args.dry_run):
        print("distblob gc: --every goes with --online, without --dry-run", file=sys.stderr)
        return 2
    registry = open_registry(args, "gc")
    if registry is None:
        return 2
    try:
        return _collect(args, registry)
    finally:
        # Redis connections, and the probe of a Redis that was away (its clears are in storage).
        registry.descriptor_cache.close()


def _collect(args: argparse.Namespace, registry: Registry) -> int:
    options = Options(
        online=args.online,
        grace=args.grace,
        delete_untagged=args.delete_untagged,
        manifests_only=args.manifests_only,
        dry_run=args.dry_run,
        workers=max(1, args.workers),
        batch=max(1, args.batch),
    )

    def progress(line: str) -> None:
        print(f"distblob gc: {line}", file=sys.stderr, flush=True)

    def report_plan(result: Plan) -> None:
        if args.json or (args.online and not args.dry_run):
            return  # online, what goes is decided batch by batch: the summary counts it
        verb = "would delete" if args.dry_run else "delete"
        for name, digest in result.manifests:
            print(f"{verb} manifest {name}@{digest}")
        for digest in result.blobs:
            print(f"{verb} blob {digest}")
        for name, digest in result.layer_links:
            print(f"{verb} layer link {name}@{digest}")
        sys.stdout.flush()

    if args.every is None:
        return _once(args, registry, options, progress, report_plan)
    # A collector of its own, beside the servers: a collection every --every seconds (back
    # to back with 0) until SIGTERM or SIGINT, which end it between collections.
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    status = 0
    while not stop.is_set():
        status = _once(args, registry, options, progress, report_plan, stop=stop)
        if status == 1:
            return status  # a manifest cannot be read: another round would not do better
        stop.wait(args.every)
    return 0 if status == 3 else status


def _once(
    args: argparse.Namespace,
    registry: Registry,
    options: Options,
    progress: Callable[[str], None],
    report_plan: Callable[[Plan], None],
    *,
    stop: threading.Event | None = None,
) -> int:
    try:
        result, summary = collect(
            registry, options, progress=progress, before_sweep=report_plan, stop=stop
        )
    except GCError as exc:
        print(f"distblob gc: {exc}; nothing deleted", file=sys.stderr)
        return 1
    except (CollectionBusyError, CollectionLostError, CollectionStoppedError) as exc:
        print(f"distblob gc: {exc}", file=sys.stderr)
        return 3
    if args.json:
        doc = summary.to_json()
        if args.dry_run:
            doc["candidates"] = {
                "blobs": [str(d) for d in result.blobs],
                "manifests": [f"{name}@{d}" for name, d in result.manifests],
                "layer_links": [f"{name}@{d}" for name, d in result.layer_links],
            }
        json.dump(doc, sys.stdout, indent=2)
        print()
    _report(summary)
    return 0


def _report(summary: Summary) -> None:
    if summary.unapplied_cache_clears:
        print(
            f"distblob gc: the blob descriptor cache was unreachable: "
            f"{summary.unapplied_cache_clears} entries of deleted blobs and links are still in "
            "it; their clears are kept in storage and applied by the next registry to start or "
            "to see Redis come back",
            file=sys.stderr,
        )
    phases = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in summary.seconds.items())
    print(
        f"distblob gc: {summary.marked} blobs marked, {summary.blobs} blobs "
        f"({summary.bytes} bytes), {summary.manifests} manifests and {summary.layer_links} "
        "layer links "
        + ("eligible for deletion" if summary.dry_run else "deleted")
        + (f", {summary.spared} spared as in use" if summary.online and not summary.dry_run else "")
        + f" ({phases})",
        file=sys.stderr,
    )


__all__ = ["register", "run"]
