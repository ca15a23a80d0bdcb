"""Crash campaign: SIGKILL writers at random moments, resume, and count what survives.

    python -m benches.reliability [--uploads N] [--seed S] [--json FILE]

Half the uploads (of random sizes, 64 KiB to 12 MiB, in random unaligned chunks) are written by
an engine-level writer process (``tests/support/crash_writer.py``, closing and resuming every
few chunks) that is SIGKILLed after a random delay; the other half are PATCHed through a
``distblob serve`` process that is SIGKILLed mid-request and restarted on the same root. Every
upload is then resumed from what storage holds (a fresh ``resume()``, or the upload's status
over HTTP) and finished with the intended digest. Printed figures: uploads interrupted, resumed
to the right digest, and wrong or partial blobs under ``blobs/`` (every ``data`` file is
rehashed and compared with its path; must be 0).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from distblob import Descriptor, Digest, Registry  # noqa: E402
from distblob.storage import paths  # noqa: E402
from support.crash_writer import REPOSITORY, intended_data  # noqa: E402
from support.server import DistblobServer  # noqa: E402

WRITER = ROOT / "tests" / "support" / "crash_writer.py"
MAX_SIZE = 12 << 20


def digest_of(data: bytes) -> Digest:
    return Digest("sha256:" + hashlib.sha256(data).hexdigest())


def engine_upload(root: Path, rng: random.Random, stats: dict[str, int]) -> None:
    """One crash_writer run killed at a random moment, then resumed here and committed."""
    size = rng.randrange(64 << 10, MAX_SIZE)
    seed = rng.randrange(1 << 30)
    engine = rng.choice(["native", "native", "python"])
    data = intended_data(size, seed)
    with subprocess.Popen(
        [sys.executable, str(WRITER), str(root), engine, str(size), str(seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        upload_id = first[1] if first and first[0] == "id" else ""
        time.sleep(rng.uniform(0, 0.15))
        done = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stats["uploads"] += 1
    if not upload_id:
        stats["not_started"] += 1
        return
    stats["interrupted"] += 0 if done else 1
    repo = Registry.filesystem(root, fsync=False).repository(REPOSITORY)
    writer = repo.blobs.resume(upload_id)
    held = writer.size
    if held > 0:
        with writer.reader() as reader:
            prefix_ok = reader.read() == data[:held]
    else:
        prefix_ok = True
    writer.write(data[held:])
    if prefix_ok and writer.commit(Descriptor(digest=digest_of(data))).digest == digest_of(data):
        stats["resumed_right"] += 1
    else:
        stats["resumed_wrong"] += 1


def _status(port: int, name: str, upload_id: str) -> int:
    """Bytes the upload holds (a status GET without ``_state``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", f"/v2/{name}/blobs/uploads/{upload_id}")
        resp = conn.getresponse()
        resp.read()
        if resp.status != 204:
            raise RuntimeError(f"status {resp.status}")
        # "0-<end>": the campaign always sends the first byte before any kill, since an empty
        # upload and a one-byte one both answer "0-0" (as distribution does).
        return int(resp.headers["Range"].split("-")[1]) + 1
    finally:
        conn.close()


def _request(
    port: int, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, target, body=body, headers=headers or {})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def server_upload(server: DistblobServer, rng: random.Random, stats: dict[str, int]) -> None:
    """PATCH one upload through ``server``; SIGKILL the server mid-way, restart, finish."""
    size = rng.randrange(64 << 10, MAX_SIZE)
    data = rng.randbytes(size)
    name = f"crash/serve{rng.randrange(4)}"
    resp = _request(server.port, "POST", f"/v2/{name}/blobs/uploads/")
    upload_id = resp.headers["Docker-Upload-UUID"]
    # The first byte goes in before any kill (the status of an empty upload and of a one-byte
    # one are both "0-0").
    _request(
        server.port, "PATCH", f"/v2/{name}/blobs/uploads/{upload_id}", data[:1],
        {"Content-Range": "0-0"},
    )  # fmt: skip
    killed = threading.Event()

    def kill_later() -> None:
        time.sleep(rng.uniform(0.0, 0.2))
        proc = server._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed.set()

    killer = threading.Thread(target=kill_later)
    killer.start()
    offset = 1
    try:
        while offset < size:
            n = min(size - offset, rng.randrange(1, 3 << 20))
            resp = _request(
                server.port, "PATCH", f"/v2/{name}/blobs/uploads/{upload_id}",
                data[offset : offset + n], {"Content-Range": f"{offset}-{offset + n - 1}"},
            )  # fmt: skip
            if resp.status != 202:
                raise RuntimeError(f"PATCH {resp.status}")
            offset += n
    except (OSError, http.client.HTTPException):
        pass  # the server died under us
    killer.join()
    stats["uploads"] += 1
    if killed.is_set():
        stats["interrupted"] += 1
        if server._proc is not None:
            server._proc.wait()
            server._proc = None
        server.start()  # same root, port and secret
    held = _status(server.port, name, upload_id)
    resp = _request(
        server.port, "PATCH", f"/v2/{name}/blobs/uploads/{upload_id}", data[held:],
        {"Content-Range": f"{held}-{size - 1}"},
    ) if held < size else None  # fmt: skip
    if resp is not None and resp.status != 202:
        stats["resumed_wrong"] += 1
        return
    resp = _request(
        server.port, "PUT", f"/v2/{name}/blobs/uploads/{upload_id}?digest={digest_of(data)}"
    )
    get = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    get.request("GET", f"/v2/{name}/blobs/{digest_of(data)}")
    body = get.getresponse().read()
    get.close()
    if resp.status == 201 and body == data:
        stats["resumed_right"] += 1
    else:
        stats["resumed_wrong"] += 1


def audit_blobs(root: Path) -> tuple[int, int]:
    """(blobs, wrong or partial blobs): every data file rehashed against its path."""
    registry = Registry.filesystem(root)
    total = wrong = 0
    for digest in registry.blobs.enumerate():
        total += 1
        with open(root / paths.blob_data_path(digest).lstrip("/"), "rb") as file:
            if hashlib.file_digest(file, digest.algorithm).hexdigest() != digest.encoded:
                wrong += 1
    return total, wrong


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.reliability")
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    stats = dict.fromkeys(
        ("uploads", "interrupted", "not_started", "resumed_right", "resumed_wrong"), 0
    )
    engine_stats = dict(stats)
    server_stats = dict(stats)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="distblob-reliability-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        with DistblobServer(root, extra_config={"log": {"level": "warn"}}) as server:
            for index in range(args.uploads):
                if index % 2 == 0:
                    engine_upload(root, rng, engine_stats)
                else:
                    server_upload(server, rng, server_stats)
        blobs, wrong = audit_blobs(root)
        leftover = sum(
            len(os.listdir(p)) for p in root.glob("docker/registry/v2/repositories/*/*/_uploads")
        )
    figures = {
        "engine": engine_stats,
        "serve": server_stats,
        "uploads": engine_stats["uploads"] + server_stats["uploads"],
        "interrupted": engine_stats["interrupted"] + server_stats["interrupted"],
        "resumed_right_digest": engine_stats["resumed_right"] + server_stats["resumed_right"],
        "resumed_wrong": engine_stats["resumed_wrong"] + server_stats["resumed_wrong"],
        "blobs": blobs,
        "wrong_or_partial_blobs": wrong,
        "uploads_left_behind": leftover,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(figures, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    ok = (
        wrong == 0
        and figures["resumed_wrong"] == 0
        and figures["resumed_right_digest"] == (figures["uploads"] - engine_stats["not_started"])
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
