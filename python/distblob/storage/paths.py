"""distribution's storage layout: where every object of a registry lives, as driver paths.

This is the layout of distribution's ``registry/storage/paths.go``, byte for byte, so that the Go
registry and distblob can share one storage tree. Everything but the proxy's scheduler state and
distblob's pending cache clears lives under ``/docker/registry/v2``::

    /docker/registry/v2
        blobs/
            <algorithm>/
                <first two characters of the hex>/
                    <hex>/
                        data                    the blob's bytes
        repositories/
            <name>/                             one or more components: "library/ubuntu"
                _layers/
                    <algorithm>/<hex>/link      a blob linked into the repository
                _manifests/
                    revisions/
                        <algorithm>/<hex>/link  a manifest stored in the repository
                    tags/
                        <tag>/
                            current/link        the manifest the tag points to
                            index/
                                <algorithm>/<hex>/link
                                                every manifest the tag ever pointed to
                _uploads/
                    <upload id>/
                        data                    the bytes received so far
                        startedat               RFC 3339 UTC, "2026-11-28T02:46:45Z"
                        algorithm               distblob only, for uploads not hashed with
                                                sha256 (absent means sha256, as in Go)
                        hashstates/
                            <algorithm>/
                                <offset>        the hasher's state after <offset> bytes
    /scheduler-state.json                       the proxy's expiry timers (at the driver root)
    /distblob/cache/clears/<record>             distblob only, outside distribution's tree:
                                                Redis cache clears not applied yet
                                                (distblob.storage.clears)

A ``link`` file holds a digest string, ``sha256:<hex>``, with no newline. Manifests are blobs like
any other; only their links differ. Hash states are in Go's ``MarshalBinary`` format and their
offset is written in decimal. In an algorithm name, ``+``, ``.`` and ``;`` become ``/`` (so a
multi-part algorithm nests), as distribution's ``blobAlgorithmReplacer`` does.

Every function here validates what it is given (digests with :class:`~distblob.digest.Digest`,
names and tags with :mod:`distblob.reference`, upload ids with :func:`validate_upload_id`), so
whatever a client sends, the path it yields stays in its place in the tree: no ``..``, no ``/``
where a single component belongs, nothing a driver would refuse.
"""

from __future__ import annotations

import re
from typing import Final

from distblob.digest import ALGORITHMS, Digest
from distblob.errors import BlobUploadUnknownError, DigestUnsupportedError, DistblobError
from distblob.reference import MAX_NAME_LENGTH, validate_repository_name, validate_tag

#: Every path of the layout but :data:`SCHEDULER_STATE_PATH` and :data:`CACHE_CLEARS_ROOT`
#: starts here.
ROOT: Final = "/docker/registry/v2"

#: The proxy scheduler's state file, at the driver root rather than under :data:`ROOT`.
SCHEDULER_STATE_PATH: Final = "/scheduler-state.json"

#: Where clears a Redis cache could not apply wait (:mod:`distblob.storage.clears`): distblob's
#: own, beside ``/docker`` rather than under :data:`ROOT`, so the Go registry never reads it.
CACHE_CLEARS_ROOT: Final = "/distblob/cache/clears"

#: Longest upload id. The HTTP route takes any length, but an id is one path component and no
#: filesystem takes a component longer than 255 bytes (``NAME_MAX``).
MAX_UPLOAD_ID_LENGTH: Final = 255

# distribution's route pattern [a-zA-Z0-9-_.=]+, spelled so that "-" cannot read as a range.
_UPLOAD_ID: Final = re.compile(r"[a-zA-Z0-9_.=-]+")
_ALGORITHM_SEPARATORS: Final = str.maketrans("+.;", "///")


# -- validation ------------------------------------------------------------------------------


def validate_upload_id(upload_id: str) -> str:
    """Return ``upload_id`` if it can name an upload, else raise ``BlobUploadUnknownError``.

    Ids are what distribution's route accepts, ``[a-zA-Z0-9-_.=]+``, except ``.`` and ``..``
    (which would name the wrong directory) and ids longer than :data:`MAX_UPLOAD_ID_LENGTH`.
    A client sending any other id asks for an upload that cannot exist, hence the error.
    """
    if (
        not isinstance(upload_id, str)
        or len(upload_id) > MAX_UPLOAD_ID_LENGTH
        or upload_id in (".", "..")
        or _UPLOAD_ID.fullmatch(upload_id) is None
    ):
        raise BlobUploadUnknownError(str(upload_id))
    return upload_id


