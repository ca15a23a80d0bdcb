"""S3 scenarios of issue 9: ``distblob serve`` on ``storage.s3`` against the filesystem driver and
the Go registry 2.8 on the same S3 server, and the raw client choice (boto3 against obstore).

The S3 server is ``rclone serve s3`` (in-memory backend) on loopback, started here; each server
under test gets its own bucket, emptied between rounds (rclone holds objects in memory). Every
server runs with ``storage.redirect.disable``, so GETs measure bytes served through it, and with
distribution's default part size (``chunksize`` 10 MiB).

Rows, all in one run:

- ``distblob serve, filesystem``: the baseline on the bench disk.
- ``distblob serve, s3``: the same server on rclone.
- ``go registry 2.8, s3 via shim``: Go 2.8.2 cannot take uploads from rclone directly (rclone
  leaves ``IsTruncated`` out of ``ListParts`` answers and 2.8 dereferences it), so it talks to
  rclone through :class:`~support.goregistry.ListPartsShim`, a Python proxy on loopback.
  ``distblob serve, s3 via shim`` runs through the same proxy: the Go ratio is taken against
  that row, so the proxy's cost is on both sides; ``s3 / s3 via shim`` shows what it costs.
- ``boto3`` and ``obstore`` move one object straight to and from rclone: a single PUT, a
  multipart upload in the driver's way (parts in flight on a few threads) and a GET.

The HTTP scenarios are those of :mod:`benches.server` (1 GiB monolithic PUT, 1 GiB in 16 MiB
PATCHes, 1 GiB GET), driven by the same ``sendfile`` client; every round uploads new content.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benches import server as http_bench
from benches.store import scratch
from benches.timing import Comparison, Result

# The server harnesses live with the tests (tests/support); import them from there.
_TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from support.goregistry import REGISTRY_BIN, ListPartsShim, S3GoRegistry  # noqa: E402
from support.s3server import REGION, RcloneS3  # noqa: E402
from support.server import DistblobServer  # noqa: E402

MIB = 1 << 20

FS = "distblob serve, filesystem"
S3 = "distblob serve, s3"
S3_SHIM = "distblob serve, s3 via shim"
GO = "go registry 2.8, s3 via shim"


@dataclass
class Sizes:
    """How big the scenarios are; ``quick`` shrinks them for CI's smoke run.

    ``patch`` stays at 5 MiB or more even in the quick run: Go 2.8 on rclone fails smaller
    PATCHes once an upload holds 5 MiB (see ``support.goregistry.go_s3_parameters``).
    """

    big: int = 1024 * MIB
    patch: int = 16 * MIB
    rounds: int = 2
    client_object: int = 256 * MIB
    client_part: int = 16 * MIB
    client_threads: int = 4

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            big=24 * MIB, patch=8 * MIB, rounds=1, client_object=16 * MIB, client_part=8 * MIB
        )


class S3DistblobServer(DistblobServer):
    """``distblob serve`` with ``storage.s3`` in place of the filesystem root."""

    def __init__(self, parameters: dict[str, Any]) -> None:
        super().__init__(Path(os.devnull))  # No root: nothing is stored on disk.
        self.parameters = parameters

    def config(self) -> dict[str, Any]:
        config = super().config()
        config["storage"].pop("filesystem", None)
        config["storage"]["s3"] = self.parameters
        config["storage"]["redirect"] = {"disable": True}
        return config


def empty_bucket(rclone: RcloneS3, bucket: str) -> None:
    """Delete every object of ``bucket`` (rclone keeps them in memory)."""
    client = rclone.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": entry["Key"]} for entry in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])


# -- the registries ----------------------------------------------------------------------------


@dataclass
class Target:
    """A server under test: how to start it, and what to clean after each round."""

    name: str
    tag: bytes
    make: Callable[[], AbstractContextManager[Any]]
    clean: Callable[[], None]


def _targets(root: str, rclone: RcloneS3, shim: ListPartsShim) -> list[Target]:
    def s3(via_shim: bool) -> tuple[dict[str, Any], Callable[[], None]]:
        bucket = rclone.new_bucket("bench")
        parameters = rclone.parameters(bucket)
        if via_shim:
            parameters["regionendpoint"] = shim.endpoint
        return parameters, lambda: empty_bucket(rclone, bucket)

    plain, plain_clean = s3(False)
    shimmed, shimmed_clean = s3(True)
    targets = [
        Target(FS, b"F", lambda: DistblobServer(Path(root, "distblob")), lambda: None),
        Target(S3, b"S", lambda: S3DistblobServer(plain), plain_clean),
        Target(S3_SHIM, b"P", lambda: S3DistblobServer(shimmed), shimmed_clean),
    ]
    if not REGISTRY_BIN.exists():
        print(f"({REGISTRY_BIN} not found: the Go registry is skipped)")
        return targets
    go, go_clean = s3(True)
    targets.append(Target(GO, b"G", lambda: S3GoRegistry(go), go_clean))
    return targets


def measure_target(target: Target, work: http_bench.Workload, sizes: Sizes) -> dict[str, Result]:
    """PUT, GET and PATCHes against one server: best of ``sizes.rounds`` after a warm-up."""
    best: dict[str, float] = {}
    timed = http_bench._timed
    with target.make() as running:
        port = running.port
        for number in range(sizes.rounds + 1):  # round 0 warms up and is not counted
            digest = http_bench._prepare_round(work, 2 * number, target.tag)
            put_s = timed(lambda: http_bench.monolithic_put(port, work.fd, work.size, digest))  # noqa: B023
            get_s = timed(lambda: http_bench.get_blob(port, work.size, digest))  # noqa: B023
            digest = http_bench._prepare_round(work, 2 * number + 1, target.tag)
            patch_s = timed(
                lambda: http_bench.chunked_patches(port, work.fd, work.size, sizes.patch, digest)  # noqa: B023
            )
            target.clean()
            if number:
                for key, seconds in (("put", put_s), ("get", get_s), ("patch", patch_s)):
                    best[key] = min(best.get(key, float("inf")), seconds)
    big = sizes.big >> 20
    name = target.name
    return {
        "put": Result(f"{name}: {big} MiB monolithic PUT", sizes.big, best["put"]),
        "patch": Result(
            f"{name}: {big} MiB in {sizes.patch >> 20} MiB PATCHes + PUT", sizes.big, best["patch"]
        ),
        "get": Result(f"{name}: {big} MiB GET", sizes.big, best["get"]),
    }


# -- the raw clients ---------------------------------------------------------------------------


def _boto3_client(rclone: RcloneS3) -> Any:
    """boto3 set up as the driver sets it up (checksums only where S3 requires them)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=rclone.endpoint,
        aws_access_key_id=rclone.access_key,
        aws_secret_access_key=rclone.secret_key,
        config=Config(
            region_name=REGION,
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            max_pool_connections=16,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def _obstore_store(rclone: RcloneS3, bucket: str) -> Any:
    from obstore.store import S3Store

    return S3Store(
        bucket,
        endpoint=rclone.endpoint,
        access_key_id=rclone.access_key,
        secret_access_key=rclone.secret_key,
        region=REGION,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


def _boto3_multipart(client: Any, bucket: str, key: str, data: bytes, sizes: Sizes) -> None:
    """The driver's way: parts sent by a few threads, then one CompleteMultipartUpload."""
    view = memoryview(data)
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]

    def send(number: int, start: int) -> dict[str, Any]:
        body = view[start : start + sizes.client_part]
        result = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=bytes(body)
        )
        return {"PartNumber": number, "ETag": result["ETag"]}

    with ThreadPoolExecutor(sizes.client_threads) as pool:
        starts = range(0, len(data), sizes.client_part)
        parts = list(pool.map(send, range(1, len(starts) + 1), starts))
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )


