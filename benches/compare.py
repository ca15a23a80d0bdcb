"""Run every benchmark scenario side by side and print ratios; ``python -m benches.compare``.

Figures are best-of-N throughputs from one run on one machine; the ratios are the claims (see
docs/performance.md). ``--quick`` runs tiny sizes so CI can check the script still works (its
figures mean nothing). ``--json FILE`` writes the results, which ``python -m benches.charts``
draws. ``--podman`` runs podman's scenarios (:mod:`benches.podman`), which take minutes and are
part of no other run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

from benches import auth, hashing, podman, proxy, proxy_link, s3, server, store
from benches.timing import Comparison, Result, print_table


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--hashing-only", action="store_true", help="only the hashing scenarios")
    parser.add_argument(
        "--server",
        action="store_true",
        help="only the HTTP server scenarios (distblob serve against the Go registry)",
    )
    parser.add_argument(
        "--proxy",
        action="store_true",
        help="only the pull-through cache scenarios (distblob proxy against the Go proxy, on "
        "loopback and with the upstream behind a 100 MB/s and a 1 Gbit/s link)",
    )
    parser.add_argument(
        "--s3",
        action="store_true",
        help="only the S3 scenarios (distblob serve on rclone serve s3 against the filesystem "
        "and the Go registry; boto3 against obstore)",
    )
    parser.add_argument(
        "--auth",
        action="store_true",
        help="only the access control and TLS scenarios (htpasswd against no auth and the Go "
        "registry; a 1 GiB PUT over TLS against plain HTTP)",
    )
    parser.add_argument(
        "--podman",
        action="store_true",
        help="only the podman scenarios (podman pull of a 200 MiB layer and a zstd:chunked "
        "partial pull, distblob against the Go registry; minutes, so never part of the default "
        "run or of --quick alone)",
    )
    args = parser.parse_args(argv)

    total, rounds = (8, 1) if args.quick else (256, 5)
    print(f"machine: {machine()}")
    results: list[Result] = []
    comparisons: list[Comparison] = []
    only = args.server or args.proxy or args.s3 or args.auth or args.podman
    if not only:
        results, comparisons = hashing.run(total_mib=total, rounds=rounds)
    if not args.hashing_only and not only:
        more_results, more_comparisons = store.run(
            store.Sizes.quick() if args.quick else store.Sizes()
        )
        results += more_results
        comparisons += more_comparisons
    # --server, --proxy, --s3, --auth and --podman combine: each names a part to run (none
    # named: all but podman's, which only --podman runs).
    if not args.hashing_only and (args.server or not only):
        more_results, more_comparisons = server.run(args.quick)
        results += more_results
        comparisons += more_comparisons
    if not args.hashing_only and (args.proxy or not only):
        more_results, more_comparisons = proxy.run(args.quick)
        results += more_results
        comparisons += more_comparisons
        more_results, more_comparisons = proxy_link.run(args.quick)
        results += more_results
        comparisons += more_comparisons
    if not args.hashing_only and (args.s3 or not only):
        more_results, more_comparisons = s3.run(args.quick)
        results += more_results
        comparisons += more_comparisons
    if not args.hashing_only and (args.auth or not only):
        more_results, more_comparisons = auth.run(args.quick)
        results += more_results
        comparisons += more_comparisons
    if not args.hashing_only and args.podman:
        more_results, more_comparisons = podman.run(args.quick)
        results += more_results
        comparisons += more_comparisons
    if not results:
        print("nothing was measured")
        return 0
    print_table(results, comparisons)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "machine": machine(),
                    "quick": args.quick,
                    "results": [r.as_dict() for r in results],
                    "comparisons": [c.__dict__ | {"met": c.met} for c in comparisons],
                },
                out,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
