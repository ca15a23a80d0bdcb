"""Access control: who may do what to which repository (distribution's ``registry/auth``).

An :class:`AccessController` is given a request's ``Authorization`` header and the
:class:`Access` the request needs, and returns the :class:`User` it authenticated or raises
:class:`~distblob.errors.AuthChallenge` (401, with the ``WWW-Authenticate`` header that says how
to ask again). The HTTP layer computes the access once, where requests are dispatched
(:mod:`distblob.server.handlers.base`), so every controller sees the same records distribution's
do: ``repository:<name>:pull`` for a GET or HEAD, ``pull`` and ``push`` for a POST, PUT or PATCH,
``delete`` for a DELETE, and ``registry:catalog:*`` for the catalog.

Nothing here knows about HTTP frameworks: a controller takes strings and returns values, so it
can be tested, and reused by another server, as it is. Controllers are async because checking a
password is slow by design (bcrypt): they run that work in worker threads, never on the event
loop.

Implemented: :mod:`~distblob.auth.htpasswd` (``auth.htpasswd``), :mod:`~distblob.auth.token`
(``auth.token``: bearer tokens from a token server) and :mod:`~distblob.auth.silly`
(``auth.silly``, for tests).
Beside the controllers: :mod:`~distblob.auth.policy`, distblob's own access policy over the
user any controller returns, and :mod:`~distblob.auth.throttle`, failed logins slowed per
client address.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from distblob.errors import AuthChallenge, AuthUnavailableError

#: The actions distribution's access records name.
PULL: Final = "pull"
PUSH: Final = "push"
DELETE: Final = "delete"


@dataclass(frozen=True, slots=True)
class Access:
    """One thing a request needs (distribution's ``auth.Access``): an ``action`` on a resource
    of a ``type`` (``repository`` or ``registry``) and ``name``; ``resource_class`` is
    distribution's optional ``Class`` (empty for every route the API has)."""

    type: str
    name: str
    action: str
    resource_class: str = ""

    @property
    def scope(self) -> str:
        """The record as a token scope: ``repository:lib/app:pull``."""
        return f"{self.type}:{self.name}:{self.action}"

    def detail(self) -> dict[str, str]:
        """The record as distribution puts it in an UNAUTHORIZED error's ``detail``."""
        return {
            "Type": self.type,
            "Class": self.resource_class,
            "Name": self.name,
            "Action": self.action,
        }


@dataclass(frozen=True, slots=True)
class User:
    """Who a controller authenticated."""

    name: str


class AccessController(Protocol):
    """Decides whether a request may have the access it needs (``auth.AccessController``)."""

    async def authorized(
        self, authorization: str | None, access: Sequence[Access], *, host: str = ""
    ) -> User:
        """The user ``authorization`` (the request's ``Authorization`` header, ``None`` when it
        has none) authenticates, if that user may have every record in ``access``. ``host`` is
        the request's ``Host`` header (a token challenge's realm may be built from it).

        Raises :class:`~distblob.errors.AuthChallenge` when it may not, and
        :class:`~distblob.errors.AuthUnavailableError` when the controller cannot decide."""
        ...


def repository_access(name: str, method: str) -> tuple[Access, ...]:
    """What ``method`` on repository ``name`` needs, as distribution computes it (a method the
    API does not use needs nothing beyond authentication)."""
    actions = _ACTIONS.get(method, ())
    return tuple(Access("repository", name, action) for action in actions)


#: The catalog's one record.
CATALOG_ACCESS: Final = Access("registry", "catalog", "*")

_ACTIONS: Final[dict[str, tuple[str, ...]]] = {
    "GET": (PULL,),
    "HEAD": (PULL,),
    "POST": (PULL, PUSH),
    "PUT": (PULL, PUSH),
    "PATCH": (PULL, PUSH),
    "DELETE": (DELETE,),
}

__all__ = [
    "CATALOG_ACCESS",
    "DELETE",
    "PULL",
    "PUSH",
    "Access",
    "AccessController",
    "AuthChallenge",
    "AuthUnavailableError",
    "User",
    "repository_access",
]
