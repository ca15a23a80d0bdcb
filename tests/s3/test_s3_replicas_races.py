"""Races and faults between ``distblob serve`` replicas sharing one S3 bucket.

Every test states an invariant that must hold whatever the interleaving is. It runs a bounded
number of attempts (``DISTBLOB_RACE_ATTEMPTS``, 5 by default, which keeps the module near two
minutes on CI's two cores; 20 for a measurement), stopping early once ``DISTBLOB_RACE_BUDGET``
seconds (30 by default) have gone by, and counts what went wrong.
It asserts on the counts only after the last attempt, so a failure message gives the figures
of the whole run. When ``DISTBLOB_RACE_REPORT`` names a file, each test adds one JSON line with
its figures to it. ``DISTBLOB_RACE_LOGS`` names a directory that receives the replicas' logs,
and ``DISTBLOB_RACE_REDIS_HANG`` sets how many seconds Redis stays stopped (8 by default).

The scenarios:

1. Store poisoning. Two (or three) PATCHes with different bodies of one length go to one upload
   at once, each through another replica. The upload is then committed under the digest of one
   body. No blob may be stored whose bytes are not its digest's. With upload leases in Redis
   (``leased``), exactly one of the racing PATCHes advances the upload.
2. A PATCH that fails half way, because the replica's link to the bucket is cut or the replica
   is killed. The commit that follows is refused, or it stores the right bytes.
3. Two final PUTs of one upload at once give no 5xx. A replica killed during a commit leaves an
   upload that another replica can still finish (201), or that it had finished itself (404
   BLOB_UPLOAD_UNKNOWN for the retry, and the blob stored right), never a stuck one.
4. No S3 multipart upload outlives the upload it belongs to: after a purge, none is left.
5. A blob deleted through one replica is gone on every replica, with the in-memory cache, with
   Redis, and with Redis down during the delete.
6. A hung Redis does not hang the requests that touch the cache.

The replicas share one bucket and one ``http.secret``, and S3's smallest part (5 MiB) is their
``chunksize``. Replica ``p`` reaches rclone through a loopback proxy that can slow or cut the
link (:class:`delayproxy.DelayProxy`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import signal
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from test_s3_replicas import S3Replica

import distblob._native
from distblob import Registry
from distblob.storage.driver.s3 import MIN_CHUNK_SIZE, S3Driver
from distblob.storage.purge import purge_uploads
from support.delayproxy import DelayProxy
from support.redisserver import RedisServer
from support.s3server import LOOPBACK, RcloneS3

pytestmark = pytest.mark.timeout(300)

KiB = 1 << 10
MiB = 1 << 20
#: Attempts per race test, and the seconds after which a test stops starting new ones.
ATTEMPTS = int(os.environ.get("DISTBLOB_RACE_ATTEMPTS", "5"))
BUDGET = float(os.environ.get("DISTBLOB_RACE_BUDGET", "30"))
#: A JSON-lines file that collects every test's figures (unset: none).
REPORT = os.environ.get("DISTBLOB_RACE_REPORT")
#: A directory that receives each replica's log when the module ends (unset: none).
LOGS = os.environ.get("DISTBLOB_RACE_LOGS")
#: How long one HTTP request may take before the harness calls it hung.
REQUEST_TIMEOUT = 60.0
#: The slow link: each client-to-server chunk of replica ``p``'s link waits this long.
SLOW_LINK = (0.02, 0.05)
ROOT = "registry"
DELETE = {"delete": {"enabled": True}}

T = TypeVar("T")


# -- figures -----------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one test saw over its attempts."""

    test: str
    attempts: int = 0
    #: Blobs stored whose bytes do not hash to their digest.
    poisoned: int = 0
    #: Answers of 500 and above, by label (the request, or ``"<label> <status>"``).
    server_errors: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    notes: dict[str, Any] = field(default_factory=dict)

    def answer(self, label: str, answer: Answer) -> Answer:
        """Count ``answer`` under ``label``; returns it."""
        self.statuses[f"{label} {answer.label}"] += 1
        if answer.status >= 500:
            self.server_errors += 1
        return answer

    def count(self, note: str, n: int = 1) -> None:
        self.notes[note] = self.notes.get(note, 0) + n

    def message(self) -> str:
        data = asdict(self)
        data["statuses"] = dict(sorted(self.statuses.items()))
        return json.dumps(data, sort_keys=True, default=str)

    def save(self) -> None:
        if REPORT:
            with open(REPORT, "a") as report:
                report.write(self.message() + "\n")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    """The test's figures, written to the report however the test ends."""
    found = Figures(request.node.name)
    yield found
    found.save()


def attempts(figures: Figures, count: int = ATTEMPTS, budget: float = BUDGET) -> Iterator[int]:
    """``0, 1, ...``: at most ``count``, and none started after ``budget`` seconds (the first
    always is)."""
    deadline = time.monotonic() + budget
    for attempt in range(count):
        if attempt and time.monotonic() > deadline:
            return
        figures.attempts += 1
        yield attempt