def _boto3_get(client: Any, bucket: str, key: str, size: int) -> None:
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    got = sum(len(chunk) for chunk in body.iter_chunks(4 * MIB))
    if got != size:
        raise RuntimeError(f"boto3 GET returned {got} bytes, expected {size}")


def _obstore_get(store: Any, key: str, size: int) -> None:
    import obstore

    got = len(obstore.get(store, key).bytes())
    if got != size:
        raise RuntimeError(f"obstore GET returned {got} bytes, expected {size}")


def measure_clients(rclone: RcloneS3, sizes: Sizes) -> dict[str, Result]:
    """One object up and down with each client, best of ``sizes.rounds`` after a warm-up."""
    bucket = rclone.new_bucket("clients")
    client = _boto3_client(rclone)
    data = os.urandom(sizes.client_object)
    size = len(data)
    part = sizes.client_part
    threads = sizes.client_threads
    scenarios: dict[str, Callable[[str], object]] = {
        "boto3 put": lambda key: client.put_object(Bucket=bucket, Key=key, Body=data),
        "boto3 multipart": lambda key: _boto3_multipart(client, bucket, key, data, sizes),
    }
    try:
        import obstore
    except ImportError:
        print("(obstore not installed: the client rows are boto3's only)")
    else:
        store = _obstore_store(rclone, bucket)
        scenarios["obstore put"] = lambda key: obstore.put(store, key, data, use_multipart=False)
        scenarios["obstore multipart"] = lambda key: obstore.put(
            store, key, data, use_multipart=True, chunk_size=part, max_concurrency=threads
        )
    best: dict[str, float] = {}
    for number in range(sizes.rounds + 1):
        for label, put in scenarios.items():
            key = f"{label.replace(' ', '-')}/{number}"
            seconds = http_bench._timed(lambda: put(key))  # noqa: B023
            if label.endswith("multipart"):
                get = "boto3 get" if label.startswith("boto3") else "obstore get"
                if label.startswith("boto3"):
                    get_s = http_bench._timed(lambda: _boto3_get(client, bucket, key, size))  # noqa: B023
                else:
                    get_s = http_bench._timed(lambda: _obstore_get(store, key, size))  # noqa: B023
                if number:
                    best[get] = min(best.get(get, float("inf")), get_s)
            if number:
                best[label] = min(best.get(label, float("inf")), seconds)
        empty_bucket(rclone, bucket)
    mib = size >> 20
    names = {
        "boto3 put": f"boto3: {mib} MiB put_object",
        "boto3 multipart": f"boto3: {mib} MiB in {part >> 20} MiB parts, {threads} threads",
        "boto3 get": f"boto3: {mib} MiB get_object",
        "obstore put": f"obstore: {mib} MiB put, one PUT",
        "obstore multipart": f"obstore: {mib} MiB put in {part >> 20} MiB parts, {threads} at once",
        "obstore get": f"obstore: {mib} MiB get",
    }
    return {label: Result(names[label], size, seconds) for label, seconds in best.items()}


