"""``distblob serve CONFIG`` (Go's form), ``--config`` and ``REGISTRY_CONFIGURATION_PATH``; a bad
config printed whole; warnings logged once at start."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import pytest
import yaml

from distblob.cli import main
from support.goregistry import answers_ping, free_port

pytestmark = pytest.mark.timeout(120)


def write(path: pathlib.Path, doc: object) -> pathlib.Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def serve_log(argv: list[str], environ: dict[str, str], cwd: pathlib.Path, port: int) -> str:
    """Start ``distblob serve`` with ``argv`` until it answers on ``port``; its log."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    log = cwd / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "distblob.cli", "serve", *argv],
            env={**base, **environ},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
    try:
        deadline = time.monotonic() + 60
        while not answers_ping(port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return log.read_text()


def config_doc(tmp_path: pathlib.Path, port: int) -> dict[str, object]:
    return {
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "root")}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "s", "http2": {"disabled": True}},
        "reporting": {"bugsnag": {"apikey": "k"}},
    }


def test_serve_a_positional_config_and_log_each_warning_once(tmp_path: pathlib.Path) -> None:
    port = free_port()
    config = write(tmp_path / "config.yml", config_doc(tmp_path, port))
    log = serve_log([str(config)], {}, tmp_path, port)
    assert log.count("config: reporting: accepted without effect") == 1
    assert log.count("config: http.http2: accepted without effect") == 1
    assert (tmp_path / "root").is_dir()


def test_serve_the_file_registry_configuration_path_names(tmp_path: pathlib.Path) -> None:
    port = free_port()
    config = write(tmp_path / "config.yml", config_doc(tmp_path, port))
    serve_log([], {"REGISTRY_CONFIGURATION_PATH": str(config)}, tmp_path, port)
    assert (tmp_path / "root").is_dir()


def test_config_and_positional_must_agree(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = write(tmp_path / "one.yml", {"log": {"level": "loud"}})
    two = write(tmp_path / "two.yml", {})
    assert main(["serve", str(one), "--config", str(two)]) == 2
    assert "two config files" in capsys.readouterr().err
    # The same file twice is one file: here it is read, and refused for its level.
    assert main(["serve", str(one), "--config", str(one)]) == 2
    assert "config: log.level:" in capsys.readouterr().err


def test_every_problem_is_printed_one_per_line(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = {
        "storage": {"azure": {"accountname": "a"}},
        "http": {"adr": ":5000"},
        "log": {"level": "loud"},
    }
    assert main(["serve", str(write(tmp_path / "bad.yml", doc))]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "distblob serve: config: storage.azure: not supported; use s3",
        "distblob serve: config: http.adr: unknown key (did you mean http.addr?)",
        "distblob serve: config: log.level: expected one of panic, fatal, error, warn, info, "
        "debug, trace, not 'loud'",
    ]
