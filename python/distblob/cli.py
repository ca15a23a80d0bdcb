"""The ``distblob`` command line.

``distblob digest FILE...`` prints content digests the way ``sha256sum`` prints hashes, through
the native hashers (any registered algorithm, files read in 1 MiB buffers).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from distblob.digest import ALGORITHMS, CANONICAL, Digest, digester

_CHUNK = 1 << 20


def _digest_file(path: str, algorithm: str) -> Digest:
    hasher = digester(algorithm)
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as source:
        while n := source.readinto(buffer):
            hasher.update(view[:n])
    return Digest.from_hasher(hasher)


def _cmd_digest(args: argparse.Namespace) -> int:
    status = 0
    for path in args.files:
        try:
            print(f"{_digest_file(path, args.algorithm)}  {path}")
        except OSError as exc:
            print(f"distblob digest: {path}: {exc.strerror or exc}", file=sys.stderr)
            status = 1
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distblob", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    digest = commands.add_parser("digest", help="print the content digest of files")
    digest.add_argument("files", nargs="+", metavar="FILE")
    digest.add_argument("-a", "--algorithm", choices=sorted(ALGORITHMS), default=CANONICAL)
    digest.set_defaults(func=_cmd_digest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
