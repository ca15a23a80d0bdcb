"""What every handler shares, and the API base (``GET /v2/``).

A handler module serves one resource of distribution's API: :class:`Resource` names its route
and the handler of each method it takes, and :func:`dispatcher` makes the route's endpoint. The
methods a resource takes are decided there, once, where it is routed (distribution's
``handlers.MethodHandler`` dispatchers): a method it does not take never reaches a handler
(405), and a rule that gates requests (read-only mode, authorization) goes in the dispatcher.

Authorization is that gate: with an access controller (``auth`` in the config), every request
to a gated resource, ``/v2/`` included, is checked before anything else about it, with the
access its resource and method need (:func:`required_access`, the one place that says so, as
distribution's ``appendAccessRecords``). A refused request is 401 UNAUTHORIZED with the
controller's ``WWW-Authenticate`` challenge, as the Go registry answers it.

With an access policy (``access``, :mod:`distblob.auth.policy`, distblob's own), the gate also
serves a request without credentials that anonymous is granted, without asking the controller
(``/v2/`` excepted: clients log in after its challenge), and refuses a user the policy does not
grant the access with 403 DENIED. Failed logins are slowed down per client address
(:mod:`distblob.auth.throttle`). The user a request authenticated as is left in the ASGI scope
(:data:`~distblob.server.middleware.USER_SCOPE_KEY`) for the access log.

Handlers see the registry only through :class:`~distblob.interfaces.AsyncRegistry`: the same
code serves the storage registry and the pull-through cache.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response

from distblob._asgi import CLIENT_CLOSED, unless_disconnected
from distblob._numbers import is_ascii_digits
from distblob.auth import CATALOG_ACCESS, Access, AccessController, repository_access
from distblob.auth.htpasswd import basic_credentials
from distblob.auth.policy import Policy, is_anonymous
from distblob.auth.throttle import LoginThrottle
from distblob.errors import AuthChallenge, AuthUnavailableError, UnsupportedError
from distblob.interfaces import AsyncRegistry, AsyncRepository
from distblob.server.errors import APIError, error_response
from distblob.server.frontdoor import URLS_SCOPE_KEY, URLs
from distblob.server.middleware import USER_SCOPE_KEY
from distblob.server.responses import empty, json_response

if TYPE_CHECKING:
    from distblob.notifications import Notifier

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]

logger = logging.getLogger("distblob.auth")


@dataclass(frozen=True, slots=True)
class Context:
    """What the handlers are bound to: the registry served, the secret that signs upload
    locations (``http.secret``), the largest manifest a PUT may send, the access controller
    that gates every request (``None``: none, as without ``auth`` in distribution), the access
    policy (``access``), the slowing of failed logins, and the hook that sends events
    (``notifications``: :class:`~distblob.notifications.Notifier`; ``None``: no endpoints)."""

    registry: AsyncRegistry
    secret: bytes | str
    max_manifest_size: int
    access_controller: AccessController | None = None
    policy: Policy | None = None
    throttle: LoginThrottle | None = None
    #: ``storage.maintenance.readonly.enabled``: writes are 405 as the Go registry answers.
    maintenance: bool = False
    #: ``catalog.maxentries``.
    catalog_max_entries: int = 1000
    notifier: Notifier | None = None

    def repository(self, request: Request) -> AsyncRepository:
        """The repository the request's path names (``NAME_INVALID`` unless valid)."""
        return self.registry.repository(request.path_params["name"])


class Target(enum.Enum):
    """What a resource's requests act on, which decides the access they need."""

    #: The repository its path names: ``repository:<name>:<action>`` by method.
    REPOSITORY = "repository"
    #: The catalog: ``registry:catalog:*``.
    CATALOG = "catalog"
    #: The API base, ``/v2/``: credentials, and no access record.
    BASE = "base"
    #: Not gated: ``/v2`` is redirected by distribution's router before authorization.
    OPEN = "open"