# -- running -----------------------------------------------------------------------------------


@contextmanager
def _rclone() -> Iterator[tuple[RcloneS3, ListPartsShim]]:
    with RcloneS3() as rclone, ListPartsShim(rclone.port) as shim:
        yield rclone, shim


def run(quick: bool) -> tuple[list[Result], list[Comparison]]:
    sizes = Sizes.quick() if quick else Sizes()
    server_sizes = http_bench.Sizes(
        big=sizes.big, patch=sizes.patch, small_count=0, rounds=sizes.rounds
    )
    results: list[Result] = []
    measured: dict[str, dict[str, Result]] = {}
    with (
        scratch() as root,
        http_bench.workload(root, server_sizes) as work,
        _rclone() as (
            rclone,
            shim,
        ),
    ):
        for target in _targets(root, rclone, shim):
            measured[target.name] = measure_target(target, work, sizes)
            results += measured[target.name].values()
        clients = measure_clients(rclone, sizes)
        results += clients.values()

    comparisons: list[Comparison] = []

    def ratio(label: str, ours: Result, other: Result, goal: float) -> None:
        comparisons.append(
            Comparison(label, ours.name, other.name, ours.mb_per_s / other.mb_per_s, goal)
        )

    ops = (("put", "monolithic PUT"), ("patch", "PATCHes"), ("get", "GET"))
    # No goal for the cost of S3 itself or of the shim: they are reported, not targets.
    for key, label in ops:
        ratio(f"s3 {label}: s3 / filesystem (no goal)", measured[S3][key], measured[FS][key], 0.0)
    if GO in measured:
        for key, label in ops:
            ratio(
                f"s3 {label}: distblob / go, both via shim",
                measured[S3_SHIM][key],
                measured[GO][key],
                1.0,
            )
    for key, label in ops:
        ratio(
            f"s3 {label}: direct / via shim (no goal)",
            measured[S3][key],
            measured[S3_SHIM][key],
            0.0,
        )
    if "obstore get" in clients:
        for key in ("put", "multipart", "get"):
            ratio(
                f"client {key}: boto3 / obstore (no goal)",
                clients[f"boto3 {key}"],
                clients[f"obstore {key}"],
                0.0,
            )
    return results, comparisons


__all__ = ["Sizes", "run"]
