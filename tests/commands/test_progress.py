"""The progress bar of the maintenance commands, and what ``ingest`` feeds it."""

from __future__ import annotations

import io
import os
import pathlib
import subprocess
import sys

from distblob import Registry
from distblob.commands.ingest import Ingester
from distblob.commands.progress import Progress


def test_bytes_in_flight_count_until_the_file_is_done() -> None:
    stream = io.StringIO()
    progress = Progress(0, 0, label="ingest", stream=stream, enabled=True)
    progress.start(4 << 20, 2)
    progress.in_flight(1 << 20)
    assert "1.0 MiB / 4.0 MiB" in progress.line()
    assert "ETA" in progress.line() and "files 0/2" in progress.line()
    progress.advance(2 << 20)  # the first file done; the second one in hand reports anew
    progress.in_flight(1 << 20)
    assert "3.0 MiB / 4.0 MiB" in progress.line()
    progress.in_flight(5 << 20)  # never past the total
    assert "4.0 MiB / 4.0 MiB" in progress.line()


def test_a_failed_file_leaves_the_total_and_is_counted() -> None:
    stream = io.StringIO()
    with Progress(0, 0, label="ingest", stream=stream, enabled=True) as progress:
        progress.start(10, 2)
        progress.advance(3)
        progress.fail(7)
    final = stream.getvalue().rsplit("\r", 1)[-1]
    assert "3 B / 3 B" in final
    assert "ETA" not in final and " in 0:0" in final
    assert "files 2/2 (1 failed)" in final


def test_ingester_reports_how_far_the_files_in_hand_are_read(tmp_path: pathlib.Path) -> None:
    ingester = Ingester(
        Registry.filesystem(tmp_path / "root").repository("p/app"),
        algorithm="sha256",
        media_type="application/octet-stream",
    )
    source = tmp_path / "big"
    source.write_bytes(os.urandom(100_000))
    fd = os.open(source, os.O_RDONLY)
    try:
        os.lseek(fd, 12_345, os.SEEK_SET)
        ingester._in_hand[1] = fd
        assert ingester.bytes_in_hand() == 12_345
    finally:
        os.close(fd)
    assert ingester.bytes_in_hand() == 0  # closed meanwhile: counted as nothing


def test_ingest_on_a_terminal_draws_the_bar_and_reports_failures(tmp_path: pathlib.Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.bin").write_bytes(os.urandom(300_000))
    missing = tmp_path / "missing.bin"
    controller, terminal = os.openpty()
    try:
        command = [sys.executable, "-m", "distblob.cli", "ingest", str(src), str(missing)]
        result = subprocess.run(
            [*command, "--root", str(tmp_path / "root"), "--repo", "p/app"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=120,
        )
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                piece = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not piece:
                break
            shown += piece
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert result.returncode == 1
    text = shown.decode(errors="replace")
    assert "missing.bin" in text
    final = text.replace("\r\n", "\n").rstrip("\n").rsplit("\r", 1)[-1]
    assert "files 2/2 (1 failed)" in final and "ETA" not in final, text
