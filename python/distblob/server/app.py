"""The OCI distribution HTTP API as an ASGI app: routes, middleware and the lifespan, wired.

``create_app(registry, secret=...)`` returns a Starlette application any ASGI server can run
(``distblob serve`` runs it under uvicorn). It chooses, once, what it serves: the storage
registry (:class:`~distblob.storage.aio.ThreadedRegistry`) or, with ``proxy``, a pull-through
cache of an upstream (:class:`~distblob.proxy.ProxyRegistry`); the handlers
(:mod:`distblob.server.handlers`, one module per resource) see only the
:class:`~distblob.interfaces.AsyncRegistry` contract.

The routes are distribution's ``/v2/`` API. The repository name is a multi-component path, so
routes are tried most specific first and the name is validated by the registry
(``NAME_INVALID``), never by the router. Each resource's methods are decided where it is routed
(:func:`~distblob.server.handlers.base.dispatcher`); any other method is 405 UNSUPPORTED with
``Allow``. With an access controller, every request to a route is authorized there first,
those 405s included (the Go registry authorizes before it looks at the method); an unknown path
is 404 without it, as the Go registry's router answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from distblob.auth import AccessController
from distblob.auth.policy import Policy
from distblob.auth.throttle import LoginThrottle
from distblob.config import HTTP, GarbageCollect, ProxyConfig, UploadPurging
from distblob.interfaces import AsyncRegistry
from distblob.proxy import ProxyRegistry
from distblob.proxy.blobs import CACHE_WRITE_TIMEOUT
from distblob.registry import Registry
from distblob.server.debug import Observability
from distblob.server.errors import APIError, error_body, error_response
from distblob.server.frontdoor import FrontDoor, URLs
from distblob.server.handlers import (
    base,
    blobs,
    catalog,
    manifests,
    referrers,
    tags,
    uploads,
)
from distblob.server.handlers.manifests import MAX_MANIFEST_SIZE
from distblob.server.middleware import Envelope
from distblob.server.responses import CHUNK, PlanResponse
from distblob.storage.aio import ThreadedRegistry
from distblob.storage.online import Options, ScheduledCollection
from distblob.storage.purge import UploadPurger

if TYPE_CHECKING:
    from distblob.notifications import Notifier

#: Every resource, most specific route first (a name may end in ``/blobs`` or ``/manifests``).
HANDLERS: Final = (base, catalog, tags, manifests, referrers, uploads, blobs)


def _http_error(
    context: base.Context, targets: Mapping[str, base.Target]
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """The answer to routing misses: an unknown path (404) or a method a route does not take
    (405, once the request is authorized for the route's ``targets[path]``)."""

    async def answer(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 405 and (context.access_controller or context.policy) is not None:
            route = request.scope.get("route")
            target = targets.get(getattr(route, "path", ""), base.Target.BASE)
            refused = await base.gate(
                context.access_controller,
                target,
                request,
                policy=context.policy,
                throttle=context.throttle,
            )
            if refused is not None:
                return refused
        return _routing_miss(request, exc, status)

    return answer


def _routing_miss(request: Request, exc: Exception, status: int) -> Response:
    """404 NOT_FOUND, or 405 UNSUPPORTED with the route's ``Allow``."""
    if status == 405:
        error = APIError("UNSUPPORTED", detail="method not allowed")
        if isinstance(exc, HTTPException) and exc.headers:
            error.headers.update(exc.headers)  # Allow: the methods the route takes (RFC 9110)
        return error_response(error, head=request.method == "HEAD")
    body = error_body("NOT_FOUND", "not found", None)
    return Response(body, 404, media_type="application/json")


def _lifespan(
    served: AsyncRegistry,
    schedules: Sequence[Callable[[], Coroutine[Any, Any, None]]],
    notifier: Notifier | None = None,
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """The served registry's background work (a cache's schedule), the maintenance schedules
    (upload purging, garbage collection), and the delivery of events."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sending = notifier.running() if notifier is not None else contextlib.nullcontext()
        async with served.running(), sending:
            if not schedules:
                yield
                return
            async with anyio.create_task_group() as group:
                for schedule in schedules:
                    group.start_soon(schedule)
                yield
                group.cancel_scope.cancel()

    return lifespan


def create_app(
    registry: Registry,
    *,
    secret: bytes | str,
    max_manifest_size: int = MAX_MANIFEST_SIZE,
    access_log: bool = True,
    upload_purging: UploadPurging | None = None,
    garbage_collect: GarbageCollect | None = None,
    proxy: ProxyConfig | ProxyRegistry | None = None,
    access_controller: AccessController | None = None,
    access_policy: Policy | None = None,
    login_throttle: LoginThrottle | None = None,
    http: HTTP | None = None,
    catalog_max_entries: int = 1000,
    observability: Observability | None = None,
    notifier: Notifier | None = None,
) -> ASGIApp:
    """The OCI distribution API over ``registry`` as an ASGI application.

    ``secret`` signs upload Locations (distribution's ``http.secret``): every process serving
    one root must share it, and sharing it with a Go registry on that root lets uploads move
    between the two. ``upload_purging`` (off by default here; on by default in ``distblob
    serve``, as in distribution) removes old uploads once at startup and then every
    ``interval``, from the ASGI lifespan. ``garbage_collect`` (off unless enabled) runs an
    online collection every ``interval`` (:class:`~distblob.storage.online.ScheduledCollection`;
    never for a pull-through cache, which expires its content by its own schedule).

    ``proxy`` (``proxy:`` in the config, or a ready :class:`~distblob.proxy.ProxyRegistry`)
    serves a pull-through cache of that upstream instead: pulls are served from ``registry``
    and filled from upstream, pushes and deletes answer 405 UNSUPPORTED, resumable digests are
    off, and the TTL schedule runs in the lifespan.

    ``access_controller`` (``auth`` in the config: :func:`distblob.config.open_access_controller`)
    authorizes every request before it is served; without it anyone may pull, push and delete,
    as with a Go registry that has no ``auth`` section. ``access_policy`` (``access``:
    :mod:`distblob.auth.policy`) says who may do what; failed logins are slowed down by
    ``login_throttle`` (by default a :class:`~distblob.auth.throttle.LoginThrottle` with its
    defaults, whenever there is an access controller).

    ``http`` (the config's section) gives the front door's settings
    (:mod:`distblob.server.frontdoor`): ``prefix``, ``host``, ``relativeurls`` and ``headers``.
    defaults, whenever there is an access controller). ``observability`` (``health`` and
    ``http.debug``: :mod:`distblob.server.debug`) gates the API on the health checks, observes
    it for the metrics, and runs the checks and the debug listener in the lifespan.
    ``notifier`` (``notifications``: :class:`~distblob.notifications.Notifier`) is told of
    every push, pull, mount and delete and sends the events from the lifespan.
    """
    if not secret:
        raise ValueError("an HTTP secret is required to sign upload locations")
    served: AsyncRegistry
    if isinstance(proxy, ProxyConfig):
        served = ProxyRegistry(
            registry,
            proxy.remoteurl,
            username=proxy.username,
            password=proxy.password,
            ttl=proxy.ttl,
            cache_write_timeout=proxy.cachewritetimeout or CACHE_WRITE_TIMEOUT,
        )
    else:
        served = ThreadedRegistry(registry) if proxy is None else proxy
    if login_throttle is None and access_controller is not None:
        login_throttle = LoginThrottle()
    context = base.Context(
        served,
        secret,
        max_manifest_size,
        access_controller,
        access_policy,
        login_throttle,
        maintenance=registry.read_only,
        catalog_max_entries=catalog_max_entries,
        notifier=notifier if notifier is not None and notifier.enabled else None,
    )
    resources = [resource for handler in HANDLERS for resource in handler.resources(context)]
    routes = [
        Route(resource.path, base.dispatcher(resource, context), methods=list(resource.methods))
        for resource in resources
    ]
    targets = {resource.path: resource.target for resource in resources}
    schedules: list[Callable[[], Coroutine[Any, Any, None]]] = []
    if upload_purging is not None and upload_purging.enabled:
        purger = UploadPurger(
            registry,
            age=upload_purging.age,
            interval=upload_purging.interval,
            dry_run=upload_purging.dryrun,
        )
        schedules.append(purger.run)
    if garbage_collect is not None and garbage_collect.enabled and proxy is None:
        options = Options(
            grace=garbage_collect.grace,
            delete_untagged=garbage_collect.deleteuntagged,
            manifests_only=garbage_collect.manifestsonly,
            dry_run=garbage_collect.dryrun,
        )
        schedules.append(ScheduledCollection(registry, options, garbage_collect.interval).run)
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error(context, targets)},
        lifespan=_lifespan(served, schedules, context.notifier),
    )
    app.router.redirect_slashes = False
    http = http or HTTP()
    urls = URLs(
        prefix=http.prefix,
        host=http.host,
        relative=http.relativeurls is not False,
        relative_asked=http.relativeurls is True,
    )
    front = FrontDoor(app, urls=urls, headers=http.headers)
    # Go's health gate wraps everything, GET / included.
    observed = front if observability is None else observability.wrap(front)
    return Envelope(observed, access_log=access_log)


__all__ = ["CHUNK", "HANDLERS", "MAX_MANIFEST_SIZE", "Envelope", "PlanResponse", "create_app"]
