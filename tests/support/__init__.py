"""Shared helpers for tests: harnesses for real peers (the Go registry, skopeo)."""

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    """Poll ``predicate`` every 0.1 s until it holds; ``AssertionError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)
