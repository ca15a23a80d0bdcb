"""Storage drivers by name, as distribution's ``registry/storage/driver/factory``.

A config names its driver by a section (``storage: {filesystem: {rootdirectory: /srv}}``) and
the section holds the driver's parameters. :func:`create` builds the driver registered under
that name from them, and :func:`check` validates them without building anything: the
filesystem driver creates its root and the s3 driver a client, and checking a config should do
neither.

Each driver owns its parameters. Its entry raises
:class:`~distblob.errors.DriverParameterError` naming the parameter at fault (``rootdirectory``),
so the config reports ``storage.<driver>.<key>`` without knowing any driver. The built-in
entries are :data:`STORAGE_DRIVERS`: ``filesystem`` and ``inmemory`` (no parameters), and ``s3``,
whose module imports boto3, an optional extra, only when a driver is built; without boto3 its
check fails with an empty key. Another driver joins with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from distblob.errors import InvalidStorageDriverError
from distblob.storage.driver.base import StorageDriver
from distblob.storage.driver.filesystem import FilesystemDriver
from distblob.storage.driver.inmemory import InMemoryDriver
from distblob.storage.driver.s3 import S3Driver

#: Builds a driver from its parameters (a ``from_parameters`` classmethod).
DriverFactory: TypeAlias = Callable[[Mapping[str, object]], StorageDriver]
#: Validates a driver's parameters without building it; what it returns is ignored.
ParameterCheck: TypeAlias = Callable[[Mapping[str, object]], object]

#: The drivers distblob ships, in the order the config lists them.
STORAGE_DRIVERS: Final = ("filesystem", "inmemory", "s3")


@dataclass(frozen=True, slots=True)
class _Entry:
    factory: DriverFactory
    check: ParameterCheck


_entries: dict[str, _Entry] = {}


def register(name: str, factory: DriverFactory, *, check: ParameterCheck | None = None) -> None:
    """Make ``name`` a storage driver: the config accepts a ``storage.<name>`` section, and
    :func:`create` builds the driver with ``factory``.

    ``check`` validates the parameters without building a driver; without one, checking
    builds a driver and drops it, which suits only a driver whose construction touches nothing.
    Registering a name twice is a ``ValueError`` (as distribution panics): a driver would
    otherwise be replaced silently by whichever module was imported last.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a storage driver's name is a non-empty string, not {name!r}")
    if name in _entries:
        raise ValueError(f"a storage driver named {name!r} is registered already")
    _entries[name] = _Entry(factory, factory if check is None else check)


def unregister(name: str) -> None:
    """Forget the driver ``name``; :class:`~distblob.errors.InvalidStorageDriverError` if none."""
    _entry(name)
    del _entries[name]


def names() -> tuple[str, ...]:
    """The registered drivers' names: the built-in ones first, then in the order registered."""
    return tuple(_entries)


def _entry(name: str) -> _Entry:
    entry = _entries.get(name)
    if entry is None:
        raise InvalidStorageDriverError(name)
    return entry


def create(name: str, parameters: Mapping[str, object]) -> StorageDriver:
    """The driver ``name`` built from ``parameters``.

    :class:`~distblob.errors.InvalidStorageDriverError` if no driver has that name;
    :class:`~distblob.errors.DriverParameterError` (or what the driver's constructor raises) if
    the parameters do not do.
    """
    return _entry(name).factory(parameters)


def check(name: str, parameters: Mapping[str, object]) -> None:
    """Validate ``parameters`` as :func:`create` does, without building the driver: the same
    :class:`~distblob.errors.InvalidStorageDriverError` or
    :class:`~distblob.errors.DriverParameterError`, and nothing created or connected."""
    _entry(name).check(parameters)


register("filesystem", FilesystemDriver.from_parameters, check=FilesystemDriver.check_parameters)
register("inmemory", InMemoryDriver.from_parameters, check=InMemoryDriver.check_parameters)
register("s3", S3Driver.from_parameters, check=S3Driver.check_parameters)

__all__ = [
    "STORAGE_DRIVERS",
    "DriverFactory",
    "ParameterCheck",
    "check",
    "create",
    "names",
    "register",
    "unregister",
]
