"""Every error distblob raises, in one place.

The names follow distribution's error set (``registry/storage`` and ``registry/api/errcode``) so
that an HTTP layer can map each to its OCI error code. All derive from :class:`DistblobError`;
errors about a value the caller passed (a digest, a name, a size, a hash state) are also
:class:`ValueError`\\ s, and the native module raises these very classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distblob.auth import Access


class DistblobError(Exception):
    """Base class of every distblob error."""


# -- digests and hash states -------------------------------------------------------------------


class DigestInvalidError(DistblobError, ValueError):
    """A digest string that does not follow the OCI grammar for its algorithm."""

    def __init__(self, digest: str, reason: str) -> None:
        super().__init__(f"invalid digest {digest!r}: {reason}")
        self.digest = digest
        self.reason = reason


class DigestUnsupportedError(DistblobError, ValueError):
    """A well-formed digest whose algorithm distblob does not implement."""

    def __init__(self, digest: str, reason: str = "unsupported digest algorithm") -> None:
        super().__init__(f"unsupported digest {digest!r}: {reason}")
        self.digest = digest
        self.reason = reason


class HashStateError(DistblobError, ValueError):
    """A serialised hash state that cannot be restored (wrong magic, size or contents)."""


# -- blob store (distribution's registry/storage errors) ---------------------------------------


class BlobExistsError(DistblobError):
    """The blob is already stored (raised where a write must not replace it)."""

    def __init__(self, digest: str) -> None:
        super().__init__(f"blob {digest} already exists")
        self.digest = digest


class BlobDigestUnsupportedError(DigestUnsupportedError):
    """The blob store was given a digest whose algorithm it cannot verify."""


class BlobInvalidDigestError(DigestInvalidError):
    """A digest the blob store cannot accept: malformed, or not matching the content."""


class BlobUnknownError(DistblobError, KeyError):
    """No blob with that digest is stored (or linked into the repository)."""

    def __init__(self, digest: str) -> None:
        super().__init__(f"blob {digest} unknown")
        self.digest = digest

    def __str__(self) -> str:
        # KeyError would quote the message; show it as written.
        return str(self.args[0])


class BlobUploadUnknownError(DistblobError, KeyError):
    """No upload with that id exists (never did, or committed, cancelled or purged)."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(f"blob upload {upload_id!r} unknown")
        self.upload_id = upload_id

    def __str__(self) -> str:
        return str(self.args[0])


class BlobUploadInvalidError(DistblobError, ValueError):
    """An upload whose stored data or state is unusable (for example a corrupt start time)."""


class BlobUploadBusyError(BlobUploadInvalidError):
    """Another writer holds the upload (see :mod:`distblob.storage.uploadlock`)."""


class BlobInvalidLengthError(DistblobError, ValueError):
    """The size the client declared does not match the bytes received."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"invalid blob length: declared {expected}, received {actual}")
        self.expected = expected
        self.actual = actual


class UnsupportedError(DistblobError):
    """The operation is disabled or not supported here (for example deletes when disabled)."""


class NameInvalidError(DistblobError, ValueError):
    """A repository name that is not a valid OCI repository name."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"invalid repository name {name!r}: {reason}")
        self.name = name
        self.reason = reason


# -- manifests and tags (distribution's registry/api/errcode, v2 error set) ------------------


class ManifestUnknownError(DistblobError, KeyError):
    """No manifest with that tag or digest in the repository."""

    def __init__(self, reference: str) -> None:
        super().__init__(f"manifest {reference!r} unknown")
        self.reference = reference

    def __str__(self) -> str:
        return str(self.args[0])