def _algorithm_dir(algorithm: str) -> str:
    """The path form of an algorithm name: ``+ . ;`` become ``/``, so ``a+b`` nests as ``a/b``."""
    return algorithm.translate(_ALGORITHM_SEPARATORS)


def _algorithm_path(algorithm: str) -> str:
    """The path form of a registered algorithm; ``DigestUnsupportedError`` for any other name.

    Only registered algorithms are accepted, like :class:`~distblob.digest.Digest` does: there is
    nothing stored under any other, so a typo (``sha-256``) is reported instead of finding nothing.
    """
    if algorithm not in ALGORITHMS:
        raise DigestUnsupportedError(f"{algorithm}:", f"unsupported digest algorithm {algorithm!r}")
    return _algorithm_dir(algorithm)


def _digest_path(digest: str, *, multilevel: bool) -> str:
    """``<algorithm>/<hex>``, or ``<algorithm>/<hex[:2]>/<hex>`` for the blob store."""
    parsed = Digest(digest)
    algorithm = _algorithm_dir(parsed.algorithm)
    encoded = parsed.encoded
    if multilevel:
        return f"{algorithm}/{encoded[:2]}/{encoded}"
    return f"{algorithm}/{encoded}"


# -- the global blob store ---------------------------------------------------------------------


def blobs_root(algorithm: str | None = None) -> str:
    """``/docker/registry/v2/blobs``, or the directory of one algorithm's blobs."""
    if algorithm is None:
        return f"{ROOT}/blobs"
    return f"{ROOT}/blobs/{_algorithm_path(algorithm)}"


def blob_dir_path(digest: str) -> str:
    """The directory of one blob: ``blobs/<alg>/<hex[:2]>/<hex>``."""
    return f"{ROOT}/blobs/{_digest_path(digest, multilevel=True)}"


def blob_data_path(digest: str) -> str:
    """The blob's bytes: ``blobs/<alg>/<hex[:2]>/<hex>/data``."""
    return f"{blob_dir_path(digest)}/data"


def blob_data_path_template(algorithm: str) -> str:
    """:func:`blob_data_path` with ``{hex2}`` and ``{hex}`` for the digest's hex (native code
    fills them in after hashing)."""
    return f"{blobs_root(algorithm)}/{{hex2}}/{{hex}}/data"


# -- repositories ------------------------------------------------------------------------------


def repositories_root() -> str:
    """``/docker/registry/v2/repositories``, under which every repository has a directory."""
    return f"{ROOT}/repositories"


def repository_path(name: str) -> str:
    """A repository's directory: ``repositories/<name>``."""
    return f"{ROOT}/repositories/{validate_repository_name(name)}"


def layers_root(name: str) -> str:
    """The blobs linked into a repository: ``repositories/<name>/_layers``."""
    return f"{repository_path(name)}/_layers"


def layer_link_path(name: str, digest: str) -> str:
    """A blob's link in a repository: ``_layers/<alg>/<hex>/link``."""
    return f"{layers_root(name)}/{_digest_path(digest, multilevel=False)}/link"


def layer_link_path_template(name: str, algorithm: str) -> str:
    """:func:`layer_link_path` with ``{hex}`` for the digest's hex."""
    return f"{layers_root(name)}/{_algorithm_path(algorithm)}/{{hex}}/link"


def manifest_revisions_root(name: str) -> str:
    """The manifests of a repository: ``repositories/<name>/_manifests/revisions``."""
    return f"{repository_path(name)}/_manifests/revisions"


def manifest_revision_link_path(name: str, digest: str) -> str:
    """A manifest's link in a repository: ``_manifests/revisions/<alg>/<hex>/link``."""
    return f"{manifest_revisions_root(name)}/{_digest_path(digest, multilevel=False)}/link"


def manifest_tags_root(name: str) -> str:
    """The tags of a repository, one directory each: ``repositories/<name>/_manifests/tags``."""
    return f"{repository_path(name)}/_manifests/tags"


