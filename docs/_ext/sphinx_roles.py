"""A griffe extension: the package's reST docstring markup, turned into mkdocstrings Markdown.

distblob's docstrings are written the Sphinx way (``:class:`~distblob.Registry```, ``::``
before a literal block). mkdocstrings renders Markdown, so without this the roles would show as
raw text and a reference to a name that does not exist would go unnoticed. Each role becomes an
autorefs cross-reference to the object's canonical path (``[`Registry`][distblob.registry.
Registry]``), which ``mkdocs build --strict`` fails on when nothing in the API reference has
that path. As in Sphinx, a leading ``~`` shows only the last component, and a name without a
module is looked up in the enclosing class, then in the module.

Names from outside distblob (``ValueError``, ``starlette.requests.ClientDisconnect``) are
shown as code without a link: the build reads no other project's inventory, since it must run
without network access.
"""

from __future__ import annotations

import builtins
import importlib.util
import re
from collections.abc import Iterator
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|data|mod|attr|exc|obj|const):`(~?)([^`<>]+)`")
_LITERAL = re.compile(r"::$", re.MULTILINE)


def _external(target: str) -> bool:
    """Whether ``target`` lives outside distblob (builtins, another package)."""
    first = target.split(".", 1)[0]
    if first == "distblob" or not first:
        return False
    if "." not in target:
        return hasattr(builtins, target)
    return first.islower() and importlib.util.find_spec(first) is not None


def _path(found: griffe.Object | griffe.Alias) -> str | None:
    """Where the API reference shows ``found``: at its definition, unless that is private
    (a member inherited from a private base is shown on the public subclass)."""
    try:
        target = found.final_target if isinstance(found, griffe.Alias) else found
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    canonical = str(target.path)
    return str(found.path) if "._" in canonical else canonical


def _lookup(collection: griffe.ModulesCollection, path: str) -> str | None:
    """Where the object at ``path`` is shown, or ``None`` if there is none."""
    try:
        return _path(collection.get_member(path))
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _resolve(obj: griffe.Object, target: str) -> str:
    """``target`` as written in ``obj``'s docstring, made a canonical path when it can be; a
    name that resolves to nothing is returned as it is, so that the build reports it."""
    collection = obj.modules_collection
    if target.startswith("distblob."):
        return _lookup(collection, target) or target
    first = target.split(".", 1)[0]
    scope: griffe.Object | None = obj if obj.is_class or obj.is_module else obj.parent
    while scope is not None:
        members = scope.all_members if scope.is_class else scope.members
        if first in members:
            if "." not in target:
                return _path(members[first]) or target
            return _lookup(collection, f"{scope.path}.{target}") or target
        scope = scope.parent
    return target


def convert(obj: griffe.Object, text: str) -> str:
    """``text`` with every role made a cross-reference and every ``::`` made a ``:``."""

    def crossref(match: re.Match[str]) -> str:
        short, target = match.group(1), match.group(2).strip()
        title = target.rsplit(".", 1)[-1] if short else target
        if _external(target):
            return f"`{title}`"
        return f"[`{title}`][{_resolve(obj, target)}]"

    return _LITERAL.sub(":", _ROLE.sub(crossref, text))


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)  # type: ignore[arg-type]


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring of a package once the package is loaded (names can then be
    looked up anywhere in it)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = convert(obj, obj.docstring.value)
