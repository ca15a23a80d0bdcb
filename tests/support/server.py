"""Run ``distblob serve`` as a subprocess on a loopback port, for HTTP tests.

The mirror of :class:`tests.support.goregistry.GoRegistry`: same ``url``/``host``/``client()``
shape, a YAML config written to a temp dir (JSON, which YAML reads), and a pinned secret so
upload Locations stay valid across restarts and can be shared with a Go registry.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from support.goregistry import LOOPBACK, RegistryClient, answers_ping, deep_merge, free_port


class DistblobServerError(RuntimeError):
    """The server failed to start; the message carries its log."""


class DistblobServer:
    """``python -m distblob.cli serve --config FILE`` on 127.0.0.1 (a context manager)."""

    def __init__(
        self,
        root: Path,
        *,
        secret: str | None = None,
        delete_enabled: bool = False,
        extra_config: dict[str, Any] | None = None,
        startup_timeout: float = 20.0,
        client_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.root = Path(root)
        #: The client context for a server with ``http.tls`` (``url`` is then https).
        self.client_tls = client_tls
        self.secret = secret or secrets.token_hex(16)
        self.delete_enabled = delete_enabled
        self.extra_config = extra_config or {}
        self.startup_timeout = startup_timeout
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.log = ""
        #: The exit status of the last stop (-9: it had to be killed).
        self.returncode: int | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.client_tls else 'http'}://{LOOPBACK}:{self.port}"

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def client(self, *, timeout: float = 30.0) -> RegistryClient:
        return RegistryClient(self.url, timeout=timeout, tls=self.client_tls)

    def config(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root)},
                "delete": {"enabled": self.delete_enabled},
            },
            "http": {"addr": f"{LOOPBACK}:{self.port}", "secret": self.secret},
        }
        return deep_merge(base, self.extra_config)

    def __enter__(self) -> Self:
        self._tmp = tempfile.TemporaryDirectory(prefix="distblob-serve-")
        try:
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _log_path(self) -> Path:
        assert self._tmp is not None
        return Path(self._tmp.name) / "server.log"

    def log_text(self) -> str:
        try:
            return self._log_path().read_text(errors="replace")
        except (FileNotFoundError, AssertionError):
            return self.log

    def start(self) -> None:
        """Start the server; a free port is picked unless one was given. Another process can
        take a picked port before the server binds it (a loaded machine, tests in parallel):
        the server then exits at once, and another port is tried, up to three times."""
        if self.port != 0:
            self._start()
            return
        for attempt in range(3):
            self.port = free_port()
            try:
                self._start()
                return
            except DistblobServerError as exc:
                if attempt == 2 or "address already in use" not in str(exc):
                    raise

    def _start(self) -> None:
        assert self._tmp is not None
        config_path = Path(self._tmp.name) / "config.yml"
        config_path.write_text(json.dumps(self.config()))
        with self._log_path().open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "distblob.cli", "serve", "--config", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._tmp.name,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                self._proc = None
                raise DistblobServerError(f"distblob serve exited:\n{self.log_text()}")
            if self._answers_ping():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise DistblobServerError(f"distblob serve not ready:\n{self.log_text()}")
            time.sleep(0.05)

    def _answers_ping(self) -> bool:
        return answers_ping(self.port, self.client_tls)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.returncode = proc.returncode
        self.log = self.log_text()


class S3DistblobServer(DistblobServer):
    """``distblob serve`` on an S3 bucket instead of a filesystem root (deletes enabled, blobs
    served through the registry rather than redirected to the bucket, so a client checks
    every byte through it)."""

    def __init__(self, tmp: Path, parameters: dict[str, Any], *, secret: str | None = None) -> None:
        super().__init__(tmp, secret=secret, delete_enabled=True)
        self.parameters = parameters

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["storage"] = {
            "s3": self.parameters,
            "delete": {"enabled": True},
            "redirect": {"disable": True},
        }
        return config
