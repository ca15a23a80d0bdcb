"""Garbage collection while a registry serves: how many pushed images does it break?

``python -m benches.gc_stress --go [--duration 60] [--pause 1] [--large-mib 64] [--skopeo 10]``

Runs the stress harness of ``tests/support/gcstress.py``: client threads push images (HEAD each
blob first, upload or mount what is missing, PUT the manifest under a tag), retag and delete them,
while another thread collects back to back (``--pause`` seconds apart). Then, with no pushes:
``verify`` checks that every live tag pulls whole (the broken-image count is the figure), a
sample of live tags is copied with skopeo, a last collection runs, and the blobs named only by
deleted manifests must be gone.

``--go``: the Go registry 2.8.2 on a filesystem root (``storage.delete.enabled``), collected by
``docker-registry garbage-collect --delete-untagged`` on the same config: the offline collector,
which distribution documents for a registry in read-only mode, run here while it serves.
``--keep-untagged`` drops ``--delete-untagged`` (untagged manifests must then survive). The
default pause is 1 s: run back to back (``--pause 0``) Go's collector sweeps nearly every
upload before its manifest arrives, so nearly every push is refused and few images are left to
be broken.

Another side is a function that starts its server(s) and calls :func:`stress` with their URLs
and its ``collect`` (see :func:`go_side`), listed in :data:`SIDES`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from benches.store import scratch

# The harnesses live with the tests (tests/support); import them from there.
_TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from distblob.storage.driver.s3 import MIN_CHUNK_SIZE  # noqa: E402
from support.gcstress import (  # noqa: E402
    MIB,
    CollectError,
    StressConfig,
    command_collector,
    deleted_blobs_gone,
    distblob_collector,
    live_refs,
    run_stress,
    skopeo_check,
    verify,
)
from support.goregistry import REGISTRY_BIN, GoRegistry  # noqa: E402
from support.s3server import RcloneS3  # noqa: E402
from support.server import DistblobServer, S3DistblobServer  # noqa: E402

#: The replicas' shared http.secret (an upload started on one continues on the other).
SECRET = "gc-stress-replicas"


def stress(
    name: str,
    urls: Sequence[str],
    collect: Callable[[], None],
    config: StressConfig,
    *,
    pause: float = 0.0,
    skopeo: int = 0,
    untagged_collected: bool = True,
    final_collect: Callable[[], None] | None = None,
) -> int:
    """Stress the registry replicas at ``urls`` with ``collect`` running beside the pushes, then
    check and print a report; return the number of broken images.

    ``final_collect`` (default ``collect``) is the last collection, with no pushes: an online
    one without a grace period then, so the garbage of the run's last seconds goes too.

    ``untagged_collected``: whether ``collect`` deletes untagged manifests (then one that is gone
    is not broken, and its blobs are garbage too).
    """
    print(f"== {name}: {config.duration:.0f} s, collections {pause:g} s apart")
    result = run_stress(urls, config, collect, pause)
    print(result.summary())
    tried = result.counts.get("images tried", 0)
    print(f"images answered 201: {result.images_pushed} of {tried} tried")
    found = verify(urls[0], result, untagged_must_survive=not untagged_collected)
    print(found.summary())
    if skopeo:
        host = urls[0].split("://", 1)[1]
        pulled = skopeo_check(host, live_refs(result), skopeo, seed=config.seed)
        print(f"skopeo copies failed: {len(pulled.failures)} of {pulled.checked}")
        for ref, message in pulled.failures[:3]:
            print(f"  {ref}: {message}")
    try:
        (final_collect or collect)()
    except CollectError as error:  # Go's, when the blob store is empty; the check still runs.
        print(f"the last collection failed: {error}")
    print("after a last collection with no pushes:")
    print(deleted_blobs_gone(urls[0], result, untagged_collected=untagged_collected).summary())
    return found.broken_images


def go_side(config: StressConfig, pause: float, skopeo: int, untagged: bool) -> int:
    """The Go registry, collected by ``garbage-collect`` (``--delete-untagged`` when
    ``untagged``) in a loop."""
    if not REGISTRY_BIN.exists():
        print(f"({REGISTRY_BIN} not found: the Go registry is skipped)")
        return 0
    with scratch() as root, GoRegistry(Path(root, "go"), delete_enabled=True) as registry:
        collect = command_collector(registry.gc_command(delete_untagged=untagged))
        name = "go registry 2.8.2" + (", --delete-untagged" if untagged else "")
        return stress(
            name,
            [registry.url],
            collect,
            config,
            pause=pause,
            skopeo=skopeo,
            untagged_collected=untagged,
        )


#: The online collections' grace period in these runs (seconds): longer than a push here takes
#: from its first blob to its manifest, short enough that most garbage is old.
GRACE = 5.0


def distblob_side(config: StressConfig, pause: float, skopeo: int, untagged: bool) -> int:
    """Two ``distblob serve`` replicas on one filesystem root, collected by
    ``distblob gc --online`` from a third process."""
    with scratch() as root:
        store = Path(root, "distblob")
        replicas = [DistblobServer(store, secret=SECRET, delete_enabled=True) for _ in range(2)]
        with replicas[0], replicas[1]:
            return stress(
                "distblob, two replicas on a filesystem root, gc --online"
                + (" --delete-untagged" if untagged else ""),
                [replica.url for replica in replicas],
                distblob_collector(["--root", str(store)], grace=GRACE, delete_untagged=untagged),
                config,
                pause=pause,
                skopeo=skopeo,
                untagged_collected=untagged,
                final_collect=distblob_collector(
                    ["--root", str(store)], grace=0, delete_untagged=untagged
                ),
            )


def distblob_s3_side(config: StressConfig, pause: float, skopeo: int, untagged: bool) -> int:
    """Two ``distblob serve`` replicas on one bucket of ``rclone serve s3``, collected by
    ``distblob gc --online --config`` from a third process."""
    with scratch() as root, RcloneS3() as server:
        bucket = server.new_bucket("gcstress")
        parameters = server.parameters(bucket, chunksize=MIN_CHUNK_SIZE)
        replicas = [
            S3DistblobServer(Path(root, name), parameters, secret=SECRET) for name in ("a", "b")
        ]
        gc_config = Path(root, "gc.yml")
        gc_config.write_text(json.dumps({"version": 0.1, "storage": {"s3": parameters}}))
        with replicas[0], replicas[1]:
            return stress(
                "distblob, two replicas on rclone serve s3, gc --online"
                + (" --delete-untagged" if untagged else ""),
                [replica.url for replica in replicas],
                distblob_collector(
                    ["--config", str(gc_config)], grace=GRACE, delete_untagged=untagged
                ),
                config,
                pause=pause,
                skopeo=skopeo,
                untagged_collected=untagged,
                final_collect=distblob_collector(
                    ["--config", str(gc_config)], grace=0, delete_untagged=untagged
                ),
            )


#: ``--NAME`` runs ``SIDES[NAME]``.
SIDES: dict[str, Callable[[StressConfig, float, int, bool], int]] = {
    "go": go_side,
    "distblob": distblob_side,
    "distblob-s3": distblob_s3_side,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for side in SIDES:
        parser.add_argument(f"--{side}", action="store_true", help=f"run the {side} side")
    parser.add_argument("--all", action="store_true", help="run every side")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--clients", type=int, default=4, help="pushing threads (default 4)")
    parser.add_argument("--repos", type=int, default=6, help="repositories (default 6)")
    parser.add_argument("--large-mib", type=int, default=64, help="large layers, MiB (64)")
    parser.add_argument(
        "--pause", type=float, default=1.0, help="seconds between collections (default 1)"
    )
    parser.add_argument(
        "--garbage",
        type=float,
        default=0.2,
        help="chance a layer is one of a deleted image, pushed again (default 0.2)",
    )
    parser.add_argument("--skopeo", type=int, default=10, help="live tags skopeo copies (10)")
    parser.add_argument(
        "--keep-untagged",
        action="store_true",
        help="collect without deleting untagged manifests (they must then survive)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="5 s, small layers: a smoke test")
    args = parser.parse_args(argv)
    chosen = [side for side in SIDES if args.all or getattr(args, side.replace("-", "_"))]
    if not chosen:
        parser.error("choose a side: " + " ".join(f"--{side}" for side in SIDES))
    config = StressConfig(
        duration=5.0 if args.quick else args.duration,
        clients=args.clients,
        repositories=args.repos,
        large_size=(1 if args.quick else args.large_mib) * MIB,
        garbage_probability=args.garbage,
        seed=args.seed,
    )
    for side in chosen:
        SIDES[side](config, args.pause, 2 if args.quick else args.skopeo, not args.keep_untagged)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