# -- HTTP --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A response (``status`` 0 and ``error`` set when none came)."""

    status: int
    headers: dict[str, str]
    content: bytes = b""
    error: str = ""
    seconds: float = 0.0

    @property
    def location(self) -> str | None:
        return self.headers.get("location")

    @property
    def label(self) -> str:
        """The status and the first error code of the body (``"400 DIGEST_INVALID"``)."""
        if not self.status:
            return self.error
        try:
            code = str(json.loads(self.content)["errors"][0]["code"])
        except (ValueError, LookupError, TypeError):
            return str(self.status)
        return f"{self.status} {code}"


def send(
    replica: S3Replica,
    method: str,
    target: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    follow: bool = False,
    timeout: float = REQUEST_TIMEOUT,
) -> Answer:
    """One request to ``replica``; a transport failure is an :class:`Answer` too."""
    started = time.monotonic()
    try:
        with httpx.Client(timeout=timeout, follow_redirects=follow) as client:
            response = client.request(
                method, replica.url + target, content=body or None, headers=headers
            )
    except httpx.TransportError as error:
        return Answer(0, {}, error=type(error).__name__, seconds=time.monotonic() - started)
    return Answer(
        response.status_code,
        {k.lower(): v for k, v in response.headers.items()},
        response.content,
        seconds=time.monotonic() - started,
    )


