"""Failed logins slowed down, measured: ``python -m benches.login_slowing [--quick]``.

``distblob serve`` with ``auth.htpasswd`` (one user, bcrypt cost 10) on loopback, hammered with
wrong passwords by a few threads, each request on a new connection:

- *without slowing*: every guess from another loopback source address (127.0.1.1, 127.0.1.2,
  ...), so no address reaches the free failures (:data:`distblob.auth.throttle.FREE_FAILURES`):
  what bcrypt and the cores allow;
- *with slowing*: every guess from one address (127.0.0.2), as an attacker without a pool of
  addresses; the rate is given over the whole run and after the free failures (the steady
  rate, one guess per :data:`~distblob.auth.throttle.MAX_DELAY` seconds at most).

Meanwhile a client at another address (127.0.0.3) pulls with the right password: every answer
must be 200, and its slowest answer is reported.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import itertools
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt

# The server harness lives with the tests (tests/support); import it from there.
_TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from distblob.auth.throttle import FREE_FAILURES  # noqa: E402
from support.server import DistblobServer  # noqa: E402

USER, PASSWORD, COST = "alice", "Right-Password-1", 10
ATTACKERS = 4


def _basic(password: str) -> dict[str, str]:
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _ask(port: int, source: str, headers: dict[str, str], timeout: float = 300.0) -> int:
    """One ``GET /v2/`` from ``source`` on a new connection; its status."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0)
    )
    try:
        conn.request("GET", "/v2/", headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _fresh_addresses() -> Iterator[str]:
    for third, fourth in itertools.product(range(1, 255), range(1, 255)):
        yield f"127.0.{third}.{fourth}"


def hammer(port: int, seconds: float, sources: Iterator[str]) -> list[float]:
    """Wrong guesses from ``ATTACKERS`` threads for ``seconds``: when each was answered (401),
    in seconds from the start."""
    lock = threading.Lock()
    answered: list[float] = []
    start = time.monotonic()
    stop = start + seconds

    def attacker(number: int) -> None:
        for guess in itertools.count():
            with lock:
                source = next(sources)
            wrong = _basic(f"guess-{number}-{guess}")
            try:
                status = _ask(port, source, wrong)
            except OSError:
                return  # the server stopped under a request still waiting its turn
            now = time.monotonic()
            if now > stop:
                return
            assert status == 401, status
            with lock:
                answered.append(now - start)

    for number in range(ATTACKERS):
        threading.Thread(target=attacker, args=(number,), daemon=True).start()
    time.sleep(seconds)
    with lock:
        return sorted(answered)


def run(quick: bool) -> dict[str, Any]:
    free_s, slowed_s = (4.0, 20.0) if quick else (15.0, 60.0)
    with tempfile.TemporaryDirectory(prefix="distblob-logins-") as tmp:
        htpasswd = Path(tmp, "htpasswd")
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(COST))
        htpasswd.write_bytes(USER.encode() + b":" + hashed + b"\n")
        auth = {"auth": {"htpasswd": {"realm": "bench", "path": str(htpasswd)}}}
        with DistblobServer(Path(tmp, "root"), extra_config=auth) as server:
            port = server.port
            unslowed = hammer(port, free_s, _fresh_addresses())

            latencies: list[float] = []
            statuses: list[int] = []
            done = threading.Event()

            def legitimate() -> None:
                while not done.is_set():
                    began = time.monotonic()
                    statuses.append(_ask(port, "127.0.0.3", _basic(PASSWORD)))
                    latencies.append(time.monotonic() - began)
                    time.sleep(0.2)

            client = threading.Thread(target=legitimate, daemon=True)
            client.start()
            slowed = hammer(port, slowed_s, itertools.repeat("127.0.0.2"))
            done.set()
            client.join()
    after = slowed[FREE_FAILURES:]
    steady = (len(after) - 1) / (after[-1] - after[0]) if len(after) > 1 else 0.0
    return {
        "bcrypt_cost": COST,
        "unslowed_guesses_per_s": len(unslowed) / free_s,
        "slowed_guesses_per_s": len(slowed) / slowed_s,
        "slowed_guesses": len(slowed),
        "steady_guesses_per_s": steady,
        "legitimate_requests": len(statuses),
        "legitimate_all_200": all(status == 200 for status in statuses),
        "legitimate_median_ms": statistics.median(latencies) * 1000,
        "legitimate_max_ms": max(latencies) * 1000,
        "seconds": (free_s, slowed_s),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (4 s and 20 s)")
    figures = run(parser.parse_args(argv).quick)
    free_s, slowed_s = figures["seconds"]
    unslowed, slowed = figures["unslowed_guesses_per_s"], figures["slowed_guesses_per_s"]
    print(f"wrong passwords, bcrypt cost {COST}, {ATTACKERS} threads, new connection each")
    print(f"  without slowing (a fresh address each) : {unslowed:8.2f} guesses/s ({free_s:.0f} s)")
    print(
        f"  with slowing (one address)             : {slowed:8.2f} guesses/s ({slowed_s:.0f} s,"
        f" {figures['slowed_guesses']} guesses)"
    )
    print(
        f"    after the {FREE_FAILURES} free failures           : "
        f"{figures['steady_guesses_per_s']:8.3f} guesses/s"
    )
    print(f"  ratio without / with                    : {unslowed / max(slowed, 1e-9):8.1f}x")
    print(
        f"right password from another address: {figures['legitimate_requests']} requests, "
        f"all 200: {figures['legitimate_all_200']}, median "
        f"{figures['legitimate_median_ms']:.1f} ms, slowest {figures['legitimate_max_ms']:.1f} ms"
    )
    return 0 if figures["legitimate_all_200"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
