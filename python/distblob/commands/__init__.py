"""The maintenance subcommands of ``distblob``: ``ingest``, ``verify`` and ``gc``.

Each module offers ``register(subparsers)``, which adds its subcommand to an argparse parser and
sets ``run`` as the parsed namespace's default, and ``run(args) -> int``, the exit status. The
command line wires them in with :func:`register_all`.
"""

from __future__ import annotations

import argparse

from . import gc, ingest, verify

#: The subcommand modules, in the order ``--help`` lists them.
COMMANDS = (ingest, verify, gc)


def register_all(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add every subcommand of this package to ``subparsers``."""
    for command in COMMANDS:
        command.register(subparsers)


def main(argv: list[str] | None = None) -> int:
    """A parser with only these subcommands (for tests and ``python -m distblob.commands``)."""
    parser = argparse.ArgumentParser(prog="distblob")
    register_all(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


__all__ = ["COMMANDS", "gc", "ingest", "main", "register_all", "verify"]