def with_query(target: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(target)
    extra = urllib.parse.urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urllib.parse.urlunsplit(parts._replace(query=query))


def start_upload(replica: S3Replica, repo: str) -> str:
    """POST an upload; its Location (a path with ``_state``)."""
    answer = send(replica, "POST", f"/v2/{repo}/blobs/uploads/")
    assert answer.status == 202, answer
    assert answer.location is not None
    return answer.location


def patch(replica: S3Replica, location: str, body: bytes, start: int | None = 0) -> Answer:
    """PATCH ``body`` at ``start`` (``None``: no Content-Range, a streamed chunk)."""
    headers = {"Content-Type": "application/octet-stream"}
    if start is not None:
        headers["Content-Range"] = f"{start}-{start + len(body) - 1}"
    return send(replica, "PATCH", location, body=body, headers=headers)


def finish(replica: S3Replica, location: str, digest: str, body: bytes = b"") -> Answer:
    """The final PUT ``?digest=`` (empty body unless ``body``)."""
    headers = {"Content-Type": "application/octet-stream"}
    return send(replica, "PUT", with_query(location, digest=digest), body=body, headers=headers)


def upload_size(replica: S3Replica, location: str) -> tuple[int, str] | None:
    """The upload's size and a fresh Location from a GET of its status (``None``: gone)."""
    answer = send(replica, "GET", location)
    if answer.status != 204 or answer.location is None:
        return None
    # "0-0" is both an empty upload and one byte: no upload here ever holds a single byte.
    end = int(answer.headers["range"].rpartition("-")[2])
    return (end + 1 if end else 0), answer.location


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def at_once(
    calls: Sequence[Callable[[], T]],
    *,
    delays: Sequence[float] = (),
    timeout: float = REQUEST_TIMEOUT + 30,
) -> list[T]:
    """Run ``calls`` in threads released together by a barrier (call ``i`` then waits
    ``delays[i]`` seconds, when given); their results, in order."""
    barrier = threading.Barrier(len(calls), timeout=10)
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], T]) -> None:
        try:
            barrier.wait()
            if index < len(delays):
                time.sleep(delays[index])
            results[index] = call()
        except BaseException as error:
            results[index] = error

    threads = [
        threading.Thread(target=run, args=(i, call), daemon=True) for i, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a request hung"
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


class Background:
    """One call in a thread, joined with a timeout (a context manager)."""

    def __init__(self, call: Callable[[], T]) -> None:
        self._call = call
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.result = self._call()
        except BaseException as error:
            self.error = error

    def start(self) -> Background:
        self._thread.start()
        return self

    def __enter__(self) -> Background:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.join()

    def join(self, timeout: float = REQUEST_TIMEOUT + 30) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "a request hung"
        if self.error is not None:
            raise self.error
        return self.result


# -- the bucket, read directly ------------------------------------------------------------------


class Bucket:
    """What the replicas stored, read with boto3 (not through any replica)."""

    def __init__(self, server: RcloneS3, bucket: str, parameters: dict[str, Any]) -> None:
        self.name = bucket
        self.client = server.client()
        self.parameters = parameters
        self.root = str(parameters["rootdirectory"]).strip("/")

    def blob(self, digest: str) -> bytes | None:
        """The stored bytes of ``digest`` (``None``: no such blob)."""
        encoded = digest.split(":", 1)[1]
        key = f"{self.root}/docker/registry/v2/blobs/sha256/{encoded[:2]}/{encoded}/data"
        try:
            data: bytes = self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        return data

    def poisoned(self, digests: Sequence[str]) -> list[str]:
        """The digests among ``digests`` whose stored blob has other bytes."""
        wrong = []
        for digest in dict.fromkeys(digests):
            data = self.blob(digest)
            if data is not None and digest_of(data) != digest:
                wrong.append(digest)
        return wrong

    def multipart_uploads(self, prefix: str = "") -> list[dict[str, Any]]:
        """The multipart uploads in progress under ``prefix`` (every page)."""
        uploads: list[dict[str, Any]] = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.name, Prefix=prefix):
                uploads.extend(page.get("Uploads", []))
        except self.client.exceptions.NoSuchUpload:
            # rclone serve s3 (1.75) answers 404 NoSuchUpload for a bucket that never had a
            # multipart upload, instead of an empty list.
            return []
        return uploads

    def purge_and_count(self, repo: str, settle: float = 1.5) -> int:
        """Wait ``settle`` s (committed uploads are removed after their answer), purge every
        upload, and count the multipart uploads left under ``repo``."""
        time.sleep(settle)
        registry = Registry(S3Driver.from_parameters(self.parameters), redirect=False)
        purge_uploads(registry, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
        return len(self.multipart_uploads(f"{self.root}/docker/registry/v2/repositories/{repo}/"))


# -- replicas ----------------------------------------------------------------------------------


@dataclass
class Cluster:
    """Replicas ``a``, ``b``, ``c`` straight to the bucket and ``p`` through ``link``."""

    a: S3Replica
    b: S3Replica
    c: S3Replica
    p: S3Replica
    link: DelayProxy

    @property
    def all(self) -> tuple[S3Replica, ...]:
        return (self.a, self.b, self.c, self.p)

    def log_errors(self) -> int:
        """``unexpected error`` lines (a 500's traceback) logged by the replicas so far."""
        return sum(r.log_text().count("unexpected error") for r in self.all)

    def tracebacks(self) -> str:
        """The last lines of every 500's traceback the replicas logged (for a failure)."""
        return tracebacks(self.all)


def tracebacks(replicas: Sequence[S3Replica], lines: int = 30) -> str:
    found = []
    for replica in replicas:
        for entry in replica.log_text().split("unexpected error")[1:]:
            # The traceback: the lines after the error's own, up to the next log record.
            block = []
            for line in entry.splitlines()[1:]:
                if line.startswith("time="):
                    break
                block.append(line)
            found.append("\n".join(block[-lines:]))
    return "\n---\n".join(found)


def pid(replica: S3Replica) -> int:
    process = replica._proc
    assert process is not None, "the replica is not running"
    return process.pid


def kill(replica: S3Replica) -> None:
    """SIGKILL the replica's process and reap it."""
    process = replica._proc
    assert process is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    replica.stop()  # records the status, keeps the port for start()


def check_imports(replica: S3Replica) -> None:
    """The replica runs the distblob this test imports (the same native module file)."""
    native = os.path.realpath(distblob._native.__file__)
    maps = Path(f"/proc/{pid(replica)}/maps").read_text()
    assert native in maps, f"replica {replica.url} does not run {native}"


def keep_logs(replicas: dict[str, S3Replica]) -> None:
    """Copy the stopped replicas' logs into :data:`LOGS`, if set."""
    if not LOGS:
        return
    Path(LOGS).mkdir(parents=True, exist_ok=True)
    for name, replica in replicas.items():
        (Path(LOGS) / f"{name}.log").write_text(replica.log)


def start_all(replicas: Sequence[S3Replica]) -> None:
    """Start ``replicas`` at once (each takes a second or two to import boto3)."""
    at_once([replica.__enter__ for replica in replicas], timeout=120)
    for replica in replicas:
        check_imports(replica)


@pytest.fixture(scope="module")
def bucket_name(s3_server: RcloneS3) -> str:
    return s3_server.new_bucket("races")


@pytest.fixture(scope="module")
def parameters(s3_server: RcloneS3, bucket_name: str) -> dict[str, Any]:
    return s3_server.parameters(bucket_name, chunksize=MIN_CHUNK_SIZE, rootdirectory=f"/{ROOT}")


@pytest.fixture(scope="module")
def bucket(s3_server: RcloneS3, bucket_name: str, parameters: dict[str, Any]) -> Bucket:
    return Bucket(s3_server, bucket_name, parameters)


@pytest.fixture(scope="module")
def link(s3_server: RcloneS3) -> Iterator[DelayProxy]:
    with DelayProxy(LOOPBACK, s3_server.port, chunk=256 * KiB) as proxy:
        yield proxy


@pytest.fixture(autouse=True)
def _healthy_link(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts with the proxied link fast and whole, and leaves it so."""
    if "cluster" not in request.fixturenames:
        yield
        return
    proxy: DelayProxy = request.getfixturevalue("link")
    proxy.heal()
    yield
    proxy.heal()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, parameters: dict[str, Any], link: DelayProxy
) -> Iterator[Cluster]:
    extra = {"storage": DELETE}
    slow = {**parameters, "regionendpoint": link.endpoint}
    replicas = [
        S3Replica(tmp_path_factory.mktemp(name), parameters, extra_config=extra)
        for name in ("a", "b", "c")
    ]
    replicas.append(S3Replica(tmp_path_factory.mktemp("p"), slow, extra_config=extra))
    with contextlib.ExitStack() as stack:
        stack.callback(keep_logs, dict(zip("abcp", replicas, strict=True)))
        for replica in replicas:
            stack.callback(replica.__exit__, None, None, None)
        start_all(replicas)
        a, b, c, p = replicas
        yield Cluster(a, b, c, p, link)


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository of the test's own, so its uploads can be counted apart."""
    name = request.node.name.lower()
    return "races/" + "".join(ch if ch.isalnum() else "-" for ch in name).strip("-")[:80]


# -- 1. store poisoning -------------------------------------------------------------------------

SIZES = {"1KiB": KiB, "4MiB": 4 * MiB, "6MiB": 6 * MiB, "11MiB": 11 * MiB}
#: (variant, size) pairs: ``two``/``three`` replicas with Content-Range, ``no-range`` without
#: it, ``slow-link`` with one replica behind the slow proxy.
POISON_CASES = [
    *[("two", size) for size in SIZES],
    ("three", "1KiB"),
    ("three", "6MiB"),
    ("no-range", "1KiB"),
    ("no-range", "6MiB"),
    ("slow-link", "1KiB"),
    ("slow-link", "6MiB"),
    ("leased", "1KiB"),
    ("leased", "6MiB"),
]


@pytest.mark.parametrize(
    ("variant", "size"), POISON_CASES, ids=[f"{v}-{s}" for v, s in POISON_CASES]
)
def test_racing_patches_never_store_a_blob_under_another_digest(
    request: pytest.FixtureRequest,
    cluster: Cluster,
    bucket: Bucket,
    figures: Figures,
    repo: str,
    variant: str,
    size: str,
) -> None:
    n = SIZES[size]
    errors_before = cluster.log_errors()
    start = None if variant == "no-range" else 0
    rng = random.Random(size)
    if variant == "slow-link":
        cluster.link.delay = SLOW_LINK
    leased: CacheCluster | None = None
    if variant == "leased":
        leased = request.getfixturevalue("cache_cluster")
        bucket = leased.bucket
    for attempt in attempts(figures):
        if leased is not None:
            writers = [leased.a, leased.b] if attempt % 2 else [leased.b, leased.a]
        elif variant == "three":
            writers = [cluster.a, cluster.b, cluster.c]
        elif variant == "slow-link":
            writers = [cluster.a, cluster.p] if attempt % 2 else [cluster.p, cluster.a]
        else:
            writers = [cluster.a, cluster.b] if attempt % 2 else [cluster.b, cluster.a]
        location = start_upload(writers[0], repo)
        bodies = [os.urandom(n) for _ in writers]
        # Behind the slow link, replica p takes its time to resume and to save: the fast one
        # starts up to half a second later, so that their windows overlap in some attempts.
        delays = [0.0 if r is cluster.p else rng.uniform(0, 0.5) for r in writers]
        answers = at_once(
            [
                partial(patch, replica, location, body, start)
                for replica, body in zip(writers, bodies, strict=True)
            ],
            delays=delays if variant == "slow-link" else (),
        )
        for answer in answers:
            figures.answer("PATCH", answer)
        accepted = [i for i, answer in enumerate(answers) if answer.status == 202]
        figures.count(f"PATCHes accepted: {len(accepted)}")
        # Commit under the digest of the last body, on the Location its PATCH got (the one a
        # client that sent it would use), else on any Location there is.
        last = len(bodies) - 1
        chosen = last if last in accepted else (accepted[-1] if accepted else None)
        commit_at = answers[chosen].location if chosen is not None else location
        assert commit_at is not None
        committer = writers[attempt % len(writers)] if variant != "slow-link" else cluster.a
        if leased is not None and len(accepted) != 1:
            figures.count("leased: not exactly one PATCH accepted")
        committed = figures.answer("PUT", finish(committer, commit_at, digest_of(bodies[last])))
        digests = [digest_of(body) for body in bodies]
        poisoned = bucket.poisoned(digests)
        figures.poisoned += len(poisoned)
        if committed.status == 201 and bucket.blob(digests[last]) is None:
            figures.count("201 but no blob")
    figures.notes["log errors"] = cluster.log_errors() - errors_before
    figures.notes["orphan multipart uploads after purge"] = bucket.purge_and_count(repo)
    assert figures.poisoned == 0, f"poisoned blobs: {figures.message()}"
    assert figures.server_errors == 0, (
        f"5xx answers: {figures.message()}\n{(leased or cluster).tracebacks()}"
    )
    assert not figures.notes.get("leased: not exactly one PATCH accepted"), figures.message()


# -- 2. a PATCH that fails half way -------------------------------------------------------------


def _check_commit_refused_or_right(
    figures: Figures, bucket: Bucket, answer: Answer, body: bytes, label: str
) -> None:
    """``answer`` to a commit of ``body``: a 4xx, or a 201 with the bytes stored. Counts."""
    digest = digest_of(body)
    stored = bucket.blob(digest)
    if stored is not None and digest_of(stored) != digest:
        figures.poisoned += 1
    if answer.status == 201:
        if stored != body:
            figures.count(f"{label}: 201 without the right bytes")
    elif not 400 <= answer.status < 500:
        figures.count(f"{label}: neither 201 nor 4xx")


def _after_a_failed_patch(
    figures: Figures,
    bucket: Bucket,
    replica: S3Replica,
    location: str,
    failed: Answer,
    body: bytes,
    resume: bool,
) -> None:
    """What a client does after the PATCH of ``body`` on ``location`` ``failed``: without
    ``resume``, commit at once (on the Location the PATCH answered, if any), which must be
    refused or store the right bytes. With ``resume``, ask where the upload stands, send the
    rest and commit, which must store the right bytes. A 400 DIGEST_INVALID cancels the upload
    (as in distribution), so each attempt does one or the other."""
    if not resume:
        at = failed.location if failed.status == 202 and failed.location else location
        answer = figures.answer("PUT at once", finish(replica, at, digest_of(body)))
        _check_commit_refused_or_right(figures, bucket, answer, body, "PUT at once")
        return
    status = upload_size(replica, location)
    if status is None:
        figures.count("upload gone after the failure")
        figures.count("final PUT not 201")
        return
    size, location = status
    kind = "empty" if size == 0 else "whole" if size == len(body) else "partial"
    figures.count(f"upload after the failure: {kind}")
    if size > len(body):
        figures.count("upload larger than the body")
        return
    if size < len(body):
        answer = figures.answer("resume PATCH", patch(replica, location, body[size:], size))
        if answer.status != 202 or answer.location is None:
            figures.count("resume PATCH refused")
            figures.count("final PUT not 201")
            return
        location = answer.location
    answer = figures.answer("final PUT", finish(replica, location, digest_of(body)))
    _check_commit_refused_or_right(figures, bucket, answer, body, "final PUT")
    if answer.status != 201:
        figures.count("final PUT not 201")


def test_a_patch_cut_off_from_the_bucket_leaves_an_upload_refused_or_right(
    cluster: Cluster, bucket: Bucket, figures: Figures, repo: str
) -> None:
    """Replica ``p``'s link to the bucket is cut after a growing share of an 11 MiB PATCH (and
    refuses new connections until ``p`` answered, so boto3's retries fail too); replica ``a``
    then commits at once (refused or right) or, every other attempt, resumes and commits
    (right)."""
    n = 11 * MiB
    proxy = cluster.link
    total = attempts(figures, count=ATTEMPTS, budget=BUDGET)
    for attempt in total:
        body = os.urandom(n)
        location = start_upload(cluster.a, repo)
        # Cut points spread over the PATCH: its parts, then the state writes after the body.
        cut_at = int((attempt // 2 * 2 + 0.5) / ATTEMPTS * (n + 256 * KiB))
        proxy.cut_after(cut_at)

        def refuse_once_cut() -> None:
            deadline = time.monotonic() + REQUEST_TIMEOUT
            while proxy.armed and time.monotonic() < deadline:
                time.sleep(0.002)
            proxy.refuse(True)

        with Background(refuse_once_cut) as watcher:
            failed = patch(cluster.p, location, body)
            proxy.cut_after(None)  # the PATCH may have ended before the cut
        watcher.join()
        proxy.refuse(False)
        figures.statuses[f"cut PATCH {failed.label}"] += 1
        resume = attempt % 2 == 1
        _after_a_failed_patch(figures, bucket, cluster.a, location, failed, body, resume)
    figures.notes["orphan multipart uploads after purge"] = bucket.purge_and_count(repo)
    problems = {k: v for k, v in figures.notes.items() if "201 without" in k or "neither" in k}
    assert figures.poisoned == 0, f"poisoned blobs: {figures.message()}"
    assert not problems, f"commits neither refused nor right: {figures.message()}"
    assert not figures.notes.get("final PUT not 201"), f"resumed uploads: {figures.message()}"


def test_a_replica_killed_mid_patch_leaves_an_upload_refused_or_right(
    cluster: Cluster, bucket: Bucket, figures: Figures, repo: str
) -> None:
    """Replica ``b`` gets SIGKILL at a growing delay into an 11 MiB PATCH; ``a`` then commits
    at once (refused or right) or, every other attempt, resumes and commits (right)."""
    n = 11 * MiB
    # How long the PATCH takes when nothing happens: the kills are spread over that.
    body = os.urandom(n)
    timed = patch(cluster.b, start_upload(cluster.a, repo), body)
    assert timed.status == 202, timed
    span = 1.2 * timed.seconds
    figures.notes["PATCH seconds"] = round(timed.seconds, 3)
    for attempt in attempts(figures):
        body = os.urandom(n)
        location = start_upload(cluster.a, repo)
        with Background(partial(patch, cluster.b, location, body)) as patching:
            time.sleep(span * (attempt // 2 * 2) / max(1, ATTEMPTS - 1))
            kill(cluster.b)
        killed: Answer = patching.join()
        figures.statuses[f"killed PATCH {killed.label}"] += 1
        resume = attempt % 2 == 1
        with Background(cluster.b.start):
            _after_a_failed_patch(figures, bucket, cluster.a, location, killed, body, resume)
    figures.notes["orphan multipart uploads after purge"] = bucket.purge_and_count(repo)
    problems = {k: v for k, v in figures.notes.items() if "201 without" in k or "neither" in k}
    assert figures.poisoned == 0, f"poisoned blobs: {figures.message()}"
    assert not problems, f"commits neither refused nor right: {figures.message()}"
    assert not figures.notes.get("final PUT not 201"), f"resumed uploads: {figures.message()}"


# -- 3. stuck uploads ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["6MiB", "11MiB"])
def test_two_final_puts_at_once_answer_no_5xx(
    cluster: Cluster, bucket: Bucket, figures: Figures, repo: str, size: str
) -> None:
    """The whole body PATCHed through ``a``, then the final PUT sent to ``a`` and ``b`` at once:
    201 + 201 or 201 + 4xx, and the blob right."""
    n = SIZES[size] + 1  # a tail too small for a part
    errors_before = cluster.log_errors()
    for attempt in attempts(figures):
        body = os.urandom(n)
        digest = digest_of(body)
        patched = patch(cluster.a, start_upload(cluster.a, repo), body)
        assert patched.status == 202 and patched.location is not None, patched
        location = patched.location
        pair = (cluster.a, cluster.b) if attempt % 2 else (cluster.b, cluster.a)
        answers = at_once([partial(finish, r, location, digest) for r in pair])
        for answer in answers:
            figures.answer("PUT", answer)
        codes = sorted(answer.status for answer in answers)
        figures.count(f"pair {codes[0]}+{codes[1]}")
        if 201 not in codes:
            figures.count("no 201")
        stored = bucket.blob(digest)
        if stored is not None and stored != body:
            figures.poisoned += 1
        if 201 in codes and stored != body:
            figures.count("201 without the right bytes")
    figures.notes["log errors"] = cluster.log_errors() - errors_before
    figures.notes["orphan multipart uploads after purge"] = bucket.purge_and_count(repo)
    assert figures.poisoned == 0, f"poisoned blobs: {figures.message()}"
    assert figures.server_errors == 0, f"5xx answers: {figures.message()}\n{cluster.tracebacks()}"
    assert not figures.notes.get("no 201"), f"neither PUT stored the blob: {figures.message()}"


def test_a_replica_killed_mid_commit_leaves_an_upload_another_can_finish(
    cluster: Cluster, bucket: Bucket, figures: Figures, repo: str
) -> None:
    """The final PUT of a 6 MiB + 1 upload goes to ``b``, which gets SIGKILL at a growing
    delay into it; the same PUT sent to ``a`` then answers 201 and the blob is right."""
    n = 6 * MiB + 1

    def patched_upload() -> tuple[bytes, str]:
        body = os.urandom(n)
        answer = patch(cluster.a, start_upload(cluster.a, repo), body)
        assert answer.status == 202 and answer.location is not None, answer
        return body, answer.location

    body, location = patched_upload()
    timed = finish(cluster.b, location, digest_of(body))
    assert timed.status == 201, timed
    span = 1.5 * timed.seconds
    figures.notes["commit seconds"] = round(timed.seconds, 3)
    for attempt in attempts(figures):
        body, location = patched_upload()
        digest = digest_of(body)
        with Background(partial(finish, cluster.b, location, digest)) as committing:
            time.sleep(span * attempt / max(1, ATTEMPTS - 1))
            kill(cluster.b)
        killed: Answer = committing.join()
        figures.statuses[f"killed PUT {killed.label}"] += 1
        with Background(cluster.b.start):
            again = figures.answer("PUT on a", finish(cluster.a, location, digest))
        stored = bucket.blob(digest)
        if stored is not None and stored != body:
            figures.poisoned += 1
        outcome = "201" if again.status == 201 else f"{again.status}"
        outcome += ", blob right" if stored == body else ", no blob" if stored is None else ""
        figures.count(f"PUT on a: {outcome}")
        # The killed replica may have stored the blob and ended the upload before dying: the
        # retry then finds no upload (404 BLOB_UPLOAD_UNKNOWN, as distribution answers), and a
        # client's next HEAD finds the blob.
        finished_before = again.label == "404 BLOB_UPLOAD_UNKNOWN" and stored == body
        if (again.status != 201 or stored != body) and not finished_before:
            figures.count("not finished")
            # Stuck, or a one-off? The same PUT once more, on a third replica.
            retry = figures.answer("PUT retried on c", finish(cluster.c, location, digest))
            figures.count(f"PUT retried on c: {retry.label}")
    figures.notes["orphan multipart uploads after purge"] = bucket.purge_and_count(repo)
    assert figures.poisoned == 0, f"poisoned blobs: {figures.message()}"
    assert figures.server_errors == 0, f"5xx answers: {figures.message()}\n{cluster.tracebacks()}"
    assert not figures.notes.get("not finished"), f"uploads left unfinished: {figures.message()}"


# -- 4. orphan multipart uploads ----------------------------------------------------------------


def test_no_multipart_upload_outlives_its_upload(
    cluster: Cluster, bucket: Bucket, figures: Figures, repo: str
) -> None:
    """Uploads that ended (committed, refused or purged) leave no S3 multipart upload behind:
    racing PATCHes of 6 MiB then a commit, and racing final PUTs, then a purge."""
    n = 6 * MiB
    for attempt in attempts(figures, count=max(1, ATTEMPTS // 2)):
        location = start_upload(cluster.a, repo)
        bodies = [os.urandom(n), os.urandom(n)]
        pair = (cluster.a, cluster.b) if attempt % 2 else (cluster.b, cluster.a)
        answers = at_once(
            [partial(patch, r, location, b) for r, b in zip(pair, bodies, strict=True)]
        )
        for answer in answers:
            figures.answer("racing PATCH", answer)
        at = next((a.location for a in reversed(answers) if a.status == 202), location)
        assert at is not None
        figures.answer("PUT", finish(cluster.a, at, digest_of(bodies[1])))
        body = os.urandom(n + 1)
        patched = patch(cluster.a, start_upload(cluster.a, repo), body)
        assert patched.status == 202 and patched.location is not None, patched
        final = patched.location
        digest = digest_of(body)
        for answer in at_once([partial(finish, r, final, digest) for r in pair]):
            figures.answer("racing PUT", answer)
    orphans = bucket.purge_and_count(repo)
    figures.notes["orphan multipart uploads after purge"] = orphans
    # Every upload of the tests before this one has ended too: the whole bucket's count.
    everywhere = bucket.multipart_uploads()
    figures.notes["orphan multipart uploads in the bucket"] = len(everywhere)
    figures.notes["orphans by test"] = dict(
        Counter(upload["Key"].split("/")[6] for upload in everywhere)
    )
    assert orphans == 0, f"multipart uploads left: {figures.message()}"


# -- 5. caches outliving a delete ---------------------------------------------------------------


@dataclass
class CacheCluster:
    """Replicas ``a``, ``b``, ``c`` on Redis (``redis.dialtimeout`` 2s, as the project's tests
    use it) and ``d`` with only ``redis.addr`` (no timeouts: the defaults)."""

    redis: RedisServer
    a: S3Replica
    b: S3Replica
    c: S3Replica
    d: S3Replica
    bucket: Bucket

    def tracebacks(self) -> str:
        return tracebacks((self.a, self.b, self.c, self.d))


@pytest.fixture(scope="module")
def cache_cluster(
    tmp_path_factory: pytest.TempPathFactory, s3_server: RcloneS3, bucket_name: str
) -> Iterator[CacheCluster]:
    parameters = s3_server.parameters(
        bucket_name, chunksize=MIN_CHUNK_SIZE, rootdirectory="/cache-registry"
    )
    with RedisServer(tmp_path_factory.mktemp("redis")) as redis_server:
        timed = redis_server.config()
        timed["storage"].update(DELETE)
        plain = {
            "storage": {"cache": {"blobdescriptor": "redis"}, **DELETE},
            "redis": {"addr": f"{LOOPBACK}:{redis_server.port}"},
        }
        replicas = [
            S3Replica(tmp_path_factory.mktemp(name), parameters, extra_config=timed)
            for name in ("ra", "rb", "rc")
        ]
        replicas.append(S3Replica(tmp_path_factory.mktemp("rd"), parameters, extra_config=plain))
        with contextlib.ExitStack() as stack:
            stack.callback(keep_logs, dict(zip(("ra", "rb", "rc", "rd"), replicas, strict=True)))
            for replica in replicas:
                stack.callback(replica.__exit__, None, None, None)
            start_all(replicas)
            a, b, c, d = replicas
            yield CacheCluster(redis_server, a, b, c, d, Bucket(s3_server, bucket_name, parameters))


def push(replica: S3Replica, repo: str, data: bytes) -> str:
    """Push ``data`` as a blob (POST, PATCH, PUT); its digest."""
    patched = patch(replica, start_upload(replica, repo), data)
    assert patched.status == 202 and patched.location is not None, patched
    digest = digest_of(data)
    answer = finish(replica, patched.location, digest)
    assert answer.status == 201, answer
    return digest


def look(figures: Figures, replicas: Sequence[S3Replica], repo: str, digest: str) -> int:
    """HEAD and GET (redirects followed) ``digest`` on each replica; the 200s among them."""
    found = 0
    for replica in replicas:
        for method in ("HEAD", "GET"):
            answer = send(replica, method, f"/v2/{repo}/blobs/{digest}", follow=True)
            figures.answer(method, answer)
            found += answer.status == 200
    return found


@pytest.mark.parametrize("cache", ["inmemory", "redis"])
def test_a_deleted_blob_is_gone_on_every_replica(
    request: pytest.FixtureRequest, figures: Figures, repo: str, cache: str
) -> None:
    if cache == "inmemory":
        plain: Cluster = request.getfixturevalue("cluster")
        a, others = plain.a, (plain.b, plain.c)
    else:
        cached: CacheCluster = request.getfixturevalue("cache_cluster")
        a, others = cached.a, (cached.b, cached.c)
    for _attempt in attempts(figures, count=max(1, ATTEMPTS // 2)):
        digest = push(a, repo, os.urandom(KiB))
        assert look(figures, others, repo, digest) == 2 * len(others)
        deleted = send(a, "DELETE", f"/v2/{repo}/blobs/{digest}")
        assert deleted.status == 202, deleted
        stale = look(figures, others, repo, digest)
        figures.count("stale answers (200 after the delete)", stale)
        figures.count("answers after the delete", 2 * len(others))
    assert not figures.notes.get("stale answers (200 after the delete)"), figures.message()


@pytest.mark.parametrize("restart", [False, True], ids=["a-kept", "a-restarted"])
def test_a_blob_deleted_while_redis_is_down_is_gone_once_it_is_back(
    cache_cluster: CacheCluster, figures: Figures, repo: str, restart: bool
) -> None:
    """Redis stops (saving its data) before the delete through ``a``; with ``restart``, ``a``
    is restarted while Redis is still down. Once Redis is back on its port, ``b`` and ``c``
    answer 404 at once, and again after ``a`` served a request and two seconds went by."""
    cc = cache_cluster
    others = (cc.b, cc.c)
    for _attempt in attempts(figures, count=max(1, ATTEMPTS // 5)):
        digest = push(cc.a, repo, os.urandom(KiB))
        assert look(figures, others, repo, digest) == 2 * len(others)
        cc.redis.stop(save=True)
        try:
            deleted = figures.answer("DELETE", send(cc.a, "DELETE", f"/v2/{repo}/blobs/{digest}"))
            if restart:
                cc.a.stop()
                cc.a.start()
        finally:
            cc.redis.start()
        figures.count(f"DELETE {deleted.status}")
        figures.count("stale at once", look(figures, others, repo, digest))
        send(cc.a, "HEAD", f"/v2/{repo}/blobs/{digest_of(b'nothing')}")
        time.sleep(2)
        figures.count("stale 2 s later", look(figures, others, repo, digest))
    assert not figures.notes.get("stale at once"), figures.message()
    assert not figures.notes.get("stale 2 s later"), figures.message()


# -- 6. a hung Redis ----------------------------------------------------------------------------

#: How long Redis stays stopped (SIGSTOP) while a request touches the cache.
HANG = float(os.environ.get("DISTBLOB_RACE_REDIS_HANG", "8"))


@pytest.mark.parametrize("replica_name", ["d", "a"], ids=["no-timeouts", "dialtimeout-2s"])
def test_a_hung_redis_does_not_hang_a_blob_head(
    cache_cluster: CacheCluster, figures: Figures, repo: str, replica_name: str
) -> None:
    """Redis gets SIGSTOP for :data:`HANG` s; a HEAD of a blob the cache knows, on a replica
    whose connection to Redis is open, must still answer within 2 s."""
    replica: S3Replica = getattr(cache_cluster, replica_name)
    redis_process = cache_cluster.redis._process
    assert redis_process is not None
    limit = 2.0
    for _attempt in attempts(figures, count=2):
        digest = push(replica, repo, os.urandom(KiB))
        warm = send(replica, "HEAD", f"/v2/{repo}/blobs/{digest}")
        assert warm.status in (200, 307), warm
        os.kill(redis_process.pid, signal.SIGSTOP)
        try:
            head = partial(send, replica, "HEAD", f"/v2/{repo}/blobs/{digest}", timeout=HANG * 3)
            heading = Background(head).start()
            time.sleep(HANG)  # the HEAD is timed from its start, whenever it ends
        finally:
            os.kill(redis_process.pid, signal.SIGCONT)
        answer: Answer = heading.join()
        figures.answer("HEAD", answer)
        figures.notes.setdefault("HEAD seconds", []).append(round(answer.seconds, 2))
        if answer.seconds > limit:
            figures.count("HEADs slower than 2 s")
        after = send(replica, "HEAD", f"/v2/{repo}/blobs/{digest}")
        figures.notes.setdefault("HEAD after SIGCONT seconds", []).append(round(after.seconds, 2))
    assert not figures.notes.get("HEADs slower than 2 s"), figures.message()
