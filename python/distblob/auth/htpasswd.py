"""``auth.htpasswd``: HTTP Basic authentication against an htpasswd file of bcrypt hashes.

The file is Apache's format, one ``user:hash`` a line (``htpasswd -B`` writes it); blank lines
and lines starting with ``#`` are skipped. Only bcrypt hashes are used, as in distribution: any
other entry (``{SHA}``, ``$apr1$``, crypt, plain text) and any line without a colon is skipped,
with one warning each time the file is read, and its user cannot log in. Where distribution
refuses every request while the file has a line without a colon, distblob skips that line: it
can let nobody in.

The file is read at start and again whenever it changes (its inode, size, mtime or ctime: an
editor's rename and an in-place rewrite both show), without a restart. While it cannot be read,
every request with credentials is refused (distribution answers those 400, and so does the
server); requests without credentials still get their challenge.

bcrypt is slow by design (about 100 ms at cost 10), so:

- it runs in a worker thread, never on the event loop;
- a successful check is remembered for :data:`CACHE_TTL` seconds (at most :data:`CACHE_SIZE`
  of them), keyed by an HMAC of the credentials under a key drawn at random by each controller:
  neither the password nor an unkeyed hash of it is kept, and a key of the table says nothing
  about a password without the process's memory. The table is dropped whenever the file
  changes, so a changed or removed password stops working at once;
- a failed check is never remembered: every wrong guess costs a full bcrypt;
- an unknown user costs a bcrypt too (against a hash of the file's highest cost), so the time
  an answer takes does not say which users exist. bcrypt itself compares in constant time.

Credentials never reach a log: the log lines here name the file and line numbers only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import anyio.to_thread
import bcrypt

from distblob.auth import Access, User
from distblob.errors import AuthChallenge, AuthUnavailableError

logger = logging.getLogger("distblob.auth")

#: Seconds a successful check is remembered.
CACHE_TTL: Final = 60.0
#: Most successful checks remembered at once (the oldest goes first).
CACHE_SIZE: Final = 4096
#: bcrypt reads the first 72 bytes of a password. Go's bcrypt (distribution's) ignores the
#: rest, as do the tools that write htpasswd files; the ``bcrypt`` package refuses longer
#: passwords, so they are cut here, to the same effect.
BCRYPT_MAX_PASSWORD: Final = 72
#: The cost of the hash an unknown user is checked against when the file has no bcrypt entry.
DEFAULT_COST: Final = 10

_BCRYPT: Final = re.compile(r"\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}")
_BCRYPT_ALPHABET: Final = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def basic_credentials(authorization: str | None) -> tuple[str, bytes] | None:
    """The user and password of a ``Basic`` ``Authorization`` header; ``None`` unless it is
    one. As Go's ``Request.BasicAuth``: the scheme in any case, one space, padded standard
    base64, the user up to the first colon."""
    if not authorization:
        return None
    scheme, space, token = authorization.partition(" ")
    if not space or scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return user.decode("utf-8", "surrogateescape"), password


def challenge_header(realm: str) -> str:
    """``Basic realm="<realm>"``, quoted as distribution quotes it (a printable ASCII realm)."""
    return 'Basic realm="' + realm.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class HtpasswdTable:
    """One reading of an htpasswd file: each user's bcrypt hash, and the line numbers of the
    entries skipped (not bcrypt, or not ``user:hash``)."""

    entries: Mapping[str, bytes]
    skipped: tuple[int, ...] = ()

    @classmethod
    def parse(cls, data: bytes) -> HtpasswdTable:
        """The table ``data`` (a file's bytes) describes; a user named twice is its last line."""
        entries: dict[str, bytes] = {}
        skipped: list[int] = []
        for number, raw in enumerate(data.decode("utf-8", "surrogateescape").split("\n"), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            user, colon, hashed = line.partition(":")
            if colon and _BCRYPT.fullmatch(hashed):
                entries[user] = hashed.encode("ascii")
                continue
            skipped.append(number)
            if colon:
                entries.pop(user, None)  # the later line is what the file says of that user
        return cls(entries, tuple(skipped))

    def check(self, user: str, password: bytes) -> bool:
        """Whether ``password`` is ``user``'s. Blocking (one bcrypt, known user or not): call
        it in a worker thread."""
        hashed = self.entries.get(user)
        candidate = password[:BCRYPT_MAX_PASSWORD]
        if hashed is None:
            bcrypt.checkpw(candidate, self._unknown_user_hash())
            return False
        try:
            return bcrypt.checkpw(candidate, hashed)
        except ValueError:  # a hash bcrypt cannot read despite its shape
            return False

    def _unknown_user_hash(self) -> bytes:
        """A hash no password matches, at the file's highest cost: checking against it takes
        as long as checking a real user's (a fresh salt, so nothing is precomputed)."""
        costs = [int(h[4:6]) for h in self.entries.values()]
        salt = bcrypt.gensalt(max(costs, default=DEFAULT_COST))
        return salt + "".join(secrets.choice(_BCRYPT_ALPHABET) for _ in range(31)).encode()


#: What identifies one version of the file: device, inode, size, mtime and ctime.
_FileStamp = tuple[int, int, int, int, int]


def _stamp(stat: os.stat_result) -> _FileStamp:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


class HtpasswdAccessController:
    """An :class:`~distblob.auth.AccessController` over the htpasswd file at ``path``: any user
    with a valid password may have any access (there is no policy here, as in distribution).

    Use it from one event loop: only bcrypt leaves the loop, to a worker thread.
    :meth:`open` reads the file once, so that a server does not start without it.
    """

    def __init__(
        self,
        realm: str,
        path: str | os.PathLike[str],
        *,
        cache_ttl: float = CACHE_TTL,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.realm = realm
        self.path = os.fspath(path)
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self._clock = clock
        self._headers: Final = {"WWW-Authenticate": challenge_header(realm)}
        self._key: Final = secrets.token_bytes(32)
        # HMAC of the credentials -> (user, when the entry expires); only successes.
        self._cache: dict[bytes, tuple[str, float]] = {}
        self._table: HtpasswdTable | None = None
        self._stamp: _FileStamp | None = None
        self._failure: str | None = None  # the last reading error logged (logged once)

    @classmethod
    def open(cls, realm: str, path: str | os.PathLike[str]) -> HtpasswdAccessController:
        """A controller whose file has been read once (``OSError`` when it cannot be)."""
        controller = cls(realm, path)
        controller._reload()
        return controller

    # -- the file ---------------------------------------------------------------------------

    def table(self) -> HtpasswdTable:
        """The file's current table, read again if it changed since it was last read (one
        ``stat`` a call); :class:`~distblob.errors.AuthUnavailableError` when it cannot be."""
        try:
            if self._table is None or _stamp(os.stat(self.path)) != self._stamp:
                self._reload()
        except OSError as exc:
            self._forget()
            reason = f"{self.path}: {exc.strerror or exc}"
            if reason != self._failure:
                logger.error("auth.htpasswd: cannot read %s: every login fails", reason)
                self._failure = reason
            raise AuthUnavailableError(f"htpasswd file unreadable: {reason}") from None
        assert self._table is not None
        return self._table

    def _reload(self) -> None:
        with open(self.path, "rb") as source:
            stamp = _stamp(os.fstat(source.fileno()))
            data = source.read()
        self._forget()
        self._table, self._stamp = HtpasswdTable.parse(data), stamp
        if self._failure is not None:
            logger.info("auth.htpasswd: %s is readable again", self.path)
            self._failure = None
        skipped = self._table.skipped
        if skipped:
            logger.warning(
                "auth.htpasswd: %s: %d entries skipped (lines %s): only user:hash lines with "
                "bcrypt hashes are used (htpasswd -B)",
                self.path,
                len(skipped),
                ", ".join(map(str, skipped[:20])) + (", ..." if len(skipped) > 20 else ""),
            )

    def _forget(self) -> None:
        """Drop the table and every remembered check (the file changed or is gone)."""
        self._table = self._stamp = None
        self._cache.clear()

    # -- checks -----------------------------------------------------------------------------

    async def authorized(
        self, authorization: str | None, access: Sequence[Access], *, host: str = ""
    ) -> User:
        """The user the ``Basic`` credentials in ``authorization`` authenticate (``host`` is
        not used)."""
        credentials = basic_credentials(authorization)
        if credentials is None:
            raise AuthChallenge("no basic credentials", access, self._headers)
        user, password = credentials
        table = self.table()
        key = self._cache_key(user, password)
        # A dict lookup compares keys in variable time; they are HMACs under a key of this
        # process's, so how long a miss takes tells nothing about a remembered password.
        remembered = self._cache.get(key)
        if remembered is not None:
            if remembered[1] > self._clock():
                return User(remembered[0])
            del self._cache[key]
        if not await anyio.to_thread.run_sync(table.check, user, password):
            raise AuthChallenge("invalid credentials", access, self._headers)
        if table is self._table:  # not while the file changed: the check was against the old
            self._remember(key, user)
        return User(user)

    def _cache_key(self, user: str, password: bytes) -> bytes:
        """HMAC-SHA256 of ``user:password`` (a user has no colon) under the controller's key."""
        message = user.encode("utf-8", "surrogateescape") + b":" + password
        return hmac.digest(self._key, message, "sha256")

    def _remember(self, key: bytes, user: str) -> None:
        now = self._clock()
        if len(self._cache) >= self.cache_size:
            for stale in [k for k, (_, expires) in self._cache.items() if expires <= now]:
                del self._cache[stale]
            while len(self._cache) >= self.cache_size:
                del self._cache[next(iter(self._cache))]  # the oldest
        self._cache[key] = (user, now + self.cache_ttl)


__all__ = [
    "BCRYPT_MAX_PASSWORD",
    "CACHE_SIZE",
    "CACHE_TTL",
    "HtpasswdAccessController",
    "HtpasswdTable",
    "basic_credentials",
    "challenge_header",
]
