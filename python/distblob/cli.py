"""The ``distblob`` command line.

``distblob digest FILE...`` prints content digests the way ``sha256sum`` prints hashes, through
the native hashers (any registered algorithm, files read in 1 MiB buffers).

``distblob serve [CONFIG | --config FILE] [--addr HOST:PORT] [--root DIR]`` serves the OCI
distribution API under uvicorn over the config's storage driver (a filesystem root unless it
names another); flags override the config file (``--root`` is the filesystem root), and with
neither it serves ``./distblob-data`` on 127.0.0.1:5000. ``REGISTRY_CONFIGURATION_PATH`` names
the file when the command line does not, and ``REGISTRY_*`` variables override its keys
(:mod:`distblob.config.env`). With ``http.tls`` it serves HTTPS (:mod:`distblob.server.tls`).

``distblob ingest``, ``verify`` and ``gc`` (in :mod:`distblob.commands`) store trees of files as
blobs, check a store's integrity and collect its garbage.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from distblob.commands import register_all
from distblob.digest import ALGORITHMS, CANONICAL, Digest, digester

if TYPE_CHECKING:
    from distblob.config import Config
    from distblob.notifications import Notifier

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


def _https_banner(record: logging.LogRecord) -> bool:
    """uvicorn's "running on http://..." line names https when the listener's protocol, not
    uvicorn, does TLS (uvicorn cannot tell)."""
    if (
        isinstance(record.msg, str)
        and record.msg.startswith("Uvicorn running on")
        and isinstance(record.args, tuple)
        and record.args[:1] == ("http",)
    ):
        record.args = ("https", *record.args[1:])
    return True


def _config_path(args: argparse.Namespace) -> str | None:
    """The config file: ``serve CONFIG`` (Go's form) or ``--config``, the two equal if both
    are given, else ``REGISTRY_CONFIGURATION_PATH``, else none (the defaults)."""
    from distblob.config import ConfigError
    from distblob.config.env import CONFIGURATION_PATH

    both = args.config_file is not None and args.config is not None
    if both and os.path.abspath(args.config_file) != os.path.abspath(args.config):
        raise ConfigError("", f"two config files: {args.config_file} and --config {args.config}")
    path: str | None = args.config_file or args.config or os.environ.get(CONFIGURATION_PATH)
    return path or None


def _notifier(config: Config) -> Notifier:
    """The notifier of ``notifications``: journals under the root with the filesystem driver,
    queues in Redis with another driver and a ``redis`` section, in memory otherwise (with a
    warning when there are endpoints)."""
    import uuid

    from distblob.config import open_notification_redis
    from distblob.notifications import Notifier, Source, source_addr

    endpoints = config.notifications.enabled
    root = config.root if config.driver == "filesystem" else None
    shared = open_notification_redis(config) if endpoints and root is None else None
    if endpoints and root is None and shared is None:
        logging.getLogger("distblob.notifications").warning(
            "notifications: storage %s is no local filesystem and no redis is configured: "
            "events wait in memory and are lost on restart, as in distribution",
            config.driver,
        )
    source = Source(source_addr(config.addr), str(uuid.uuid4()))
    client, storage = shared if shared is not None else (None, "")
    return Notifier(
        config.notifications, root=root, source=source, redis_client=client, storage=storage
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    # Imported here: the server's dependencies are not needed to compute digests.
    import asyncio
    import secrets
    from dataclasses import replace

    import uvicorn

    from distblob.config import (
        ConfigError,
        build_registry,
        load_config,
        open_access_controller,
        parse_addr,
    )
    from distblob.logs import configure as configure_logging
    from distblob.server import create_app
    from distblob.server.debug import Observability
    from distblob.server.direct import DirectProtocol
    from distblob.server.tls import describe, server_context, tls_protocol

    try:
        config = load_config(_config_path(args))
        if args.addr is not None:
            parse_addr(args.addr, "--addr")
            config = replace(config, http=replace(config.http, addr=args.addr))
        if args.root is not None:
            storage = config.storage
            if storage.driver != "filesystem":
                raise ConfigError("--root", f"the config's storage driver is {storage.driver}")
            parameters = {**storage.parameters, "rootdirectory": args.root}
            config = replace(config, storage=replace(storage, parameters=parameters))
    except ConfigError as exc:
        for line in str(exc).splitlines():  # every problem of the config, one per line
            print(f"distblob serve: {line}", file=sys.stderr)
        for warning in exc.warnings:  # a misspelt REGISTRY_* name shows here
            print(f"distblob serve: warning: {warning}", file=sys.stderr)
        return 2
    configure_logging(config.log)  # log.level, formatter, fields, accesslog (distblob.logs)
    log = logging.getLogger("distblob.serve")
    for warning in config.warnings:
        log.warning("config: %s", warning)
    try:
        # After the logging setup: reading the htpasswd file may warn about its entries.
        access_controller = open_access_controller(config)
    except ConfigError as exc:
        print(f"distblob serve: {exc}", file=sys.stderr)
        return 2
    secret = config.secret
    if secret is None:
        secret = secrets.token_urlsafe(32)
        log.warning(
            "http.secret is not set: using a random one; every process serving one root "
            "(and any Go registry sharing it) needs the same secret to continue uploads"
        )
    registry = build_registry(config)
    notifier = _notifier(config)
    app = create_app(
        registry,
        secret=secret,
        upload_purging=config.upload_purging,
        garbage_collect=config.garbage_collect,
        proxy=config.proxy,
        access_controller=access_controller,
        access_policy=config.access,
        http=config.http,
        catalog_max_entries=config.catalog.maxentries,
        observability=Observability.build(config.health, config.http.debug, registry.driver),
        notifier=notifier,
    )
    unix = config.http.net == "unix"
    host, port = ("", 0) if unix else config.host_port
    listening = f"unix:{config.addr}" if unix else f"{host}:{port}"
    where = f"root={os.path.abspath(config.root)}" if config.driver == "filesystem" else ""
    protocol: type[asyncio.Protocol] = DirectProtocol  # httptools, plus large bodies direct
    scheme = ""
    if config.tls is not None:
        # Checked when the config was read; built again here, from the files as they are now.
        protocol = tls_protocol(server_context(config.tls), DirectProtocol)
        scheme = f" https {describe(config.tls)}"
        logging.getLogger("uvicorn.error").addFilter(_https_banner)
    log.info(
        "serving %s %s cache=%s auth=%s addr=%s%s",
        registry.driver.name,
        where or repr(registry.driver),
        config.blob_descriptor_cache,
        config.auth.controller if config.auth else "none",
        listening,
        scheme,
    )
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            uds=config.addr if unix else None,  # http.net: unix
            http=protocol,
            loop="uvloop",
            log_config=None,  # keep the logging set up above
            access_log=False,  # the app logs one logfmt line per request itself
            server_header=False,
            timeout_graceful_shutdown=math.ceil(config.drain_timeout),
        )
    finally:
        registry.descriptor_cache.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distblob", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    digest = commands.add_parser("digest", help="print the content digest of files")
    digest.add_argument("files", nargs="+", metavar="FILE")
    digest.add_argument("-a", "--algorithm", choices=sorted(ALGORITHMS), default=CANONICAL)
    digest.set_defaults(func=_cmd_digest)
    serve = commands.add_parser("serve", help="serve the OCI distribution API (uvicorn)")
    serve.add_argument(
        "config_file", nargs="?", metavar="CONFIG", help="distribution-style YAML config"
    )
    serve.add_argument("--config", metavar="FILE", help="the same as CONFIG")
    serve.add_argument("--addr", metavar="HOST:PORT", help="listen address (http.addr)")
    serve.add_argument("--root", metavar="DIR", help="storage root (rootdirectory)")
    serve.set_defaults(func=_cmd_serve)
    register_all(commands)  # ingest, verify, gc (distblob.commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The commands of distblob.commands name their handler ``run``; the ones here ``func``.
    handler = getattr(args, "func", None) or args.run
    status: int = handler(args)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
