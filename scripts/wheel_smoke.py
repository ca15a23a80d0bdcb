"""Smoke test of an installed distblob wheel, run by ``scripts/wheel-check.sh``.

It runs in a fresh virtual environment outside the source tree, with no Rust toolchain on
PATH, and checks that the wheel's package is the one imported (its native module the abi3
build), then what a user does first: put a blob, resume an upload from the hash state a
closed writer saved, and serve a blob over HTTP with ``distblob serve`` on a loopback port.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import distblob
import distblob._native
from distblob import Descriptor, Digest, Registry

REPO = "smoke/app"
V2 = Path("docker/registry/v2")


def check_installed() -> None:
    """The package comes from the venv's site-packages, with the stable-ABI native module, and
    nothing could have compiled it here."""
    site = Path(sysconfig.get_paths()["platlib"]).resolve()
    package = Path(distblob.__file__).resolve()
    native = Path(distblob._native.__file__).resolve()
    assert package.is_relative_to(site), f"distblob imported from {package}, not {site}"
    assert native.parent == package.parent, native
    assert native.name == "_native.abi3.so", f"not the abi3 build: {native.name}"
    for tool in ("cargo", "rustc", "maturin"):
        assert shutil.which(tool) is None, f"{tool} is on PATH: {shutil.which(tool)}"


def put_blob(registry: Registry) -> bytes:
    """``put`` stores a blob by its digest and reads back the same bytes."""
    data = bytes(range(256)) * 1000
    descriptor = registry.repository(REPO).blobs.put(data, "application/octet-stream")
    assert descriptor.digest == "sha256:" + hashlib.sha256(data).hexdigest(), descriptor
    assert descriptor.size == len(data)
    assert registry.repository(REPO).blobs.get(str(descriptor.digest)) == data
    return data


def resume_upload(registry: Registry, root: Path) -> None:
    """A closed upload leaves a Go-format hash state; the next writer resumes from it (hashing
    none of the first part again) and commits the right digest."""
    data = hashlib.sha256(b"smoke").digest() * 10_000
    first = 100_001  # not a multiple of the 64-byte block: the state holds a partial block
    blobs = registry.repository(REPO).blobs
    writer = blobs.create()
    writer.write(data[:first])
    upload_id = writer.id
    writer.close()
    states = root / V2 / "repositories" / REPO / "_uploads" / upload_id / "hashstates" / "sha256"
    state = (states / str(first)).read_bytes()
    assert (state[:4], len(state)) == (b"sha\x03", 108), state[:8]

    writer = blobs.resume(upload_id)
    assert (writer.size, writer.hashed) == (first, first), (writer.size, writer.hashed)
    writer.write(data[first:])
    digest = Digest("sha256:" + hashlib.sha256(data).hexdigest())
    descriptor = writer.commit(Descriptor(digest=digest, size=len(data)))
    assert (descriptor.digest, descriptor.size) == (digest, len(data)), descriptor
    assert blobs.get(str(digest)) == data


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(port: int, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    """``GET path``: the status, the headers (looked up regardless of case) and the body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.msg, response.read()
    finally:
        connection.close()


def serve_blob(root: Path, data: bytes, log: Path) -> None:
    """``distblob serve`` (the venv's console script) answers a blob GET with its bytes."""
    command = Path(sys.executable).parent / "distblob"
    assert command.is_file(), f"no console script at {command}"
    port = _free_port()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with log.open("wb") as output:
        server = subprocess.Popen(
            [str(command), "serve", "--root", str(root), "--addr", f"127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, f"distblob serve exited:\n{log.read_text()}"
            try:
                if _get(port, "/v2/")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"not answering after 30 s:\n{log.read_text()}"
            time.sleep(0.1)
        status, headers, body = _get(port, f"/v2/{REPO}/blobs/{digest}")
        assert (status, len(body)) == (200, len(data)), (status, body[:200])
        assert body == data
        assert headers["Docker-Content-Digest"] == digest, dict(headers)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> int:
    check_installed()
    with tempfile.TemporaryDirectory(prefix="distblob-smoke-") as tmp:
        root = Path(tmp) / "root"
        registry = Registry.filesystem(root)
        data = put_blob(registry)
        resume_upload(registry, root)
        serve_blob(root, data, Path(tmp) / "serve.log")
    version = ".".join(map(str, sys.version_info[:3]))
    print(f"wheel smoke test passed on CPython {version} ({os.path.basename(sys.executable)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
