"""An S3 storage driver (distribution's ``s3`` driver), on boto3.

Driver paths map to keys under ``rootdirectory`` in one bucket, so a registry stored here has
the same layout as on a filesystem, and distribution's S3 driver can serve it.

Writers stream into S3 multipart uploads: bytes are buffered until a part of ``chunksize``
fills and each part is sent by a background thread while the caller goes on writing (and
hashing). A writer's bytes become an object on :meth:`~S3FileWriter.commit` or
:meth:`~S3FileWriter.flush` only. :meth:`~S3FileWriter.close` keeps them *pending*, as
distribution's S3 driver does, so that a later ``writer(path, append=True)``, in this process or
another replica, continues the same multipart upload instead of copying what is there: that is
what makes a chunked blob upload cost one pass over its bytes. A pending file is described by
one small object next to its key, ``<key>#multipart``: the multipart upload id, the parts sent
and the bytes too few for a part (S3 wants 5 MiB per part but the last). No driver path can
name it (``#`` is not allowed), so it never shows up in listings; :meth:`S3Driver.stat` and
:meth:`S3Driver.walk` report the pending file with its full size, and deleting the file (or a
directory above it) aborts its multipart upload.

Object stores have no tree: a directory exists while something is stored below it (it goes
with its last file), and a file and a directory can share a name if written so. distblob's
layout never does that.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Final, TypeVar

from distblob._numbers import is_ascii_digits
from distblob.errors import (
    DriverParameterError,
    InvalidOffsetError,
    PathNotFoundError,
    StorageDriverError,
    WriteConflictError,
)
from distblob.storage.driver.base import (
    FileInfo,
    FileWriter,
    StorageDriver,
    is_path_component,
    join,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

MiB: Final = 1 << 20
#: S3's smallest part (but the last), and distribution's smallest ``chunksize``.
MIN_CHUNK_SIZE: Final = 5 * MiB
#: distribution's default ``chunksize``.
DEFAULT_CHUNK_SIZE: Final = 10 * MiB
#: S3's largest part, and the most parts an upload can have.
MAX_CHUNK_SIZE: Final = 5 * 1024 * MiB
MAX_PARTS: Final = 10_000
#: Largest object one ``CopyObject`` can copy; larger ones are copied part by part.
MAX_COPY_SIZE: Final = 5 * 1024 * MiB
#: distribution's ``multipartcopychunksize`` and ``multipartcopymaxconcurrency`` defaults.
DEFAULT_COPY_CHUNK_SIZE: Final = 32 * MiB
DEFAULT_COPY_CONCURRENCY: Final = 100
#: distribution's ``loglevel`` values (any case); all but ``off`` turn botocore's debug log on.
LOG_LEVELS: Final = (
    "off",
    "debug",
    "debugwithsigning",
    "debugwithhttpbody",
    "debugwithrequestretries",
    "debugwithrequesterrors",
    "debugwitheventstreambody",
)
#: How long a redirect URL stays valid (distribution: 20 minutes).
REDIRECT_EXPIRY: Final = 20 * 60
#: The key suffix of a pending file's multipart state.
PENDING_SUFFIX: Final = "#multipart"
#: Parts one writer may have in flight while it buffers the next.
PARTS_IN_FLIGHT: Final = 2
#: Reads of a small object that came back shorter than it is, before giving up.
READ_ATTEMPTS: Final = 5

_T = TypeVar("_T")

_session_lock = threading.Lock()
_shared_session: Any = None


def _session() -> Any:
    """One boto3 session for every driver: a session loads S3's service model once (about a
    second), after which making a client is cheap."""
    global _shared_session
    with _session_lock:
        if _shared_session is None:
            import boto3

            _shared_session = boto3.session.Session()
        return _shared_session


class S3ParameterError(DriverParameterError):
    """A ``storage.s3`` parameter that cannot be used; ``key`` names it. The s3 driver's
    :class:`~distblob.errors.DriverParameterError`, under the name it had before every driver
    checked its own parameters."""


#: Bodies from this size on are sent after a ``100 Continue`` (``Expect``), as aws-sdk-go
#: (distribution's driver) does; smaller ones right away.
EXPECT_CONTINUE_FROM: Final = 2 << 20


def _no_small_expect(request: Any, **_: Any) -> None:
    """Drop ``Expect: 100-continue`` from a small PUT (botocore adds it to every one; the
    header is not signed, so it can go once the request is signed).

    The wait for ``100 Continue`` costs a round trip per link and small blob, and a loaded
    S3-compatible server that answers it after botocore gave up waiting (1 s) desynchronises
    the connection: the next request on it reads that stale answer and hangs for the read
    timeout (seen with rclone under garbage collection's load).
    """
    headers = request.headers
    if "Expect" not in headers:
        return
    body: Any = request.body
    size: int | None = None
    if isinstance(body, bytes | bytearray | memoryview):
        size = len(body)
    elif hasattr(body, "seek") and hasattr(body, "tell"):
        with contextlib.suppress(OSError, ValueError):
            position = body.tell()
            size = body.seek(0, io.SEEK_END) - position
            body.seek(position)
    if size is not None and size < EXPECT_CONTINUE_FROM:
        del headers["Expect"]


def _client_error_code(error: BaseException | None) -> str:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return ""
    code = response.get("Error", {}).get("Code", "")
    return str(code)


# NoSuchUpload: a multipart upload completed or aborted meanwhile (by another replica).
_NOT_FOUND: Final = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchUpload"})
#: What S3 answers when a conditional write finds the object changed (or present).
_PRECONDITION: Final = frozenset({"412", "PreconditionFailed", "ConditionalRequestConflict"})
#: What CompleteMultipartUpload answers when a part is not the one named (another writer sent
#: other bytes under its number).
_WRONG_PARTS: Final = frozenset({"InvalidPart", "InvalidPartOrder"})
#: What a server answers a conditional PUT whose headers it does not implement.
_REFUSED_HEADER: Final = frozenset({"NotImplemented", "501", "InvalidArgument", "InvalidRequest"})
_MD5_ETAG: Final = re.compile(r'"?([0-9a-f]{32})"?')
_MULTIPART_ETAG: Final = re.compile(r'"?([0-9a-f]{32})-([0-9]+)"?')


def composite_etag(etags: Iterable[str]) -> str | None:
    """The ETag S3 gives the object a multipart upload of parts with these ETags assembles
    (the MD5 of their binary MD5s, ``-`` the count); ``None`` unless every ETag is an MD5."""
    digests = []
    for etag in etags:
        match = _MD5_ETAG.fullmatch(etag)
        if match is None:
            return None
        digests.append(bytes.fromhex(match.group(1)))
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


@dataclass(slots=True)
class _Pending:
    """The multipart state of a pending file, as stored in ``<key>#multipart``."""

    upload_id: str | None
    parts: builtins.list[tuple[int, str, int]]  # (number, etag, size)
    tail: bytes
    mod_time: float
    #: What the writer bound to these bytes (:meth:`FileWriter.bind`): the hash state's proof.
    bind: str | None = None
    #: The state object's ETag when read (not stored): a later save is conditional on it.
    etag: str | None = None

    @property
    def size(self) -> int:
        return sum(size for _, _, size in self.parts) + len(self.tail)

    def encode(self) -> bytes:
        header = {
            "version": 1,
            "uploadid": self.upload_id,
            "parts": [list(part) for part in self.parts],
            "tail": len(self.tail),
            "modtime": self.mod_time,
        }
        if self.bind is not None:
            header["bind"] = self.bind
        return json.dumps(header, separators=(",", ":")).encode() + b"\n" + self.tail

    @classmethod
    def decode(cls, raw: bytes, key: str, etag: str | None = None) -> _Pending:
        head, _, tail = raw.partition(b"\n")
        try:
            header = json.loads(head)
            parts = [(int(n), str(etag), int(size)) for n, etag, size in header["parts"]]
            upload_id = header["uploadid"]
            bind = header.get("bind")
            if header["version"] != 1 or header["tail"] != len(tail):
                raise ValueError("bad version or tail length")
            if upload_id is not None and not isinstance(upload_id, str):
                raise ValueError("bad upload id")
            if bind is not None and not isinstance(bind, str):
                raise ValueError("bad binding")
            return cls(upload_id, parts, tail, float(header["modtime"]), bind, etag)
        except (ValueError, KeyError, TypeError) as error:
            raise StorageDriverError(f"unreadable multipart state {key}: {error}") from None


class S3Driver(StorageDriver):
    """Stores under ``rootdirectory`` in an S3 bucket; thread-safe."""

    name = "s3"
    keeps_empty_directories = False
    checks_tree = False
    visible_on_close = False
    shared_by_replicas = True

    def __init__(
        self,
        bucket: str,
        *,
        region: str = "us-east-1",
        accesskey: str | None = None,
        secretkey: str | None = None,
        sessiontoken: str | None = None,
        regionendpoint: str | None = None,
        rootdirectory: str = "",
        chunksize: int = DEFAULT_CHUNK_SIZE,
        forcepathstyle: bool = False,
        secure: bool = True,
        skipverify: bool = False,
        encrypt: bool = False,
        keyid: str | None = None,
        storageclass: str | None = "STANDARD",
        objectacl: str | None = None,
        max_connections: int = 32,
        multipartcopychunksize: int = DEFAULT_COPY_CHUNK_SIZE,
        multipartcopymaxconcurrency: int = DEFAULT_COPY_CONCURRENCY,
        multipartcopythresholdsize: int = MAX_COPY_SIZE,
        useragent: str = "",
        usedualstack: bool = False,
        accelerate: bool = False,
        usefipsendpoint: bool = False,
        loglevel: str = "off",
    ) -> None:
        from botocore.config import Config

        if not bucket:
            raise S3ParameterError("bucket", "a bucket is required")
        if not MIN_CHUNK_SIZE <= chunksize <= MAX_CHUNK_SIZE:
            raise S3ParameterError(
                "chunksize", f"{chunksize} is not within {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}"
            )
        self.bucket = bucket
        self.chunk_size = chunksize
        self._prefix = rootdirectory.strip("/")
        endpoint = regionendpoint or None
        if endpoint is not None and "://" not in endpoint:
            endpoint = f"{'https' if secure else 'http'}://{endpoint}"
        self.endpoint = endpoint
        s3_options: Any = {
            "addressing_style": "path" if forcepathstyle else "auto",
            "use_dualstack_endpoint": usedualstack,
            "use_accelerate_endpoint": accelerate,
        }
        config = Config(
            region_name=region,
            signature_version="s3v4",
            s3=s3_options,
            max_pool_connections=max_connections,
            retries={"mode": "standard", "max_attempts": 3},
            # Checksums only where S3 requires them: the blob's own digest guards the bytes,
            # and not every S3-compatible server reads trailing checksums.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=10,
            read_timeout=60,
            user_agent_extra=useragent or None,
            use_fips_endpoint=usefipsendpoint,
        )
        if loglevel != "off":
            # distribution's aws-sdk log levels are all debug output; botocore's logger is
            # the process's, shared by every driver.
            logging.getLogger("botocore").setLevel(logging.DEBUG)
        #: Objects larger than this are copied part by part (``multipartcopy*``).
        self.copy_threshold = multipartcopythresholdsize
        self.copy_chunk_size = multipartcopychunksize
        self.copy_concurrency = multipartcopymaxconcurrency
        self._client: Any = _session().client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=accesskey or None,
            aws_secret_access_key=secretkey or None,
            aws_session_token=sessiontoken or None,
            use_ssl=secure,
            verify=not skipverify,
            config=config,
        )
        for operation in ("PutObject", "UploadPart"):
            self._client.meta.events.register(f"before-send.s3.{operation}", _no_small_expect)
        self._put_args: dict[str, str] = {}
        if encrypt:
            self._put_args["ServerSideEncryption"] = "aws:kms" if keyid else "AES256"
            if keyid:
                self._put_args["SSEKMSKeyId"] = keyid
        if storageclass and storageclass.upper() != "NOSPACE":
            self._put_args["StorageClass"] = storageclass
        if objectacl:
            self._put_args["ACL"] = objectacl
        self._pool = ThreadPoolExecutor(max_workers=max_connections, thread_name_prefix="s3")
        self._part_copy = True  # cleared when the server refuses UploadPartCopy
        self._conditional_writes = True  # cleared when the server refuses If-Match/If-None-Match

    @classmethod
    def check_parameters(cls, parameters: Mapping[str, object]) -> dict[str, Any]:
        """The constructor's keyword arguments for distribution's ``storage.s3`` parameters,
        without building a client: the config checks its storage section with this before
        anything connects (:mod:`distblob.storage.driver.factory`).

        Raises :class:`S3ParameterError` naming the parameter for an unknown key or a bad value,
        and a :class:`~distblob.errors.DriverParameterError` with an empty key when boto3, an
        optional extra, is not installed.
        """
        options: dict[str, Any] = {}
        for key, value in parameters.items():
            kind = _PARAMETERS.get(key)
            if kind is None:
                raise S3ParameterError(key, "unknown parameter")
            options[key] = kind(key, value)
        options.pop("v4auth", None)
        if "bucket" not in options:
            raise S3ParameterError("bucket", "a bucket is required")
        if "region" not in options:
            if not options.get("regionendpoint"):
                raise S3ParameterError("region", "a region is required")
            options["region"] = "us-east-1"
        # Looked up, not imported: importing boto3 takes a while, and a driver built later
        # imports it anyway.
        for package in ("boto3", "botocore"):
            if importlib.util.find_spec(package) is None:
                reason = f"needs boto3 (No module named {package!r}): pip install 'distblob[s3]'"
                raise DriverParameterError("", reason)
        return options

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, object]) -> S3Driver:
        """A driver from distribution's ``storage.s3`` parameters (the factory's ``s3``
        entry); it connects to nothing until first used.

        Raises what :meth:`check_parameters` raises.
        """
        return cls(**cls.check_parameters(parameters))

    def __repr__(self) -> str:
        where = f"{self.endpoint}/" if self.endpoint else ""
        return f"S3Driver({where}{self.bucket}/{self._prefix})"

    # -- keys --------------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        if path == "/":
            return self._prefix
        return f"{self._prefix}{path}" if self._prefix else path[1:]

    def _dir_prefix(self, path: str) -> str:
        key = self._key(path)
        return f"{key}/" if key else ""

    # -- client calls, with S3's errors turned into the driver's ----------------------------

    def _call(self, path: str, operation: Callable[..., _T], **kwargs: Any) -> _T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return operation(Bucket=self.bucket, **kwargs)
        except ClientError as error:
            code = _client_error_code(error)
            if code in _NOT_FOUND:
                raise PathNotFoundError(path) from None
            if code in _PRECONDITION:
                raise WriteConflictError(path, "another writer saved it first") from None
            raise StorageDriverError(f"s3: {path}: {code or error}") from error
        except BotoCoreError as error:
            # The connection to the object store failed: a failure of the medium.
            raise ConnectionError(f"s3: {path}: {error}") from error

    def _head(self, path: str, key: str | None = None) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self._call(
                path, self._client.head_object, Key=key or self._key(path)
            )
        except PathNotFoundError:
            return None
        return result

    def _get(self, path: str, key: str, **kwargs: Any) -> Any:
        return self._call(path, self._client.get_object, Key=key, **kwargs)

    def _put(
        self, path: str, key: str, data: ReadableBuffer, *, condition: dict[str, str] | None = None
    ) -> str | None:
        """Store ``data`` at ``key`` (with ``condition``: ``If-Match``/``If-None-Match``, where
        the server honours them); the new object's ETag."""
        body = data if isinstance(data, bytes) else bytes(data)
        extra = condition if condition and self._conditional_writes else {}
        try:
            result = self._call(
                path, self._client.put_object, Key=key, Body=body, **self._put_args, **extra
            )
        except StorageDriverError as error:
            if not extra or _client_error_code(error.__cause__) not in _REFUSED_HEADER:
                raise
            # A server that refuses the If-Match/If-None-Match headers: write unconditionally
            # from now on (writers then compare ETags first, and commits check what they store).
            self._conditional_writes = False
            result = self._call(path, self._client.put_object, Key=key, Body=body, **self._put_args)
        if not body:
            # rclone serve s3 (1.75) leaves an empty PUT unfinished until the object is read
            # back, and stalls the next PUT meanwhile; one HEAD settles it, and costs S3 little.
            self._head(path, key)
        etag = result.get("ETag") if isinstance(result, dict) else None
        return str(etag) if etag else None

    def _read_whole(self, path: str, key: str) -> tuple[bytes, str | None]:
        """The whole object at ``key`` and its ETag.

        S3 replaces an object atomically, but some S3-compatible servers (rclone) let a GET
        racing a PUT of the same key end early, with or without an error: a body shorter than
        its ``Content-Length`` is read again (a few times), never returned.
        """
        from botocore.exceptions import ResponseStreamingError

        for _attempt in range(READ_ATTEMPTS):
            response = self._get(path, key)
            try:
                data: bytes = response["Body"].read()
            except ResponseStreamingError:
                time.sleep(0.01)
                continue
            length = response.get("ContentLength")
            if length is None or len(data) == int(length):
                etag = response.get("ETag")
                return data, str(etag) if etag else None
            time.sleep(0.01)
        raise StorageDriverError(f"s3: {path}: the object ended early {READ_ATTEMPTS} times")

    def _pending(self, path: str, key: str | None = None) -> _Pending | None:
        """The pending state of ``key``, if there is one.

        A state that cannot be read is looked at again a few times over a tenth of a second
        first: an S3-compatible server that replaces objects non-atomically (rclone) shows a
        state another replica is replacing as empty for a moment, and that is no corrupt state.
        """
        key = (key or self._key(path)) + PENDING_SUFFIX
        for attempt in range(READ_ATTEMPTS):
            if attempt:
                time.sleep(0.02)
            try:
                raw, etag = self._read_whole(path, key)
            except PathNotFoundError:
                return None
            try:
                return _Pending.decode(raw, key, etag)
            except StorageDriverError:
                if attempt == READ_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _pending_etag(self, path: str, key: str) -> str | None:
        """The ETag of the pending state of ``key`` now (``None``: there is none)."""
        head = self._head(path, key + PENDING_SUFFIX)
        return None if head is None else str(head.get("ETag"))

    def _pages(self, path: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """The ``ListObjectsV2`` pages for the directory ``path``, S3's errors mapped."""
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self._client.get_paginator("list_objects_v2")
        try:
            yield from paginator.paginate(
                Bucket=self.bucket, Prefix=self._dir_prefix(path), **kwargs
            )
        except ClientError as error:
            raise StorageDriverError(f"s3: {path}: {_client_error_code(error)}") from error
        except BotoCoreError as error:
            raise ConnectionError(f"s3: {path}: {error}") from error

    def _keys_below(self, path: str) -> Iterator[dict[str, Any]]:
        """Every object under the directory ``path`` (its ``Key``, ``Size``, ...)."""
        for page in self._pages(path):
            yield from page.get("Contents", [])

    def _is_dir(self, path: str) -> bool:
        if path == "/":
            return True
        result = self._call(
            path, self._client.list_objects_v2, Prefix=self._dir_prefix(path), MaxKeys=1
        )
        return bool(result.get("KeyCount", 0) or result.get("Contents"))

    def _abort(self, path: str, key: str, upload_id: str | None) -> None:
        """Abort a multipart upload (gone already is fine)."""
        if upload_id is None:
            return
        with contextlib.suppress(PathNotFoundError, StorageDriverError):
            self._call(path, self._client.abort_multipart_upload, Key=key, UploadId=upload_id)

    # -- the driver ---------------------------------------------------------------------------

    def _get_content(self, path: str) -> bytes:
        return self._read_whole(path, self._key(path))[0]

    def _put_content(self, path: str, data: ReadableBuffer, *, fsync: bool) -> None:
        self._put(path, self._key(path), data)  # S3 stores a whole object atomically

    def _reader(self, path: str, offset: int) -> BinaryIO:
        head = self._head(path)
        if head is None:
            raise PathNotFoundError(path)
        size = int(head["ContentLength"])
        if offset > size:
            raise InvalidOffsetError(path, offset)
        raw = _S3RawReader(self, path, self._key(path), size)
        reader = io.BufferedReader(raw, buffer_size=MiB)
        reader.seek(offset)
        return reader

    def _writer(self, path: str, *, append: bool) -> FileWriter:
        return S3FileWriter(self, path, append=append)

    def _stat(self, path: str) -> FileInfo:
        if path != "/":
            head = self._head(path)
            if head is not None:
                return FileInfo(path, int(head["ContentLength"]), _mtime(head), False)
            pending = self._pending(path)
            if pending is not None:
                return FileInfo(path, pending.size, pending.mod_time, False)
        if self._is_dir(path):
            return FileInfo(path, 0, 0.0, True)
        raise PathNotFoundError(path)

    def _list(self, path: str) -> builtins.list[str]:
        prefix = self._dir_prefix(path)
        names: set[str] = set()
        for page in self._pages(path, Delimiter="/"):
            for entry in page.get("Contents", []):
                names.add(entry["Key"][len(prefix) :].removesuffix(PENDING_SUFFIX))
            for common in page.get("CommonPrefixes", []):
                names.add(common["Prefix"][len(prefix) :].rstrip("/"))
        if not names and path != "/":
            raise PathNotFoundError(path)
        return [join(path, name) for name in sorted(names) if is_path_component(name)]

    def _move(self, src: str, dst: str, *, fsync: bool) -> None:
        if src == dst:
            if self._head(src) is None and not self._is_dir(src):
                raise PathNotFoundError(src)
            return
        head = self._head(src)
        if head is None:
            if not self._is_dir(src):
                raise PathNotFoundError(src)
            if self._head(dst) is not None:
                raise StorageDriverError(
                    f"cannot move the directory {src} to {dst}: the destination is a file"
                )
            self._move_directory(src, dst)
            return
        if self._is_dir(dst):
            raise StorageDriverError(f"cannot move {src} to {dst}: the destination is a directory")
        self._copy(src, self._key(src), self._key(dst), int(head["ContentLength"]))
        self._call(src, self._client.delete_object, Key=self._key(src))

    def _move_directory(self, src: str, dst: str) -> None:
        src_prefix, dst_prefix = self._dir_prefix(src), self._dir_prefix(dst)
        entries = list(self._keys_below(src))
        for entry in entries:
            key: str = entry["Key"]
            self._copy(src, key, dst_prefix + key[len(src_prefix) :], int(entry["Size"]))
        self._delete_keys(src, [entry["Key"] for entry in entries])

    def _copy(self, path: str, src_key: str, dst_key: str, size: int) -> None:
        """One ``CopyObject`` up to ``multipartcopythresholdsize`` (and whenever the server
        refuses part copies), else boto3's managed copy in ``multipartcopychunksize`` parts,
        ``multipartcopymaxconcurrency`` at once."""
        source = {"Bucket": self.bucket, "Key": src_key}
        single = size <= MAX_COPY_SIZE
        if size <= self.copy_threshold or (single and not self._part_copy):
            self._call(
                path, self._client.copy_object, Key=dst_key, CopySource=source, **self._put_args
            )
            return
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=max(self.copy_threshold, 1),
            multipart_chunksize=self.copy_chunk_size,
            max_concurrency=self.copy_concurrency,
        )
        try:
            self._client.copy(source, self.bucket, dst_key, ExtraArgs=self._put_args, Config=config)
        except Exception as error:
            if not single:
                raise StorageDriverError(f"s3: {path}: copy failed: {error}") from error
            # A server without UploadPartCopy (rclone answers it with an empty body): one
            # CopyObject, and part copies are not tried again.
            self._part_copy = False
            self._call(
                path, self._client.copy_object, Key=dst_key, CopySource=source, **self._put_args
            )

    def _delete(self, path: str) -> None:
        key = self._key(path)
        keys = [key] if self._head(path) is not None else []
        pending = self._pending(path)
        if pending is not None:
            self._abort(path, key, pending.upload_id)
            keys.append(key + PENDING_SUFFIX)
        below = list(self._keys_below(path))
        for entry in below:
            name: str = entry["Key"]
            if name.endswith(PENDING_SUFFIX):
                inner = self._pending(path, name.removesuffix(PENDING_SUFFIX))
                if inner is not None:
                    self._abort(path, name.removesuffix(PENDING_SUFFIX), inner.upload_id)
            keys.append(name)
        if not keys:
            raise PathNotFoundError(path)
        self._delete_keys(path, keys)

    def _delete_files(self, paths: builtins.list[str]) -> None:
        self._delete_keys(paths[0], [self._key(path) for path in paths])

    def _delete_keys(self, path: str, keys: builtins.list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            result = self._call(
                path, self._client.delete_objects, Delete={"Objects": batch, "Quiet": True}
            )
            errors = [e for e in result.get("Errors", []) if e.get("Code") not in _NOT_FOUND]
            if errors:
                raise StorageDriverError(f"s3: deleting {path}: {errors[0]}")

    def _walk(self, path: str) -> Iterator[FileInfo]:
        prefix = self._dir_prefix(path)
        root: dict[str, Any] = {}
        for entry in self._keys_below(path):
            relative: str = entry["Key"][len(prefix) :]
            pending = relative.endswith(PENDING_SUFFIX)
            components = relative.removesuffix(PENDING_SUFFIX).split("/")
            if not all(is_path_component(c) for c in components):
                continue
            node = root
            for component in components[:-1]:
                child = node.setdefault(component, {})
                if not isinstance(child, dict):
                    break  # a file and a directory share a name: keep the file
                node = child
            else:
                name = components[-1]
                if isinstance(node.get(name), dict):
                    continue
                if pending:
                    if name in node:
                        continue  # the object is there too: it is what readers see
                    state = self._pending(path, entry["Key"].removesuffix(PENDING_SUFFIX))
                    if state is None:
                        continue
                    node[name] = FileInfo("", state.size, state.mod_time, False)
                else:
                    node[name] = FileInfo("", int(entry["Size"]), _mtime(entry), False)
        if not root and path != "/" and not self._is_dir(path):
            raise PathNotFoundError(path)
        entries: builtins.list[FileInfo] = []

        def visit(node: dict[str, Any], at: str) -> None:
            for name in sorted(node):
                child = node[name]
                child_path = join(at, name)
                if isinstance(child, dict):
                    entries.append(FileInfo(child_path, 0, 0.0, True))
                    visit(child, child_path)
                else:
                    entries.append(FileInfo(child_path, child.size, child.mod_time, False))

        visit(root, path)
        return iter(entries)

    def _sync(self) -> None:
        pass  # every completed request is durable in the object store

    def _redirect_url(self, path: str, method: str) -> str | None:
        operation = "head_object" if method.upper() == "HEAD" else "get_object"
        url: str = self._client.generate_presigned_url(
            operation,
            Params={"Bucket": self.bucket, "Key": self._key(path)},
            ExpiresIn=REDIRECT_EXPIRY,
        )
        return url

    # -- multipart uploads, for the writer ---------------------------------------------------

    def _create_multipart(self, path: str, key: str) -> str:
        result = self._call(path, self._client.create_multipart_upload, Key=key, **self._put_args)
        upload_id: str = result["UploadId"]
        return upload_id

    def _upload_part(self, path: str, key: str, upload_id: str, number: int, data: bytes) -> str:
        try:
            result = self._call(
                path,
                self._client.upload_part,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
            )
        except StorageDriverError as error:
            cause = error.__cause__
            if _client_error_code(cause) == "NotImplemented" and "already" in str(cause):
                # rclone: the part was sent before, with other bytes, and is already stored.
                raise WriteConflictError(
                    path, f"part {number} holds another writer's bytes"
                ) from None
            raise
        etag: str = result["ETag"]
        return etag

    def _copy_part(self, path: str, key: str, upload_id: str, number: int) -> str | None:
        """Copy the object at ``key`` as part ``number``; ``None`` if the server cannot."""
        if not self._part_copy:
            return None
        try:
            result = self._call(
                path,
                self._client.upload_part_copy,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.bucket, "Key": key},
            )
        except StorageDriverError:
            self._part_copy = False  # the server refuses it: copy through this process instead
            return None
        etag = result.get("CopyPartResult", {}).get("ETag")
        if not etag:
            # rclone answers 200 with an empty body and stores an empty part: never trust the
            # call again (the part is overwritten by the copy that follows).
            self._part_copy = False
            return None
        return str(etag)

    def _complete(
        self, path: str, key: str, upload_id: str, parts: builtins.list[tuple[int, str, int]]
    ) -> str:
        """Complete the upload from exactly ``parts``; the new object's ETag.

        S3 checks each part's ETag, so the object holds these parts and no other bytes: a part
        another writer sent again under the same number is ``WriteConflictError``.
        """
        try:
            result = self._call(
                path,
                self._client.complete_multipart_upload,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": n, "ETag": etag} for n, etag, _ in parts]
                },
            )
        except StorageDriverError as error:
            if _client_error_code(error.__cause__) in _WRONG_PARTS:
                raise WriteConflictError(path, "its parts hold another writer's bytes") from None
            raise
        return str(result.get("ETag", ""))

    def _abort_others(self, path: str, key: str, keep: str | None) -> None:
        """Abort every multipart upload of ``key`` but ``keep``: those of writers that lost a
        race on the same file, which nothing else would ever complete."""
        for upload in self._multipart_uploads(path, key):
            if upload["Key"] == key and upload["UploadId"] != keep:
                self._abort(path, key, upload["UploadId"])

    def _abort_others_quietly(self, path: str, key: str, keep: str | None) -> None:
        with contextlib.suppress(StorageDriverError, ConnectionError):
            self._abort_others(path, key, keep)

    def _multipart_uploads(self, path: str, prefix: str) -> Iterator[dict[str, Any]]:
        """The multipart uploads in progress whose keys start with ``prefix``."""
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self._client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Uploads", [])
        except ClientError as error:
            if _client_error_code(error) in _NOT_FOUND:
                return  # rclone, on a bucket that never had a multipart upload
            raise StorageDriverError(f"s3: {path}: {_client_error_code(error)}") from error
        except BotoCoreError as error:
            raise ConnectionError(f"s3: {path}: {error}") from error

    def _abort_orphan_uploads(self, path: str, older_than: float) -> int:
        aborted = 0
        for upload in self._multipart_uploads(path, self._dir_prefix(path)):
            started = upload.get("Initiated")
            if started is None or started.timestamp() >= older_than:
                continue
            key: str = upload["Key"]
            try:
                pending = self._pending(path, key)
            except StorageDriverError:
                continue  # an unreadable state: leave its upload to a purge of the upload
            if pending is not None and pending.upload_id == upload["UploadId"]:
                continue  # a pending file's: it goes with the file
            self._abort(path, key, upload["UploadId"])
            aborted += 1
        return aborted