class ManifestInvalidError(DistblobError, ValueError):
    """A manifest that does not parse or validate (also a digest reference it does not match)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"manifest invalid: {reason}")
        self.reason = reason


class ManifestBlobUnknownError(DistblobError, KeyError):
    """A manifest references a blob (or a manifest, for an index) the repository lacks."""

    def __init__(self, digest: str) -> None:
        super().__init__(f"manifest references unknown blob {digest}")
        self.digest = digest

    def __str__(self) -> str:
        return str(self.args[0])


class TagInvalidError(DistblobError, ValueError):
    """A tag that does not follow the OCI tag grammar."""

    def __init__(self, tag: str, reason: str = "not a valid OCI tag") -> None:
        # Worded like NameInvalidError and DigestInvalidError: what, which, why.
        super().__init__(f"invalid tag {tag!r}: {reason}")
        self.tag = tag
        self.reason = reason


class NameUnknownError(DistblobError, KeyError):
    """The repository is not known to the registry."""

    def __init__(self, name: str) -> None:
        super().__init__(f"repository {name!r} unknown")
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])


# -- storage drivers (distribution's registry/storage/driver errors) ---------------------------


class StorageDriverError(DistblobError):
    """Base class of storage driver errors."""


class PathNotFoundError(StorageDriverError, KeyError):
    """Nothing is stored at the path."""

    def __init__(self, path: str) -> None:
        super().__init__(f"path not found: {path}")
        self.path = path

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidPathError(StorageDriverError, ValueError):
    """A driver path that is not absolute, clean, and made of allowed characters."""

    def __init__(self, path: str, reason: str = "invalid path") -> None:
        super().__init__(f"{reason}: {path!r}")
        self.path = path
        self.reason = reason


class WriteConflictError(StorageDriverError):
    """Another writer changed the file while this one wrote it (two writers of one upload on
    storage shared by several processes): this writer's bytes were not kept, and the file is as
    the other writer left it, or, when what it holds can no longer be proven, unusable."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class InvalidOffsetError(StorageDriverError, ValueError):
    """An offset outside the object (negative, or past its end)."""

    def __init__(self, path: str, offset: int) -> None:
        super().__init__(f"invalid offset {offset} for {path}")
        self.path = path
        self.offset = offset


class InvalidStorageDriverError(StorageDriverError, ValueError):
    """No storage driver is registered under that name
    (:mod:`distblob.storage.driver.factory`)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no storage driver named {name!r}")
        self.name = name


class DriverParameterError(StorageDriverError, ValueError):
    """A parameter a storage driver cannot be built with: an unknown key or a bad value.

    ``key`` names the parameter as the driver's section of the config spells it
    (``rootdirectory``, so the config can report ``storage.filesystem.rootdirectory``), or is
    empty when the fault is with the parameters as a whole (a dependency the driver needs is
    missing).
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key = key
        self.reason = reason


# -- a pull-through cache's upstream -----------------------------------------------------------


class UpstreamError(DistblobError):
    """The upstream registry of a pull-through cache could not be reached or answered
    unexpectedly. ``status`` 429 means it is rate limiting, with its ``Retry-After`` (if any)
    in ``retry_after``."""

    def __init__(self, message: str, status: int = 0, *, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class UpstreamAuthError(UpstreamError):
    """The upstream registry refused the configured (or anonymous) credentials."""


class TransferError(DistblobError):
    """The upstream transfer of a cold blob failed: nothing was cached, and the responses
    streaming it are aborted mid-body."""


# -- access control ----------------------------------------------------------------------------


class AuthChallenge(DistblobError):
    """An access controller refused a request (distribution's ``auth.Challenge``): no
    credentials, or credentials it does not accept. ``access`` is what the request needed,
    ``headers`` how to ask again (``WWW-Authenticate``); the HTTP layer answers 401
    UNAUTHORIZED with both. ``reason`` is for the server's log and never names a credential."""

    def __init__(self, reason: str, access: Sequence[Access], headers: Mapping[str, str]) -> None:
        super().__init__(f"authentication required: {reason}")
        self.reason = reason
        self.access = tuple(access)
        self.headers = dict(headers)


class AuthUnavailableError(DistblobError):
    """An access controller cannot decide (its htpasswd file is gone or unreadable): every
    request that brings credentials is refused until it can, as by distribution."""


__all__ = [
    "AuthChallenge",
    "AuthUnavailableError",
    "BlobDigestUnsupportedError",
    "BlobExistsError",
    "BlobInvalidDigestError",
    "BlobInvalidLengthError",
    "BlobUnknownError",
    "BlobUploadBusyError",
    "BlobUploadInvalidError",
    "BlobUploadUnknownError",
    "DigestInvalidError",
    "DigestUnsupportedError",
    "DistblobError",
    "DriverParameterError",
    "HashStateError",
    "InvalidOffsetError",
    "InvalidPathError",
    "InvalidStorageDriverError",
    "ManifestBlobUnknownError",
    "ManifestInvalidError",
    "ManifestUnknownError",
    "NameInvalidError",
    "NameUnknownError",
    "PathNotFoundError",
    "StorageDriverError",
    "TagInvalidError",
    "TransferError",
    "UnsupportedError",
    "UpstreamAuthError",
    "UpstreamError",
    "WriteConflictError",
]