@dataclass(frozen=True, slots=True)
class Resource:
    """One route: its path, the handler of each method it takes (``HEAD`` is served by the
    ``GET`` handler unless it has its own), and what its requests act on."""

    path: str
    methods: Mapping[str, Handler]
    target: Target = Target.REPOSITORY


#: The methods that change a registry.
WRITES: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def required_access(target: Target, request: Request) -> tuple[Access, ...]:
    """The access records ``request`` needs, as distribution computes them: by method on the
    repository the path names (``pull`` for GET and HEAD, ``pull`` and ``push`` for POST, PUT
    and PATCH, ``delete`` for DELETE), plus ``pull`` on the repository a ``from`` parameter
    names (a cross-repository mount reads it); ``registry:catalog:*`` for the catalog; none
    for ``/v2/``. The name is the path's, unvalidated: validation comes after the gate."""
    if target is Target.REPOSITORY:
        records = repository_access(request.path_params["name"], request.method)
        source = request.query_params.get("from")
        if source:
            records += repository_access(source, "GET")
        return records
    if target is Target.CATALOG:
        return (CATALOG_ACCESS,)
    return ()


async def gate(
    controller: AccessController | None,
    target: Target,
    request: Request,
    *,
    policy: Policy | None = None,
    throttle: LoginThrottle | None = None,
) -> Response | None:
    """The refusal of a request ``controller`` does not authorize, or ``None`` when it may go
    on: 401 UNAUTHORIZED with the challenge, or 400 without a body while the controller cannot
    decide (its htpasswd file unreadable), both as distribution answers; with a ``policy``, 403
    DENIED for a user it does not grant the access. A failed login is logged with the client's
    address, never with the credentials it tried; one with a password (``Basic``) is counted by
    ``throttle``."""
    if target is Target.OPEN or (controller is None and policy is None):
        return None
    records = required_access(target, request)
    authorization = request.headers.get("authorization")
    if policy is not None and (controller is None or is_anonymous(authorization)):
        # Empty Basic credentials are what containers/image sends when it has none.
        authorization = None
        if controller is None or target is not Target.BASE:
            if policy.allows(None, records):
                return None
            if controller is None:  # nobody can log in: no challenge would help
                return _denied(records, request)
    assert controller is not None
    client = request.client
    address = client.host if client else "-"
    # Only passwords can be guessed: a bearer token's signature cannot, and a token refused for
    # its scope is no failed login (the client asks the token server for another).
    slowing = throttle if _basic(authorization) else None
    turn = slowing.turn(address) if slowing is not None else contextlib.nullcontext()
    try:
        async with turn:
            user = await controller.authorized(
                authorization, records, host=request.headers.get("host", "")
            )
    except AuthChallenge as challenge:
        if authorization is not None:
            logger.warning(
                "authentication failed: %s (client %s)",
                challenge.reason,
                f"{client.host}:{client.port}" if client else "-",
            )
            if slowing is not None:
                slowing.failed(address, _basic_user(authorization))
        return error_response(challenge, head=request.method == "HEAD")
    except AuthUnavailableError:
        return empty(400)
    if slowing is not None:
        slowing.succeeded(address, user.name)
    request.scope[USER_SCOPE_KEY] = user.name
    if policy is not None and not policy.allows(user.name, records):
        return _denied(records, request)
    return None


def _basic(authorization: str | None) -> bool:
    """Whether ``authorization`` is of the ``Basic`` scheme (a user and a password)."""
    return authorization is not None and authorization[:6].lower() == "basic "


def _basic_user(authorization: str | None) -> str | None:
    """The user name ``Basic`` credentials name (``None`` when they cannot be read): a
    success forgives only the failures tried under its own name."""
    credentials = basic_credentials(authorization)
    return credentials[0] if credentials is not None else None


def _denied(records: tuple[Access, ...], request: Request) -> Response:
    """403 DENIED, the access records refused in its detail (as distribution's token
    controller words it)."""
    error = APIError(
        "DENIED",
        "requested access to the resource is denied",
        detail=[record.detail() for record in records],
    )
    return error_response(error, head=request.method == "HEAD")


