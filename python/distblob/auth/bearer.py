"""The ``Bearer`` challenge distribution's token and silly controllers send (RFC 6750 §3).

``WWW-Authenticate: Bearer realm="…",service="…"[,scope="…"][,error="…"]``, each value quoted
as Go's ``%q`` quotes it (:func:`go_quote`), so a realm or a repository name with a quote or a
backslash in it reads the same from both servers.

The two controllers build the scope differently, as distribution's do: the token controller
merges the records of one resource (``repository:lib/app:pull,push``, :func:`merged_scope`); the
silly one lists every record on its own (``repository:lib/app:pull repository:lib/app:push``,
:func:`listed_scope`). Go keeps the merged actions in a map, so the order of a scope's actions
(and of its resources) varies between its responses; distblob's is the order the records come
in (``pull`` before ``push``, the repository before a mount's source).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from distblob.auth import Access

#: The ``error`` parameter for a token that could not be used (malformed, or not verified).
INVALID_TOKEN: Final = "invalid_token"
#: The ``error`` parameter for a valid token that lacks the access the request needs.
INSUFFICIENT_SCOPE: Final = "insufficient_scope"

_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    '"': '\\"',
    "\\": "\\\\",
}


def go_quote(value: str) -> str:
    """``value`` in double quotes as Go's ``strconv.Quote`` (``%q``) writes it: printable
    characters as they are, quotes and backslashes escaped, the rest as ``\\n``, ``\\x1f``,
    ``\\u00a0`` or ``\\U0001f600``."""
    out = ['"']
    for char in value:
        escaped = _ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif char.isprintable():  # as Go's unicode.IsPrint: the ASCII space, no other
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def merged_scope(access: Iterable[Access]) -> str:
    """The token controller's scope: one ``type:name:actions`` per resource (type and name),
    its actions joined by commas, each once; resources separated by spaces."""
    resources: dict[tuple[str, str], list[str]] = {}
    for record in access:
        actions = resources.setdefault((record.type, record.name), [])
        if record.action not in actions:
            actions.append(record.action)
    return " ".join(f"{kind}:{name}:{','.join(acts)}" for (kind, name), acts in resources.items())


def listed_scope(access: Sequence[Access]) -> str:
    """The silly controller's scope: every record's ``type:name:action``, space-separated."""
    return " ".join(record.scope for record in access)


def challenge(realm: str, service: str, scope: str = "", error: str = "") -> str:
    """The ``Bearer`` challenge, parameters in distribution's order (``scope`` and ``error``
    only when not empty)."""
    header = f"Bearer realm={go_quote(realm)},service={go_quote(service)}"
    if scope:
        header += f",scope={go_quote(scope)}"
    if error:
        header += f",error={go_quote(error)}"
    # Go writes the header's UTF-8 bytes; the ASGI layer encodes header strings as Latin-1,
    # so the same bytes go out (a printable non-ASCII name or realm) when passed as these.
    return header.encode("utf-8", "surrogateescape").decode("latin-1")


__all__ = [
    "INSUFFICIENT_SCOPE",
    "INVALID_TOKEN",
    "challenge",
    "go_quote",
    "listed_scope",
    "merged_scope",
]
