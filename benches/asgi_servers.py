"""Which ASGI server runs the app fastest: uvicorn (httptools + uvloop) against granian.

``python -m benches.asgi_servers [--quick]`` serves the same app (``make_app`` below, a fresh
root per server) under each server in turn and measures, with the client of
:mod:`benches.server`: a 1 GiB monolithic PUT, a 1 GiB GET and 4 KiB blobs (POST + monolithic
PUT) on one keep-alive connection. Best of N rounds; the figures are ratios within one run.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benches.server import (
    LOOPBACK,
    Sizes,
    get_blob,
    monolithic_put,
    small_blobs,
    workload,
)
from benches.server import _prepare_round as prepare_round
from benches.server import _timed as timed
from benches.store import scratch
from benches.timing import Comparison, Result, print_table

ROOT_ENV = "DISTBLOB_ASGI_BENCH_ROOT"
REPO_ROOT = Path(__file__).resolve().parent.parent


def make_app() -> object:
    """The app factory both servers load (``--factory benches.asgi_servers:make_app``)."""
    from distblob.registry import Registry
    from distblob.server import create_app

    return create_app(Registry.filesystem(os.environ[ROOT_ENV]), secret="asgi-bench")


def command(server: str, port: int) -> list[str]:
    target = "benches.asgi_servers:make_app"
    if server == "uvicorn":
        return [
            *(sys.executable, "-m", "uvicorn", "--factory", target),
            *("--host", LOOPBACK, "--port", str(port), "--http", "httptools"),
            *("--loop", "uvloop", "--no-access-log", "--log-level", "warning"),
        ]
    return [
        *(sys.executable, "-m", "granian", "--factory", "--interface", "asgi"),
        *("--host", LOOPBACK, "--port", str(port), "--http", "1", "--no-ws"),
        *("--loop", "uvloop", "--no-access-log", "--log-level", "warning", target),
    ]


@contextmanager
def serving(server: str, root: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        command(server, port),
        cwd=REPO_ROOT,
        env={**os.environ, ROOT_ENV: root},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{server} exited with {proc.returncode}")
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=2)
            try:
                conn.request("GET", "/v2/")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
            finally:
                conn.close()
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    args = parser.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    from support.goregistry import free_port

    servers = ["uvicorn"]
    if shutil.which("granian") or _importable("granian"):
        servers.append("granian")
    results: dict[str, dict[str, Result]] = {}
    with scratch() as root, workload(root, sizes) as work:
        for tag, server in enumerate(servers):
            best = {"put": float("inf"), "get": float("inf"), "small": float("inf")}
            server_root = os.path.join(root, server)
            with serving(server, server_root, free_port()) as _proc:
                port = _proc_port(_proc)
                for number in range(sizes.rounds + 1):
                    digest = prepare_round(work, number, bytes([tag]))
                    put_s = timed(lambda: monolithic_put(port, work.fd, work.size, digest))  # noqa: B023
                    get_s = timed(lambda: get_blob(port, work.size, digest))  # noqa: B023
                    small_s = timed(lambda: small_blobs(port, work.small[number]))  # noqa: B023
                    if number:
                        best = {
                            "put": min(best["put"], put_s),
                            "get": min(best["get"], get_s),
                            "small": min(best["small"], small_s),
                        }
            big = sizes.big >> 20
            small = Result(
                f"{server}: {sizes.small_count} x 4 KiB POST+PUT",
                sizes.small_count * sizes.small_size,
                best["small"],
            )
            small.extra["blobs_per_s"] = sizes.small_count / best["small"]
            results[server] = {
                "put": Result(f"{server}: {big} MiB monolithic PUT", sizes.big, best["put"]),
                "get": Result(f"{server}: {big} MiB GET", sizes.big, best["get"]),
                "small": small,
            }
    comparisons = []
    if "granian" in results:
        for key in ("put", "get", "small"):
            g, u = results["granian"][key], results["uvicorn"][key]
            ratio = g.mb_per_s / u.mb_per_s
            comparisons.append(Comparison(f"granian / uvicorn: {key}", g.name, u.name, ratio, 1.2))
    print_table([r for server in results.values() for r in server.values()], comparisons)
    return 0


def _proc_port(proc: subprocess.Popen[bytes]) -> int:
    args = [str(a) for a in proc.args]  # type: ignore[union-attr]
    return int(args[args.index("--port") + 1])


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
