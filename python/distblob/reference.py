"""Repository names and tags: the OCI grammar every name a client sends must follow
(distribution's ``reference`` package).

The storage layout (:mod:`distblob.storage.paths`) builds paths only from names and tags
validated here, and the HTTP layer and the pull-through cache check them before anything is
stored or sent upstream.
"""

from __future__ import annotations

import re
from typing import Final

from distblob.errors import NameInvalidError, TagInvalidError

#: Longest repository name, as distribution enforces (``reference.NameTotalLengthMax``).
MAX_NAME_LENGTH: Final = 255

# The OCI distribution spec's repository name grammar, one path component at a time.
_NAME_COMPONENT: Final = re.compile(r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*")
_TAG: Final = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")


def validate_repository_name(name: str) -> str:
    """Return ``name`` if it is a valid OCI repository name, else raise ``NameInvalidError``.

    A name is one or more components ``[a-z0-9]+`` separated inside by ``.``, ``_``, ``__`` or
    runs of ``-``, joined by ``/``, at most 255 characters in all. That rules out, among others,
    ``..``, absolute names, empty components, uppercase, non-ASCII, and components such as
    ``_uploads`` that would collide with the layout's own directories.
    """
    if not isinstance(name, str):
        raise TypeError(f"a repository name is a str, not {type(name).__name__}")
    if not name:
        raise NameInvalidError(name, "empty")
    if len(name) > MAX_NAME_LENGTH:
        raise NameInvalidError(name, f"longer than {MAX_NAME_LENGTH} characters")
    for component in name.split("/"):
        if not component:
            raise NameInvalidError(name, "empty path component")
        if _NAME_COMPONENT.fullmatch(component) is None:
            raise NameInvalidError(
                name,
                f"path component {component!r} is not lowercase letters and digits "
                "separated by '.', '_', '__' or dashes",
            )
    return name


def validate_tag(tag: str) -> str:
    """Return ``tag`` if it is a valid OCI tag, else raise ``TagInvalidError`` (a ``ValueError``).

    A tag is ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}``: one path component that cannot be ``.`` or
    ``..`` since it cannot start with a dot.
    """
    if not isinstance(tag, str):
        raise TypeError(f"a tag is a str, not {type(tag).__name__}")
    if _TAG.fullmatch(tag) is None:
        raise TagInvalidError(tag, "must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
    return tag


__all__ = ["MAX_NAME_LENGTH", "validate_repository_name", "validate_tag"]