def dispatcher(resource: Resource, context: Context) -> Handler:
    """The endpoint of ``resource``'s route: the handler of the request's method, with every
    exception it raises answered as an OCI error. The access controller, if any, gates the
    request first (:func:`gate`); then a read-only registry (a pull-through cache) has every
    write refused, 405 UNSUPPORTED, before anything else about the request is looked at."""
    methods = dict(resource.methods)
    if "GET" in methods:
        methods.setdefault("HEAD", methods["GET"])
    read_only = context.registry.read_only
    controller = context.access_controller
    gated = resource.target is not Target.OPEN and (
        controller is not None or context.policy is not None
    )
    policy, throttle = context.policy, context.throttle

    async def endpoint(request: Request) -> Response:
        handler = methods[request.method]  # the router routes only the methods declared
        try:
            if gated:
                refused = await gate(
                    controller, resource.target, request, policy=policy, throttle=throttle
                )
                if refused is not None:
                    return refused
            if context.maintenance and request.method in WRITES:
                # distribution drops the write methods from its dispatchers, which all keep
                # GET and HEAD: gorilla's MethodHandler answers in plain text with those.
                return Response(
                    "Method not allowed\n",
                    405,
                    {"Allow": "GET, HEAD"},
                    media_type="text/plain; charset=utf-8",
                )
            if read_only and request.method in WRITES:
                raise UnsupportedError("this registry is a pull-through cache")
            return await handler(request)
        except ClientDisconnect:
            return empty(400)  # nobody is listening; the access log records it
        except Exception as exc:
            return error_response(exc, head=request.method == "HEAD")

    return endpoint


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn`` in a worker thread (a blocking storage call)."""
    return await run_in_threadpool(fn, *args, **kwargs)


async def unless_gone(request: Request, work: Callable[[], Awaitable[T]]) -> T | None:
    """``work`` (a read that may wait on an upstream registry), or ``None`` when the client
    left before it was done (``distblob._asgi.unless_disconnected``)."""
    return await unless_disconnected(request.receive, work)


def client_closed() -> Response:
    """What the access log records for a request whose client left first (499)."""
    return Response(status_code=CLIENT_CLOSED)


def int_param(request: Request, key: str) -> int | None:
    """A query parameter that must be a whole number (``PAGINATION_NUMBER_INVALID``)."""
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return None
    if not is_ascii_digits(raw) or len(raw) > 9:
        raise APIError("PAGINATION_NUMBER_INVALID", detail={key: raw[:64]})
    return int(raw)


def declared_length(request: Request) -> int | None:
    """The body length ``Content-Length`` declares, if it is a number."""
    raw = request.headers.get("content-length")
    return int(raw) if raw and is_ascii_digits(raw) and len(raw) <= 18 else None


# -- the API base ----------------------------------------------------------------------------


async def api_base(request: Request) -> Response:
    """``GET /v2/``: the registry speaks the v2 API (the version header says which)."""
    return json_response(200, {})


async def to_base(request: Request) -> Response:
    """``/v2`` without its slash is redirected, as distribution's router (strict slashes)."""
    urls = request.scope.get(URLS_SCOPE_KEY)
    prefix = urls.prefix if isinstance(urls, URLs) else ""
    return RedirectResponse(f"{prefix}/v2/", status_code=301)


def resources(context: Context) -> list[Resource]:
    return [
        Resource("/v2/", {"GET": api_base}, Target.BASE),
        Resource("/v2", {"GET": to_base}, Target.OPEN),
    ]


__all__ = [
    "WRITES",
    "Context",
    "Handler",
    "Resource",
    "Target",
    "api_base",
    "client_closed",
    "declared_length",
    "dispatcher",
    "gate",
    "int_param",
    "required_access",
    "resources",
    "run",
    "unless_gone",
]
