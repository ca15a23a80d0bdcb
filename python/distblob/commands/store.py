"""Where a maintenance command finds its store: ``--root DIR`` or ``--config FILE``.

``--root`` is a filesystem root (distribution's layout under ``docker/registry/v2``).
``--config`` reads a ``distblob serve`` (or distribution) config and uses the driver it
configures (``filesystem``, ``inmemory`` or ``s3``) and its blob descriptor cache, so a command
run against an S3 bucket shared with replicas sees what they see, and ``gc`` clears the Redis
entries of what it deletes.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from distblob.registry import Registry


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the mutually exclusive, required ``--root`` / ``--config`` options."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--root", metavar="DIR", help="registry root directory (filesystem)")
    where.add_argument(
        "--config",
        metavar="FILE",
        help="a distblob serve config: use its storage (filesystem or s3) and descriptor cache",
    )


def open_registry(
    args: argparse.Namespace, command: str, *, create: bool = False, **options: Any
) -> Registry | None:
    """The registry ``args`` names, with ``options`` for :class:`Registry`; ``None`` (the
    reason printed on stderr as ``distblob <command>: ...``) if it cannot be opened. A
    filesystem root that does not exist is made with ``create``, else refused."""
    if args.config is None:
        if not create and not os.path.isdir(args.root):
            print(f"distblob {command}: {args.root}: not a directory", file=sys.stderr)
            return None
        return Registry.filesystem(args.root, **options)
    # Imported here: the config module is only needed with --config.
    from distblob.config import (
        ConfigError,
        load_config,
        open_descriptor_cache,
        open_driver,
    )

    try:
        config = load_config(args.config)
        if config.driver == "filesystem" and not create and not os.path.isdir(config.root):
            raise ConfigError("storage.filesystem.rootdirectory", f"{config.root}: not a directory")
        driver = open_driver(config)
        return Registry(
            driver,
            delete_enabled=config.delete_enabled,
            descriptor_cache=open_descriptor_cache(config, driver),
            **options,
        )
    except (ConfigError, ImportError, ValueError) as exc:
        print(f"distblob {command}: {exc}", file=sys.stderr)
        return None


__all__ = ["add_store_arguments", "open_registry"]