def manifest_tag_path(name: str, tag: str) -> str:
    """One tag's directory (removing it deletes the tag): ``_manifests/tags/<tag>``."""
    return f"{manifest_tags_root(name)}/{validate_tag(tag)}"


def manifest_tag_current_path(name: str, tag: str) -> str:
    """The link to the manifest a tag points to: ``_manifests/tags/<tag>/current/link``."""
    return f"{manifest_tag_path(name, tag)}/current/link"


def manifest_tag_index_path(name: str, tag: str) -> str:
    """Every manifest a tag pointed to, one link each: ``_manifests/tags/<tag>/index``."""
    return f"{manifest_tag_path(name, tag)}/index"


def manifest_tag_index_entry_link_path(name: str, tag: str, digest: str) -> str:
    """One entry of a tag's index: ``_manifests/tags/<tag>/index/<alg>/<hex>/link``."""
    return f"{manifest_tag_index_path(name, tag)}/{_digest_path(digest, multilevel=False)}/link"


def parse_link(raw: bytes) -> Digest | None:
    """The digest a ``link`` file's content names, or ``None`` when it names none (the walks of
    ``gc`` and ``verify`` take such a link as broken, not as an error)."""
    try:
        return Digest(raw.decode("ascii"))
    except (UnicodeDecodeError, DistblobError):
        return None


# -- uploads -----------------------------------------------------------------------------------


def uploads_root(name: str) -> str:
    """The uploads in progress in a repository: ``repositories/<name>/_uploads``."""
    return f"{repository_path(name)}/_uploads"


def upload_dir_path(name: str, upload_id: str) -> str:
    """One upload's directory: ``_uploads/<id>``."""
    return f"{uploads_root(name)}/{validate_upload_id(upload_id)}"


def upload_data_path(name: str, upload_id: str) -> str:
    """The bytes of an upload received so far: ``_uploads/<id>/data``."""
    return f"{upload_dir_path(name, upload_id)}/data"


def upload_started_at_path(name: str, upload_id: str) -> str:
    """When the upload started, RFC 3339 in UTC: ``_uploads/<id>/startedat``."""
    return f"{upload_dir_path(name, upload_id)}/startedat"


def upload_algorithm_path(name: str, upload_id: str) -> str:
    """The algorithm of an upload not hashed with sha256: ``_uploads/<id>/algorithm``.

    distblob's own addition: the Go registry hashes every upload with sha256 and ignores files
    it does not know in an upload directory.
    """
    return f"{upload_dir_path(name, upload_id)}/algorithm"


def upload_hash_states_root(name: str, upload_id: str, algorithm: str) -> str:
    """The saved hasher states of an upload: ``_uploads/<id>/hashstates/<alg>``."""
    return f"{upload_dir_path(name, upload_id)}/hashstates/{_algorithm_path(algorithm)}"


def upload_hash_state_path(name: str, upload_id: str, algorithm: str, offset: int) -> str:
    """The hasher state after ``offset`` bytes: ``_uploads/<id>/hashstates/<alg>/<offset>``."""
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"an offset is an int, not {type(offset).__name__}")
    if offset < 0:
        raise ValueError(f"a hash state offset cannot be negative: {offset}")
    return f"{upload_hash_states_root(name, upload_id, algorithm)}/{offset}"


__all__ = [
    "CACHE_CLEARS_ROOT",
    "MAX_NAME_LENGTH",
    "MAX_UPLOAD_ID_LENGTH",
    "ROOT",
    "SCHEDULER_STATE_PATH",
    "blob_data_path",
    "blob_data_path_template",
    "blob_dir_path",
    "blobs_root",
    "layer_link_path",
    "layer_link_path_template",
    "layers_root",
    "manifest_revision_link_path",
    "manifest_revisions_root",
    "manifest_tag_current_path",
    "manifest_tag_index_entry_link_path",
    "manifest_tag_index_path",
    "manifest_tag_path",
    "manifest_tags_root",
    "parse_link",
    "repositories_root",
    "repository_path",
    "upload_algorithm_path",
    "upload_data_path",
    "upload_dir_path",
    "upload_hash_state_path",
    "upload_hash_states_root",
    "upload_started_at_path",
    "validate_repository_name",
    "validate_tag",
    "validate_upload_id",
]
