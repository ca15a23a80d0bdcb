"""``auth.silly``: distribution's controller for tests, which lets in anyone who sends an
``Authorization`` header, whatever it holds, as the user ``silly``.

A request without one gets the ``Bearer`` challenge with the configured ``realm`` and
``service``, and a ``scope`` listing each access record the request needs on its own
(:func:`~distblob.auth.bearer.listed_scope`, as distribution's silly controller writes it). It
exists for parity with distribution's tests and setups; it protects nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from distblob.auth import Access, User
from distblob.auth.bearer import challenge, listed_scope
from distblob.errors import AuthChallenge


class SillyAccessController:
    """An :class:`~distblob.auth.AccessController` that checks only that a request has an
    ``Authorization`` header."""

    def __init__(self, realm: str, service: str) -> None:
        self.realm = realm
        self.service = service

    async def authorized(
        self, authorization: str | None, access: Sequence[Access], *, host: str = ""
    ) -> User:
        """``silly``, for any non-empty ``authorization``."""
        if not (authorization or "").strip(" \t"):  # Go drops surrounding spaces and tabs
            header = challenge(self.realm, self.service, listed_scope(access))
            raise AuthChallenge("no authorization header", access, {"WWW-Authenticate": header})
        return User("silly")


__all__ = ["SillyAccessController"]
