"""``distblob gc --root DIR | --config FILE``: mark and sweep, as distribution's garbage-collect.

The collection itself is :mod:`distblob.storage.garbagecollect` (what is marked, what is swept,
and how this differs from distribution's); this command parses the options, prints the plan
(one ``delete ...`` line per deletion on stdout, ``would delete ...`` with ``--dry-run``) and
then sweeps, with a summary on stderr. ``--delete-untagged`` and ``--manifests-only`` are the
collection's ``delete_untagged`` and ``manifests_only``. Exit status 1 when a manifest cannot be
read (then nothing is deleted), 2 when the store cannot be opened.
"""

from __future__ import annotations

import argparse
import sys

from distblob.commands.store import add_store_arguments, open_registry
from distblob.registry import Registry
from distblob.storage.garbagecollect import GCError, plan, sweep


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``gc`` subcommand (its handler is set as the ``run`` default)."""
    parser = subparsers.add_parser(
        "gc",
        help="delete blobs no manifest or repository link references",
        description="Mark and sweep unreferenced blobs, like distribution's garbage-collect.",
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
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``distblob gc``; 0 on success, 1 if marking failed (then nothing is deleted)."""
    registry = open_registry(args, "gc")
    if registry is None:
        return 2
    try:
        return _collect(args, registry)
    finally:
        # Redis connections, and the probe of a Redis that was away (its clears are in storage).
        registry.descriptor_cache.close()


def _collect(args: argparse.Namespace, registry: Registry) -> int:
    try:
        result = plan(
            registry, delete_untagged=args.delete_untagged, manifests_only=args.manifests_only
        )
    except GCError as exc:
        print(f"distblob gc: {exc}; nothing deleted", file=sys.stderr)
        return 1
    verb = "would delete" if args.dry_run else "delete"
    for name, digest in result.manifests:
        print(f"{verb} manifest {name}@{digest}")
    for digest in result.blobs:
        print(f"{verb} blob {digest}")
    for name, digest in result.layer_links:
        print(f"{verb} layer link {name}@{digest}")
    sys.stdout.flush()
    if not args.dry_run:
        unapplied = sweep(registry, result)
        if unapplied:
            print(
                f"distblob gc: the blob descriptor cache was unreachable: {unapplied} entries "
                "of deleted blobs and links are still in it; their clears are kept in storage "
                "and applied by the next registry to start or to see Redis come back",
                file=sys.stderr,
            )
    print(
        f"distblob gc: {len(result.marked)} blobs marked, {len(result.blobs)} blobs, "
        f"{len(result.manifests)} manifests and {len(result.layer_links)} layer links "
        + ("eligible for deletion" if args.dry_run else "deleted"),
        file=sys.stderr,
    )
    return 0


__all__ = ["register", "run"]
