"""HTTPS for ``distblob serve``: the ``http.tls`` section as an ``ssl.SSLContext``, and the
protocol that accepts each connection of a TLS listener.

:func:`server_context` builds the context from :class:`~distblob.config.TLS` and is also how
the config is checked: a file that cannot be read, a certificate without a PEM certificate in
it, a key that does not match it (or is encrypted), a client CA file without a CA, or a cipher
suite name OpenSSL cannot offer is a :class:`~distblob.config.ConfigError` naming the key at
fault. Cipher suites are named as in distribution, by Go's names (``TLS_ECDHE_RSA_WITH_...``),
mapped here to OpenSSL's; left out, the TLS 1.2 suites are those the Go registry 2.8.2 offers by
default (ECDHE with AES-GCM or ChaCha20-Poly1305). TLS 1.3 suites cannot be chosen, in Go as
with Python's ``ssl``: naming them is accepted and changes nothing; when only they are named,
TLS 1.2 has no suite left, so the minimum becomes TLS 1.3 (as in Go, where such a list leaves a
TLS 1.2 client nothing to agree on).

:class:`TLSProtocol` is what uvicorn's listener creates for each connection instead of letting
the event loop wrap every socket in TLS at once. It waits for the first bytes without reading
them (``MSG_PEEK`` on a duplicate of the socket, the listener's transport closed unread), and:

- a TLS handshake record: the socket goes to the event loop's own TLS transport
  (:meth:`asyncio.loop.connect_accepted_socket` with the context), and from there to the HTTP
  protocol (:class:`~distblob.server.direct.DirectProtocol`, which offers no socket extension
  on a TLS transport);
- a plain HTTP request (``GET /``, ``HEAD``, ``POST``, ``PUT /``, ``OPTIONS``, the requests Go
  recognises): Go's answer, ``HTTP/1.0 400 Bad Request`` and "Client sent an HTTP request to an
  HTTPS server.", then the connection is closed;
- anything else, or nothing within :data:`HANDSHAKE_TIMEOUT`: the connection is closed.

Peeking rather than reading keeps the bytes in the kernel, so the TLS transport starts from the
first one; it needs only public event-loop APIs and works on uvloop and on asyncio's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final

from distblob.config import TLS, ConfigError

#: Go's TLS 1.2 cipher suite names (those ``crypto/tls.CipherSuites`` lists) and OpenSSL's.
GO_CIPHER_SUITES: Final[Mapping[str, str]] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
#: Go's TLS 1.3 suite names: always all offered, in Go and here.
TLS13_SUITES: Final = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
#: Go's names of the suites it calls insecure (``crypto/tls.InsecureCipherSuites``): refused.
INSECURE_SUITES: Final = frozenset(
    {
        "TLS_RSA_WITH_RC4_128_SHA",
        "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
        "TLS_RSA_WITH_AES_128_CBC_SHA256",
        "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
        "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
        "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    }
)
#: The TLS 1.2 suites offered when ``ciphersuites`` is not given: the Go registry 2.8.2's.
DEFAULT_CIPHER_SUITES: Final = (
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
)
MINIMUM_VERSIONS: Final[Mapping[str, ssl.TLSVersion]] = {
    "tls1.2": ssl.TLSVersion.TLSv1_2,
    "tls1.3": ssl.TLSVersion.TLSv1_3,
}

#: What Go's HTTPS server answers a plain HTTP request with, byte for byte.
PLAIN_HTTP_ANSWER: Final = (
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)
#: The first five bytes of the plain HTTP requests Go answers (other ones it just closes).
HTTP_PREFIXES: Final = frozenset({b"GET /", b"HEAD ", b"POST ", b"PUT /", b"OPTIO"})
#: A TLS record carrying a handshake message starts with this byte.
HANDSHAKE_RECORD: Final = 0x16
#: Seconds a connection may take from its accept to the end of its TLS handshake.
HANDSHAKE_TIMEOUT: Final = 60.0
#: Seconds between looks at a connection that sent the start of a plain HTTP request only.
_PEEK_AGAIN: Final = 0.02

log = logging.getLogger("distblob.serve")


# -- the context -------------------------------------------------------------------------------


def _readable(path: str, key: str) -> None:
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path!r}: {exc.strerror or exc}") from None


def _check_certificates(path: str, key: str, what: str) -> None:
    """``path`` holds at least one PEM certificate (checked by loading it as CAs would be)."""
    _readable(path, key)
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(key, f"{path!r} holds no PEM {what}: {_reason(exc)}") from None


def _refuse_password() -> bytes:
    raise _EncryptedKey()


class _EncryptedKey(Exception):
    """The key file asked for a passphrase."""


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason).replace("_", " ").lower() if reason else str(exc)


def openssl_ciphers(names: tuple[str, ...]) -> tuple[str, bool]:
    """OpenSSL's cipher list for Go's suite ``names`` (:data:`DEFAULT_CIPHER_SUITES` when
    empty), and whether a TLS 1.2 suite is among them; :class:`ConfigError` on
    ``http.tls.ciphersuites`` for a name that is unknown or insecure."""
    key = "http.tls.ciphersuites"
    chosen: list[str] = []
    for name in names or DEFAULT_CIPHER_SUITES:
        if name in GO_CIPHER_SUITES:
            chosen.append(GO_CIPHER_SUITES[name])
        elif name in TLS13_SUITES:
            continue  # TLS 1.3 suites are always on
        elif name in INSECURE_SUITES:
            raise ConfigError(key, f"{name} is one of Go's insecure cipher suites: not offered")
        else:
            raise ConfigError(
                key,
                f"unknown cipher suite {name!r}: expected Go's names, one of "
                + ", ".join(sorted({*GO_CIPHER_SUITES, *TLS13_SUITES})),
            )
    return ":".join(chosen), bool(chosen)


def server_context(tls: TLS) -> ssl.SSLContext:
    """The server's ``ssl.SSLContext`` for ``http.tls``: its certificate and key, client
    certificates required and verified against ``clientcas`` when given, the minimum version,
    the TLS 1.2 cipher suites, HTTP/1.1 by ALPN (the server speaks no HTTP/2) and no
    renegotiation. Raises :class:`ConfigError` naming the key at fault."""
    ciphers, has_tls12 = openssl_ciphers(tls.ciphersuites)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSIONS[tls.minimumtls]
    if not has_tls12:
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    else:
        try:
            context.set_ciphers(ciphers)
        except ssl.SSLError as exc:
            raise ConfigError(
                "http.tls.ciphersuites", f"OpenSSL here offers none of them: {_reason(exc)}"
            ) from None
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])

    _check_certificates(tls.certificate, "http.tls.certificate", "certificate")
    _readable(tls.key, "http.tls.key")
    try:
        context.load_cert_chain(tls.certificate, tls.key, password=_refuse_password)
    except _EncryptedKey:
        raise ConfigError(
            "http.tls.key", f"{tls.key!r} is encrypted: give the key without a passphrase"
        ) from None
    except (ssl.SSLError, ValueError) as exc:
        # OpenSSL says KEY_VALUES_MISMATCH for another key of the same type, and
        # NO_CERTIFICATE_ASSIGNED for one of another type (it has no certificate of that type).
        if getattr(exc, "reason", None) in ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"):
            reason = f"{tls.key!r} is not the key of the certificate in {tls.certificate!r}"
        else:
            reason = f"{tls.key!r} holds no usable PEM private key: {_reason(exc)}"
        raise ConfigError("http.tls.key", reason) from None

    for path in tls.clientcas:
        _check_certificates(path, "http.tls.clientcas", "CA certificate")
        context.load_verify_locations(cafile=path)
    if tls.clientcas:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def describe(tls: TLS) -> str:
    """One line saying what the listener offers, for the log."""
    versions = "tls1.3" if not openssl_ciphers(tls.ciphersuites)[1] else tls.minimumtls
    suites = ",".join(tls.ciphersuites) or "default"
    clients = f"required(clientcas={len(tls.clientcas)})" if tls.clientcas else "not-asked"
    return f"tls minimum={versions} ciphersuites={suites} client-certificates={clients}"


# -- the listener's protocol -------------------------------------------------------------------


class TLSProtocol(asyncio.Protocol):
    """One connection of a TLS listener until its handshake is done (see the module's
    docstring); :func:`tls_protocol` makes the class uvicorn instantiates.

    It is in uvicorn's set of connections meanwhile, so that a stopping server closes it.
    """

    context: ClassVar[ssl.SSLContext]
    #: The HTTP protocol class the connection goes to (uvicorn's constructor arguments).
    protocol: ClassVar[Callable[..., asyncio.Protocol]]

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._loop = _loop or asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self._reading = False
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._handshake: asyncio.Task[None] | None = None
        self._peer = "unknown"

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._peer = f"{peer[0]}:{peer[1]}"
        raw = transport.get_extra_info("socket")
        try:
            fd = os.dup(raw.fileno())
        except (AttributeError, OSError) as exc:
            log.warning("tls: cannot take the connection from %s: %s", self._peer, exc)
            transport.close()
            return
        # The transport has read nothing yet (reading starts after this method) and closes
        # its own descriptor only: the connection lives on in the duplicate.
        transport.close()
        self._sock = socket.socket(fileno=fd)
        self._sock.setblocking(False)
        self._server_state.connections.add(self)
        self._deadline = self._loop.time() + HANDSHAKE_TIMEOUT
        self._timer = self._loop.call_at(self._deadline, self._expire)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        """The listener's transport, closed on purpose in :meth:`connection_made`."""

    def shutdown(self) -> None:
        """uvicorn's call on each connection when the server stops: close this one."""
        if self._handshake is not None:
            self._handshake.cancel()
        else:
            self._close()

    # -- before the handshake -------------------------------------------------------------

    def _watch(self) -> None:
        assert self._sock is not None
        self._loop.add_reader(self._sock.fileno(), self._peek)
        self._reading = True

    def _unwatch(self) -> None:
        if self._reading and self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
        self._reading = False

    def _peek(self) -> None:
        """The socket is readable: look at its first bytes (they stay in the kernel)."""
        sock = self._sock
        if sock is None:
            return
        try:
            head = sock.recv(5, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("tls: %s: %s before any byte", self._peer, exc)
            self._close()
            return
        if not head:
            log.debug("tls: %s closed the connection before sending anything", self._peer)
            self._close()
        elif head[0] == HANDSHAKE_RECORD:
            self._start_handshake(sock)
        elif head in HTTP_PREFIXES:
            self._answer_plain_http(sock)
        elif len(head) < 5 and any(prefix.startswith(head) for prefix in HTTP_PREFIXES):
            # Perhaps the start of a plain request: look again shortly (watching the socket
            # would report the same unread bytes at once, again and again).
            self._unwatch()
            self._loop.call_later(_PEEK_AGAIN, self._look_again)
        else:
            log.info("tls: %s sent neither TLS nor HTTP: connection closed", self._peer)
            self._close()

    def _look_again(self) -> None:
        if self._sock is not None and self._handshake is None:
            self._watch()

    def _expire(self) -> None:
        self._timer = None
        if self._handshake is None and self._sock is not None:
            log.info(
                "tls: %s sent no handshake within %.0f s: connection closed",
                self._peer,
                HANDSHAKE_TIMEOUT,
            )
            self._close()

    def _answer_plain_http(self, sock: socket.socket) -> None:
        """Go's answer to a plain request, then close (the request is read first, as far as
        it came, so that closing sends the answer and a FIN rather than a reset)."""
        with contextlib.suppress(OSError):
            sock.recv(1 << 16)
            sock.send(PLAIN_HTTP_ANSWER)
        log.info("tls: plain HTTP request from %s to the TLS port: answered 400", self._peer)
        self._close()

    def _close(self) -> None:
        self._unwatch()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._server_state.connections.discard(self)

    # -- the handshake --------------------------------------------------------------------

    def _start_handshake(self, sock: socket.socket) -> None:
        self._unwatch()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._sock = None  # the event loop's transport owns it from here on
        self._handshake = self._loop.create_task(self._hand_over(sock))

    def _http_protocol(self) -> asyncio.Protocol:
        return self.protocol(
            config=self._config,
            server_state=self._server_state,
            app_state=self._app_state,
            _loop=self._loop,
        )

    async def _hand_over(self, sock: socket.socket) -> None:
        """The TLS handshake by the event loop's transport; then the HTTP protocol has the
        connection (its ``connection_made`` adds it to uvicorn's connections)."""
        timeout = max(1.0, self._deadline - self._loop.time())
        try:
            await self._loop.connect_accepted_socket(
                self._http_protocol, sock, ssl=self.context, ssl_handshake_timeout=timeout
            )
        except (OSError, EOFError, TimeoutError) as exc:
            # The transport has closed the socket. Go logs these as well.
            log.info("tls: handshake with %s failed: %s", self._peer, _reason(exc))
        except Exception:
            log.warning("tls: handshake with %s failed", self._peer, exc_info=True)
        finally:
            self._server_state.connections.discard(self)


def tls_protocol(
    context: ssl.SSLContext, protocol: Callable[..., asyncio.Protocol]
) -> type[TLSProtocol]:
    """The connection class for uvicorn's ``http=`` setting: TLS with ``context``, then
    ``protocol`` (a uvicorn HTTP protocol class) on the TLS transport."""
    attributes = {"context": context, "protocol": staticmethod(protocol)}
    return type("TLSProtocol", (TLSProtocol,), attributes)


__all__ = [
    "DEFAULT_CIPHER_SUITES",
    "GO_CIPHER_SUITES",
    "HANDSHAKE_TIMEOUT",
    "HTTP_PREFIXES",
    "INSECURE_SUITES",
    "MINIMUM_VERSIONS",
    "PLAIN_HTTP_ANSWER",
    "TLS13_SUITES",
    "TLSProtocol",
    "describe",
    "openssl_ciphers",
    "server_context",
    "tls_protocol",
]
