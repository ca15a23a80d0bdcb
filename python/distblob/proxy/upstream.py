"""The upstream registry of a pull-through cache: ``httpx`` (async) for requests, ``urllib3`` for
blob bodies.

Authentication follows distribution's ``registry/client/auth``: a request answered ``401`` carries
a ``WWW-Authenticate`` challenge; ``Bearer realm=…,service=…`` is answered by fetching
``realm?service=…&scope=repository:<name>:pull`` (with the configured credentials as HTTP basic
auth, or anonymously without them) and sending the token as ``Authorization: Bearer``; the token
is reused for its scope until its ``expires_in`` runs out (60 s when the server names none).
``Basic`` challenges are answered with the credentials themselves.

Blob bodies (:meth:`Upstream.stream`) are read by a worker thread with ``urllib3``'s ``readinto``
into a reused buffer: on this path httpx's async reader cost 1.2 to 1.7 CPU-seconds per GiB on the
event loop (0.6 to 0.9 GB/s), ``readinto`` 0.3 in a thread (2 GB/s), so a cold pull no longer
competes with the responses the loop is sending. Both clients trust the system's CA store.

Credentials are sent only to the upstream's own host: a token realm on another host gets an
anonymous token request (distribution 3.1 refuses such realms for the same reason), and both
clients drop ``Authorization`` on redirects to another host. Nothing here logs a header or a
credential.
"""

from __future__ import annotations

import base64
import logging
import re
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeVar

import anyio
import httpx
import urllib3

from distblob._threads import in_own_thread
from distblob.errors import UpstreamAuthError, UpstreamError

#: The manifest media types a cache asks upstream for (the four distblob stores).
MANIFEST_ACCEPT: Final = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
#: Token lifetime when the token server names none (the Docker token spec's default).
DEFAULT_TOKEN_LIFETIME: Final = 60.0
#: Tokens are renewed this many seconds before they expire.
TOKEN_MARGIN: Final = 5.0

#: Redirects followed on the way to a blob body (registries send blobs to a CDN or a bucket).
MAX_REDIRECTS: Final = 10

logger = logging.getLogger("distblob.proxy")

R = TypeVar("R")

_PARAM: Final = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


#: Idle connections kept to the upstream (and to each host it redirects to) for blob bodies.
POOL_SIZE: Final = 8