def _mtime(entry: Mapping[str, Any]) -> float:
    """Whole seconds: listings give milliseconds but ``HEAD`` an HTTP date, and both must agree."""
    when = entry.get("LastModified")
    return float(int(when.timestamp() if when is not None else time.time()))


class _S3RawReader(io.RawIOBase):
    """A seekable reader of one object: each read continues a ranged GET, a seek starts anew.

    Every GET after the first asks for the object the first one found (``If-Match`` its ETag,
    and the ETag compared, for servers that ignore the header): a read broken off (the
    connection lost, or rclone ending a GET that races a PUT of the key) goes on where it
    stopped, and an object replaced meanwhile is ``WriteConflictError``, never a mix of two.
    """

    def __init__(self, driver: S3Driver, path: str, key: str, size: int) -> None:
        self._driver = driver
        self._path = path
        self._key = key
        self._size = size
        self._position = 0
        self._body: Any = None
        self._etag: str | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        target = base + offset
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        if target != self._position:
            self._drop()
            self._position = target
        return target

    def _open(self) -> None:
        condition = {"IfMatch": self._etag} if self._etag else {}
        response = self._driver._get(
            self._path, self._key, Range=f"bytes={self._position}-", **condition
        )
        etag = response.get("ETag")
        if self._etag is None:
            self._etag = etag
        elif etag != self._etag:
            response["Body"].close()
            raise WriteConflictError(self._path, "the object was replaced while it was read")
        self._body = response["Body"]

    def readinto(self, buffer: Any) -> int:
        from botocore.exceptions import ResponseStreamingError

        view = memoryview(buffer).cast("B")
        if self._position >= self._size or not view.nbytes:
            return 0
        for _attempt in range(READ_ATTEMPTS):
            if self._body is None:
                self._open()
            try:
                chunk = self._body.read(min(view.nbytes, self._size - self._position))
            except ResponseStreamingError:
                chunk = b""
            n = len(chunk)
            if n:
                view[:n] = chunk
                self._position += n
                return n
            self._drop()  # broken off: go on from here with a new GET of the same object
        raise StorageDriverError(f"s3: {self._path}: the object ended early {READ_ATTEMPTS} times")

    def _drop(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            with contextlib.suppress(Exception):
                body.close()

    def close(self) -> None:
        self._drop()
        super().close()


class S3FileWriter(FileWriter):
    """Writes one key through a multipart upload; see the module's docs for when bytes show.

    Several replicas may open writers of one pending file at once (a client retrying a request
    on another replica, or a hostile one). Nothing they do can make the file hold bytes its
    state does not describe:

    - the state object is saved whole, with what the writer binds to it (:meth:`bind`: the hash
      state's proof), and only if it is still the one this writer started from: conditionally
      where the server honours ``If-Match``/``If-None-Match``, else after a check of its ETag.
      A writer that finds it changed raises :class:`~distblob.errors.WriteConflictError` and
      leaves the other writer's file as it was;
    - completing names every part with its ETag, which S3 checks: a part another writer sent
      again under the same number fails the completion (``WriteConflictError``), and a
      completion whose ETag shows other parts leaves :attr:`verified` false;
    - a writer that failed (a part refused, the connection lost) saves nothing on close, and
      aborts a multipart upload it started: the file stays as it was before it.
    """

    binds = True

    def __init__(self, driver: S3Driver, path: str, *, append: bool) -> None:
        self._driver = driver
        self._path = path
        self._key = driver._key(path)
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self._parts: builtins.list[tuple[int, str, int]] = []
        self._in_flight: builtins.list[tuple[Future[str], int, int]] = []
        self._upload_id: str | None = None
        self._created_upload = False  # this writer started the multipart upload
        self._had_pending = False
        self._state_etag: str | None = None  # the state object's ETag this writer started from
        self._bind: str | None = None
        self._dirty = False  # something to save on close
        self._failed = False  # a write failed: save nothing on close
        self._base = 0  # bytes of an existing object this writer appends to, not yet included
        if append:
            pending = driver._pending(path, self._key)
            if pending is not None:
                self._upload_id = pending.upload_id
                self._parts = list(pending.parts)
                self._buffer += pending.tail
                self._had_pending = True
                self._state_etag = pending.etag
                self._bind = self.bound = pending.bind
            else:
                head = driver._head(path, self._key)
                if head is None:
                    if driver._is_dir(path):
                        raise StorageDriverError(f"cannot append to {path}: it is a directory")
                    raise PathNotFoundError(path)
                self._base = int(head["ContentLength"])
        else:
            if path != "/" and driver._is_dir(path):
                raise StorageDriverError(f"cannot write {path}: it is a directory")
            self._dirty = True  # even an empty file must come to exist
            existing = driver._pending(path, self._key)
            if existing is not None:
                driver._abort(path, self._key, existing.upload_id)
                self._had_pending = True
                self._state_etag = existing.etag

    # -- sizes and state ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        sent = sum(size for _, _, size in self._parts)
        flying = sum(size for _, _, size in self._in_flight)
        return self._base + sent + flying + len(self._buffer)

    def bind(self, value: str | None) -> None:
        if value != self._bind:
            self._bind = value
            self._dirty = True

    def _take_base(self) -> None:
        """Bring the existing object's bytes into this upload, before any new byte."""
        if not self._base:
            return
        base, self._base = self._base, 0
        if self._driver._part_copy and MIN_CHUNK_SIZE <= base <= MAX_CHUNK_SIZE:
            upload_id = self._ensure_upload()
            etag = self._driver._copy_part(self._path, self._key, upload_id, 1)
            if etag is not None:
                self._parts.append((1, etag, base))
                return
            # Start over on a clean upload: some servers keep a part they failed to copy.
            self._driver._abort(self._path, self._key, upload_id)
            self._upload_id = None
            self._created_upload = False
        # No server-side part copy: read the object back through this writer.
        existing = self._driver._get(self._path, self._key)["Body"]
        pending = bytes(self._buffer)
        self._buffer.clear()
        while chunk := existing.read(self._driver.chunk_size):
            self._append(chunk)
        self._append(pending)

    def _ensure_upload(self) -> str:
        if self._upload_id is None:
            self._upload_id = self._driver._create_multipart(self._path, self._key)
            self._created_upload = True
        return self._upload_id

    def _next_number(self) -> int:
        return len(self._parts) + len(self._in_flight) + 1

    def _send(self, data: bytes) -> None:
        """Send ``data`` as the next part, in the background."""
        upload_id = self._ensure_upload()
        number = self._next_number()
        if number > MAX_PARTS:
            raise StorageDriverError(
                f"cannot write {self._path}: more than {MAX_PARTS} parts of "
                f"{self._driver.chunk_size} bytes (raise storage.s3.chunksize)"
            )
        future = self._driver._pool.submit(
            self._driver._upload_part, self._path, self._key, upload_id, number, data
        )
        self._in_flight.append((future, number, len(data)))
        while len(self._in_flight) > PARTS_IN_FLIGHT:
            self._settle_one()

    def _settle_one(self) -> None:
        future, number, size = self._in_flight.pop(0)
        try:
            etag = future.result()
        except BaseException:
            self._drain_quietly()
            raise
        self._parts.append((number, etag, size))

    def _drain_quietly(self) -> None:
        for future, _, _ in self._in_flight:
            with contextlib.suppress(BaseException):
                future.result()
        self._in_flight.clear()

    def _settle(self) -> None:
        while self._in_flight:
            self._settle_one()

    def _append(self, view: Any) -> None:
        chunk = self._driver.chunk_size
        self._buffer += view
        if len(self._buffer) >= chunk:
            whole = len(self._buffer) - len(self._buffer) % chunk
            for start in range(0, whole, chunk):
                self._send(bytes(self._buffer[start : start + chunk]))
            del self._buffer[:whole]

    def _check_state_unchanged(self) -> None:
        """Raise ``WriteConflictError`` if the state object is no longer the one this writer
        started from (another writer saved or completed the file meanwhile)."""
        if self._driver._pending_etag(self._path, self._key) != self._state_etag:
            raise WriteConflictError(self._path, "another writer saved it meanwhile")

    def _condition(self) -> dict[str, str]:
        if self._state_etag is None:
            return {"IfNoneMatch": "*"}
        return {"IfMatch": self._state_etag}

    # -- FileWriter --------------------------------------------------------------------------

    def write(self, data: ReadableBuffer) -> int:
        self._check_writable()
        if self._failed:
            raise StorageDriverError(f"the writer of {self._path} failed: it takes no more bytes")
        view = memoryview(data).cast("B")
        if not view.nbytes:
            return 0
        with self._lock:
            try:
                self._take_base()
                self._append(view)
            except BaseException:
                self._failed = True  # see the class docs
                raise
            self._dirty = True
        return view.nbytes

    def _materialize(self) -> None:
        """Make the key hold every byte written: complete the upload (or put the object)."""
        if self._failed:
            raise StorageDriverError(f"the writer of {self._path} failed: nothing to store")
        try:
            self._settle()
            if self._base and not self._dirty:
                return  # appending writer that wrote nothing: the object is as it was
            self._take_base()
            size = self.size
            if self._upload_id is None:
                self._put_whole(size)
            else:
                self._complete()
        except BaseException:
            self._failed = True  # see the class docs
            raise
        self._buffer.clear()
        self._parts = []
        self._upload_id = None
        self._created_upload = False
        if self._had_pending:
            self._drop_state()
            self._state_etag = None
        self._base = size  # further writes append to the object now stored
        self._dirty = False

    def _drop_state(self) -> None:
        """Remove the pending state object (gone already is fine)."""
        with contextlib.suppress(PathNotFoundError):
            self._driver._call(
                self._path, self._driver._client.delete_object, Key=self._key + PENDING_SUFFIX
            )
        self._had_pending = False

    def _put_whole(self, size: int) -> None:
        """Store the buffered bytes (the whole file) as one object."""
        driver = self._driver
        if self._had_pending:
            try:
                self._check_state_unchanged()
            except WriteConflictError:
                if driver._pending_etag(self._path, self._key) is not None:
                    raise  # saved by another writer since
                head = driver._head(self._path, self._key)
                if head is None:
                    raise PathNotFoundError(self._path) from None  # completed and moved away
                if int(head["ContentLength"]) != size:
                    raise
                # Another writer stored the file (a retried commit on another replica) and
                # removed the state: usable if its bytes are the ones hashed, which nothing
                # proves here.
                self.verified = False
                return
        driver._put(self._path, self._key, self._buffer)

    def _complete(self) -> None:
        """Send what is buffered as the last part and complete the upload."""
        driver, path, key = self._driver, self._path, self._key
        assert self._upload_id is not None
        upload_id = self._upload_id
        total = self.size
        try:
            if self._buffer or not self._parts:
                self._send(bytes(self._buffer))
                self._buffer.clear()
                self._settle()
            etag = driver._complete(path, key, upload_id, self._parts)
        except PathNotFoundError:
            # NoSuchUpload: another writer completed the upload (a retried commit on another
            # replica), or one did and was killed before removing the state. The object holds
            # what that writer completed: usable if its size is ours, but nothing proves its
            # bytes, so readers that hashed must hash it again.
            head = driver._head(path, key)
            if head is None or int(head["ContentLength"]) != total:
                if self._had_pending:
                    self._drop_state()  # it names an upload that is gone: the file is over
                raise
            self.verified = False
            return
        except WriteConflictError:
            # The parts are not the ones this writer recorded: the upload can never complete
            # with them (some servers drop it on the failed completion already). The file is
            # over, so its state goes too: the upload is unknown from now on, not stuck.
            driver._abort(path, key, upload_id)
            if self._had_pending:
                self._drop_state()
            raise
        expected = composite_etag(e for _, e, _ in self._parts)
        match = _MULTIPART_ETAG.fullmatch(etag)
        if expected is not None and match is not None and f"{match[1]}-{match[2]}" != expected:
            self.verified = False  # S3 assembled other parts than these (it checks none?)
        # Uploads of this key that lost a race: aborted in the background, off the commit's path
        # (upload purging gets any this misses).
        driver._pool.submit(driver._abort_others_quietly, path, key, upload_id)

    def _save_pending(self) -> None:
        """Keep what was written pending: parts sent, the rest in the state object, saved only
        if that object is still the one this writer started from."""
        self._settle()
        if len(self._buffer) >= MIN_CHUNK_SIZE:
            self._send(bytes(self._buffer))
            self._buffer.clear()
            self._settle()
        state = _Pending(
            self._upload_id, self._parts, bytes(self._buffer), time.time(), bind=self._bind
        )
        key = self._key + PENDING_SUFFIX
        # Checked first, then written on the condition that it still holds: servers that
        # ignore If-Match (rclone) leave only the moment between the two requests.
        self._check_state_unchanged()
        try:
            etag = self._driver._put(self._path, key, state.encode(), condition=self._condition())
        except StorageDriverError as error:
            if isinstance(error, WriteConflictError):
                raise
            # Some servers (rclone) fail one of two PUTs of a key racing each other: if the
            # state changed meanwhile, that is the race, not the medium.
            self._check_state_unchanged()
            raise
        self._had_pending = True
        self._created_upload = False  # the state names it now
        self._state_etag = etag or self._driver._pending_etag(self._path, self._key)
        self._dirty = False

    def _give_up(self) -> None:
        """After a failure: drop what is in flight and abort an upload this writer started
        (nothing names it); the state object, and so the file, stay as they were."""
        self._drain_quietly()
        if self._created_upload:
            self._driver._abort(self._path, self._key, self._upload_id)
            self._created_upload = False

    def abandon(self) -> None:
        self._failed = True
        self.close()

    def flush(self) -> None:
        if self._closed:
            raise ValueError(f"the writer of {self._path} is closed")
        if self._cancelled or self._committed:
            return
        with self._lock:
            self._materialize()

    def commit(self, *, fsync: bool = False) -> None:
        self._check_writable()
        with self._lock:
            self._materialize()
        self._committed = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._failed:
            self._give_up()
            return
        if self._cancelled or self._committed or not self._dirty:
            self._drain_quietly()
            return
        with self._lock:
            try:
                self._take_base()
                self._save_pending()
            except BaseException:
                self._give_up()
                raise

    def cancel(self) -> None:
        if self._cancelled:
            return
        if self._closed:
            raise ValueError(f"the writer of {self._path} is closed and can no longer cancel")
        self._cancelled = self._closed = True
        self._drain_quietly()
        self._driver._abort(self._path, self._key, self._upload_id)
        with contextlib.suppress(PathNotFoundError):
            self._driver._delete(self._path)


def _text(key: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise S3ParameterError(key, f"expected a string, got {type(value).__name__}")
    return str(value)


def _boolean(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    raise S3ParameterError(key, f"expected true or false, got {value!r}")


def _size(key: str, value: object) -> int:
    if isinstance(value, bool):
        raise S3ParameterError(key, f"expected a number of bytes, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and is_ascii_digits(value.strip()):
        return int(value)
    raise S3ParameterError(key, f"expected a number of bytes, got {value!r}")


def _v4auth(key: str, value: object) -> bool:
    if not _boolean(key, value):
        raise S3ParameterError(key, "only signature v4 is supported")
    return True


def _chunk(key: str, value: object) -> int:
    size = _size(key, value)
    if not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE:
        raise S3ParameterError(key, f"{size} is not within {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
    return size


def _copy_threshold(key: str, value: object) -> int:
    size = _size(key, value)
    if size > MAX_COPY_SIZE:
        raise S3ParameterError(key, f"{size} is not within 0..{MAX_COPY_SIZE}")
    return size


def _concurrency(key: str, value: object) -> int:
    count = _size(key, value)
    if count < 1:
        raise S3ParameterError(key, f"expected 1 or more, got {value!r}")
    return count


def _log_level(key: str, value: object) -> str:
    level = _text(key, value).lower()
    if level not in LOG_LEVELS:
        raise S3ParameterError(key, f"expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


_PARAMETERS: Final[dict[str, Callable[[str, object], object]]] = {
    "accesskey": _text,
    "secretkey": _text,
    "sessiontoken": _text,
    "region": _text,
    "regionendpoint": _text,
    "bucket": _text,
    "rootdirectory": _text,
    "chunksize": _chunk,
    "forcepathstyle": _boolean,
    "secure": _boolean,
    "skipverify": _boolean,
    "v4auth": _v4auth,
    "encrypt": _boolean,
    "keyid": _text,
    "storageclass": _text,
    "objectacl": _text,
    "multipartcopychunksize": _chunk,
    "multipartcopymaxconcurrency": _concurrency,
    "multipartcopythresholdsize": _copy_threshold,
    "useragent": _text,
    "usedualstack": _boolean,
    "accelerate": _boolean,
    "usefipsendpoint": _boolean,
    "loglevel": _log_level,
}

__all__ = ["DEFAULT_CHUNK_SIZE", "MIN_CHUNK_SIZE", "S3Driver", "S3FileWriter", "S3ParameterError"]
