"""A one-line progress bar on a terminal: bytes, rate, ETA and files, redrawn with ``\\r``.

It draws only when its stream is a TTY, so piped or logged runs stay quiet, and at most ten times
a second, so a million small files do not turn into a million terminal writes. It is thread-safe:
the workers of a command call :meth:`Progress.advance` as they finish, and messages go through
:meth:`Progress.message` so that they never land in the middle of the bar.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

#: Smallest time between two redraws, in seconds (at most ten a second).
MIN_INTERVAL = 0.1

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units with one decimal, e.g. ``1.5 GiB``."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` or ``m:ss``."""
    whole = max(0, int(seconds + 0.5))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Progress over ``total_bytes`` in ``total_files`` files.

    ``enabled`` defaults to whether ``stream`` (stderr) is a TTY. Use it as a context manager, or
    call :meth:`close` to draw the final state and end the line.
    """

    def __init__(
        self,
        total_bytes: int,
        total_files: int,
        *,
        label: str = "",
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self._stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.label = label
        self.done_bytes = 0
        self.done_files = 0
        self.failed_files = 0
        #: Bytes of the files being stored right now (counted done only when each is).
        self.in_flight_bytes = 0
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._width = 0  # length of the line on screen, to blank it out
        self._closed = False
        self._started = total_bytes > 0 or total_files > 0

    def start(self, total_bytes: int, total_files: int) -> None:
        """Set the totals (once known) and start the clock; the bar shows from now on."""
        with self._lock:
            self.total_bytes = total_bytes
            self.total_files = total_files
            self._start = time.monotonic()
            self._started = True

    def advance(self, nbytes: int, files: int = 1) -> None:
        """Count ``nbytes`` and ``files`` more as done; redraw if the last draw is old enough."""
        with self._lock:
            self.done_bytes += nbytes
            self.done_files += files
            if self.enabled and not self._closed:
                now = time.monotonic()
                if now - self._last_draw >= MIN_INTERVAL:
                    self._draw(now)

    def fail(self, nbytes: int) -> None:
        """A file of ``nbytes`` failed: it counts as handled, and its bytes leave the total."""
        with self._lock:
            self.total_bytes = max(0, self.total_bytes - nbytes)
            self.done_files += 1
            self.failed_files += 1

    def in_flight(self, nbytes: int) -> None:
        """``nbytes`` of the files in hand are done so far; redraw if the last draw is old."""
        with self._lock:
            self.in_flight_bytes = nbytes
            if self.enabled and self._started and not self._closed:
                now = time.monotonic()
                if now - self._last_draw >= MIN_INTERVAL:
                    self._draw(now)

    def message(self, text: str) -> None:
        """Print ``text`` on its own line on the stream, the bar redrawn below it."""
        with self._lock:
            if self.enabled and self._width:
                self._stream.write("\r" + " " * self._width + "\r")
                self._width = 0
            self._stream.write(text + "\n")
            if self.enabled and self._started and not self._closed:
                self._draw(time.monotonic())
            self._stream.flush()

    def line(self, now: float | None = None) -> str:
        """The bar's text for the current counts."""
        elapsed = (now if now is not None else time.monotonic()) - self._start
        done = self.done_bytes
        if not self._closed:
            done = min(done + self.in_flight_bytes, self.total_bytes)
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [self.label] if self.label else []
        parts.append(f"{format_bytes(done)} / {format_bytes(self.total_bytes)}")
        parts.append(f"{format_bytes(rate)}/s")
        remaining = self.total_bytes - done
        if self._closed or remaining <= 0:
            parts.append(f"in {format_duration(elapsed)}")
        elif rate > 0:
            parts.append(f"ETA {format_duration(remaining / rate)}")
        files = f"files {self.done_files}/{self.total_files}"
        if self.failed_files:
            files += f" ({self.failed_files} failed)"
        parts.append(files)
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        text = self.line(now)
        pad = max(0, self._width - len(text))
        self._stream.write("\r" + text + " " * pad)
        self._stream.flush()
        self._width = len(text)
        self._last_draw = now

    def close(self) -> None:
        """Draw the final counts and end the line (once)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.enabled:
                self._draw(time.monotonic())
                self._stream.write("\n")
                self._stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["MIN_INTERVAL", "Progress", "format_bytes", "format_duration"]