def unexpected_status(status: int, headers: Mapping[str, str]) -> UpstreamError:
    """The error for an upstream answer the cache cannot use: 429 (rate limited) as such, with
    its ``Retry-After``, anything else as a bad gateway."""
    if status == 429:
        retry_after = headers.get("retry-after")
        return UpstreamError("upstream is rate limiting", 429, retry_after=retry_after)
    return UpstreamError(f"upstream answered {status}", 502)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate`` → ``(scheme, params)``, the scheme lower-cased.

    Only the first challenge is read (registries send one).
    """
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(rest):
        quoted, bare = match.group(2), match.group(3)
        value = bare if quoted is None else re.sub(r"\\(.)", r"\1", quoted)
        params[match.group(1).lower()] = value
    return scheme.lower(), params


def repository_scope(name: str) -> str:
    return f"repository:{name}:pull"


class Upstream:
    """An async client of one upstream registry (``remoteurl``), with token and basic auth."""

    def __init__(
        self,
        remoteurl: str,
        username: str | None = None,
        password: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = remoteurl.rstrip("/")
        self.host = (urllib.parse.urlsplit(self.base).hostname or "").lower()
        self._credentials = (username or "", password or "") if username or password else None
        self._clock = clock
        trust = ssl.create_default_context()
        self._client = httpx.AsyncClient(
            transport=transport,
            # Bodies are digests' input, so they must arrive as stored: no gzip from upstream
            # (or a reverse proxy in front of it) for manifests, and true sizes on HEAD.
            headers={"Accept-Encoding": "identity"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=True,
            verify=trust,
        )
        self._pool = urllib3.PoolManager(
            maxsize=POOL_SIZE,  # connections kept per host: parallel layer pulls reuse theirs
            timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout),
            retries=urllib3.Retry(
                total=MAX_REDIRECTS,
                connect=0,
                read=0,
                status=0,
                other=0,
                redirect=MAX_REDIRECTS,
                respect_retry_after_header=False,  # a 429 is the client's to see, not retried
            ),
            ssl_context=trust,
        )
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (token, expires at)
        self._basic = False  # the upstream asked for Basic: send it up front from now on

    def __repr__(self) -> str:
        return f"<Upstream {self.base}>"  # never the credentials

    async def aclose(self) -> None:
        await self._client.aclose()
        self._pool.clear()

    # -- authentication ----------------------------------------------------------------------

    def _basic_header(self) -> str | None:
        if self._credentials is None:
            return None
        raw = f"{self._credentials[0]}:{self._credentials[1]}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def _authorization(self, scope: str) -> str | None:
        cached = self._tokens.get(scope)
        if cached is not None and cached[1] > self._clock():
            return f"Bearer {cached[0]}"
        if self._basic:
            return self._basic_header()
        return None

    def same_host(self, url: str) -> bool:
        """Whether ``url`` is on the upstream's host (the only one credentials go to)."""
        return (urllib.parse.urlsplit(url).hostname or "").lower() == self.host

    async def _answer(self, challenge: str, scope: str) -> bool:
        """Handle a 401's challenge; whether a retry may now succeed."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self._credentials is None or self._basic:
                return False
            self._basic = True
            return True
        if scheme != "bearer" or "realm" not in params:
            return False
        realm = params["realm"]
        if not realm.startswith(("http://", "https://")):
            return False
        query: dict[str, str] = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        auth: tuple[str, str] | None = None
        if self._credentials is not None:
            if self.same_host(realm):
                auth = self._credentials
            else:
                logger.warning(
                    "token realm %s is not on the upstream's host %s: asking anonymously",
                    urllib.parse.urlsplit(realm).hostname,
                    self.host,
                )
        try:
            response = await self._client.get(
                realm, params=query, auth=auth, follow_redirects=False
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(f"token server unreachable: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise UpstreamAuthError("the token server refused the credentials", 401)
        if response.status_code == 429:
            raise unexpected_status(429, response.headers)
        if response.status_code != 200:
            raise UpstreamError(f"token server answered {response.status_code}", 502)
        try:
            doc = response.json()
            token = doc.get("token") or doc.get("access_token")
            lifetime = float(doc.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            raise UpstreamError("token server answered no token", 502) from None
        if not isinstance(token, str) or not token:
            raise UpstreamError("token server answered no token", 502)
        lifetime = max(lifetime - TOKEN_MARGIN, 1.0)
        self._tokens[scope] = (token, self._clock() + lifetime)
        return True

    # -- requests ----------------------------------------------------------------------------

    async def _authenticated(
        self,
        name: str,
        headers: Mapping[str, str] | None,
        open_: Callable[[dict[str, str]], Awaitable[R]],
        challenge_of: Callable[[R], Awaitable[str | None]],
    ) -> R:
        """``open_(headers)`` with the scope's credentials, answering up to two ``401``s.

        ``challenge_of`` returns a 401's ``WWW-Authenticate`` (having closed that response), or
        ``None`` for any other answer, which is returned.
        """
        scope = repository_scope(name)
        for attempt in range(3):
            request_headers = dict(headers or {})
            authorization = self._authorization(scope)
            if authorization is not None:
                request_headers["Authorization"] = authorization
            response = await open_(request_headers)
            challenge = await challenge_of(response)
            if challenge is None:
                return response
            self._tokens.pop(scope, None)
            if attempt == 2 or not await self._answer(challenge, scope):
                break
        raise UpstreamAuthError("upstream refused the credentials", 401)

    async def send(
        self,
        method: str,
        path: str,
        *,
        name: str,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send ``method path`` (``/v2/…``) for repository ``name``, authenticating as asked.

        The response is streamed: the caller reads it and must ``aclose()`` it. A ``401`` that
        cannot be answered raises :class:`UpstreamAuthError`; a transport failure
        :class:`UpstreamError`.
        """

        async def open_(request_headers: dict[str, str]) -> httpx.Response:
            request = self._client.build_request(method, self.base + path, headers=request_headers)
            try:
                return await self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise UpstreamError(f"upstream unreachable: {type(exc).__name__}", 502) from None

        async def challenge_of(response: httpx.Response) -> str | None:
            if response.status_code != 401:
                return None
            await response.aclose()
            return str(response.headers.get("www-authenticate", ""))

        return await self._authenticated(name, headers, open_, challenge_of)

    async def stream(self, path: str, *, name: str) -> urllib3.BaseHTTPResponse:
        """GET ``path`` for repository ``name`` with the body left to read, for a worker thread.

        The caller reads the body with ``readinto`` (blocking: in a thread), may interrupt a
        read from another thread with ``shutdown()``, and must ``release_conn()`` at the end.
        Redirects are followed (``Authorization`` is dropped when one leaves the host); a body
        shorter than its ``Content-Length`` raises ``urllib3.exceptions.ProtocolError``.
        """
        url = self.base + path

        def get(request_headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
            return self._pool.request(
                "GET",
                url,
                headers={"Accept-Encoding": "identity", **request_headers},
                preload_content=False,
                decode_content=False,
            )

        async def open_(request_headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
            try:
                return await in_own_thread(get, request_headers, name="distblob-upstream")
            except urllib3.exceptions.HTTPError as exc:
                raise UpstreamError(f"upstream unreachable: {type(exc).__name__}", 502) from None

        async def challenge_of(response: urllib3.BaseHTTPResponse) -> str | None:
            if response.status != 401:
                return None
            await anyio.to_thread.run_sync(_discard, response)
            return str(response.headers.get("www-authenticate", ""))

        return await self._authenticated(name, None, open_, challenge_of)

    async def head(
        self, path: str, *, name: str, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """A HEAD (or any bodiless request), read and closed."""
        response = await self.send("HEAD", path, name=name, headers=headers)
        await response.aclose()
        return response

    async def get_bytes(
        self, path: str, *, name: str, headers: Mapping[str, str] | None = None, limit: int
    ) -> tuple[httpx.Response, bytes]:
        """A GET whose body (at most ``limit`` bytes) is read whole."""
        response = await self.send("GET", path, name=name, headers=headers)
        try:
            body = bytearray()
            async for piece in response.aiter_bytes():  # decoded, should upstream encode anyway
                body += piece
                if len(body) > limit:
                    raise UpstreamError(f"upstream body larger than {limit} bytes", 502)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream transfer failed: {type(exc).__name__}", 502) from None
        finally:
            await response.aclose()
        return response, bytes(body)


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    """Close a response without reading its body (the connection is not reused)."""
    response.close()
    response.release_conn()


__all__ = [
    "MANIFEST_ACCEPT",
    "Upstream",
    "UpstreamAuthError",
    "UpstreamError",
    "in_own_thread",
    "parse_challenge",
    "repository_scope",
    "unexpected_status",
]
