"""``distblob.config`` as a tree, and the driver factory that checks each driver's parameters.

The config's keys, errors and defaults are tested with the server (``test_server.py``); here:
that the parsed config has the YAML's shape, that the flat shorthands read the right keys of
it, and that the storage section goes through :mod:`distblob.storage.driver.factory`, so a
driver registered there is configurable, and every driver reports its own bad parameters.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml

from distblob import cli
from distblob.auth.htpasswd import HtpasswdAccessController
from distblob.config import (
    DEFAULT_ROOT,
    HTTP,
    AuthConfig,
    Cache,
    Config,
    ConfigError,
    Delete,
    GarbageCollect,
    Htpasswd,
    Log,
    Maintenance,
    Redirect,
    Storage,
    UploadPurging,
    build_registry,
    open_access_controller,
    open_driver,
    open_upload_leases,
    parse_config,
)
from distblob.errors import DriverParameterError, InvalidStorageDriverError
from distblob.storage.driver import FilesystemDriver, InMemoryDriver, S3Driver, factory
from distblob.storage.driver.s3 import S3ParameterError
from distblob.storage.leases import RedisUploadLeases

pytestmark = pytest.mark.timeout(60)

S3_PARAMETERS = {"bucket": "b", "region": "r", "accesskey": "a", "secretkey": "s3-secret-key"}

# -- the tree ----------------------------------------------------------------------------------


def test_the_config_has_the_shape_of_the_yaml() -> None:
    config = parse_config(
        {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {
                "filesystem": {"rootdirectory": "/srv/registry"},
                "delete": {"enabled": True},
                "redirect": {"disable": True},
                "maintenance": {
                    "uploadpurging": {
                        "enabled": False,
                        "age": "1h30m",
                        "interval": "30m",
                        "dryrun": True,
                    }
                },
            },
            "http": {"addr": ":5001", "secret": "s", "draintimeout": "2m"},
        }
    )
    assert config == Config(
        version="0.1",
        log=Log(level="warn"),
        storage=Storage(
            driver="filesystem",
            parameters={"rootdirectory": "/srv/registry"},
            delete=Delete(enabled=True),
            redirect=Redirect(disable=True),
            cache=Cache(blobdescriptor="inmemory"),
            maintenance=Maintenance(
                uploadpurging=UploadPurging(enabled=False, age=5400, interval=1800, dryrun=True)
            ),
        ),
        http=HTTP(addr=":5001", secret="s", draintimeout=120),
        redis=None,
        proxy=None,
    )
    assert config.storage.maintenance.uploadpurging.age == 5400
    assert config.http.draintimeout == 120 and config.log.level == "warn"


def test_no_document_is_every_default() -> None:
    config = parse_config(None)
    assert config == Config()
    assert config.storage == Storage(driver="filesystem", parameters={})
    assert config.storage.maintenance.uploadpurging == UploadPurging(
        enabled=True, age=168 * 3600, interval=24 * 3600, dryrun=False
    )
    assert config.http == HTTP(addr="127.0.0.1:5000", secret=None, draintimeout=5.0)
    # Empty sections (``storage:`` alone in YAML) are their defaults too.
    assert parse_config({"storage": None, "http": None, "log": None}) == config


def test_the_shorthands_read_the_tree() -> None:
    config = Config(
        log=Log(level="debug"),
        storage=Storage(
            driver="filesystem",
            parameters={"rootdirectory": "/data"},
            delete=Delete(enabled=True),
            redirect=Redirect(disable=True),
            cache=Cache(blobdescriptor="redis"),
            maintenance=Maintenance(uploadpurging=UploadPurging(age=60)),
        ),
        http=HTTP(addr="[::1]:6000", secret="k", draintimeout=7),
    )
    assert (config.driver, config.root, config.s3) == ("filesystem", "/data", None)
    assert (config.delete_enabled, config.redirect, config.blob_descriptor_cache) == (
        True,
        False,
        "redis",
    )
    assert config.upload_purging.age == 60
    assert (config.addr, config.host_port, config.secret) == ("[::1]:6000", ("::1", 6000), "k")
    assert (config.drain_timeout, config.log_level) == (7, "debug")
    # Read-only. Which error depends on the Python version: a frozen dataclass with slots
    # raises TypeError on 3.11 for a name that is not a field.
    with pytest.raises((AttributeError, TypeError)):
        config.addr = "elsewhere:1"  # type: ignore[misc]
    assert config.http.addr == "[::1]:6000"


def test_root_is_the_filesystem_drivers_alone() -> None:
    assert parse_config({"storage": {"filesystem": {"rootdirectory": None}}}).root == DEFAULT_ROOT
    # s3 has a rootdirectory too: a key prefix, not the filesystem root.
    config = parse_config({"storage": {"s3": {**S3_PARAMETERS, "rootdirectory": "/prefix"}}})
    assert config.root == DEFAULT_ROOT
    assert config.s3 == {**S3_PARAMETERS, "rootdirectory": "/prefix"}


def test_driver_parameters_are_kept_as_written_and_out_of_the_repr() -> None:
    written = {**S3_PARAMETERS, "chunksize": "6291456", "secure": "false"}
    config = parse_config({"storage": {"s3": written}, "http": {"secret": "http-secret"}})
    assert config.storage.driver == "s3"
    assert config.storage.parameters == written
    assert "s3-secret-key" not in repr(config) and "http-secret" not in repr(config)


# -- the factory -------------------------------------------------------------------------------


def test_the_factory_builds_each_builtin_driver(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert factory.names()[:3] == factory.STORAGE_DRIVERS == ("filesystem", "inmemory", "s3")
    driver = factory.create("filesystem", {"rootdirectory": str(tmp_path / "root")})
    assert isinstance(driver, FilesystemDriver) and driver.root == str(tmp_path / "root")
    monkeypatch.chdir(tmp_path)
    driver = factory.create("filesystem", {})
    assert isinstance(driver, FilesystemDriver)
    assert driver.root == str(tmp_path / "distblob-data")
    assert isinstance(factory.create("inmemory", {}), InMemoryDriver)
    s3 = factory.create("s3", {**S3_PARAMETERS, "regionendpoint": "http://127.0.0.1:1"})
    assert isinstance(s3, S3Driver) and s3.bucket == "b"


def test_checking_builds_nothing(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "not-yet"
    factory.check("filesystem", {"rootdirectory": str(root)})
    assert not root.exists()  # building the driver would have made it
    parse_config({"storage": {"filesystem": {"rootdirectory": str(root)}}})
    assert not root.exists()
    build_registry(parse_config({"storage": {"filesystem": {"rootdirectory": str(root)}}}))
    assert root.is_dir()


def test_an_unknown_driver_name() -> None:
    for call in (factory.create, factory.check):
        with pytest.raises(InvalidStorageDriverError) as raised:
            call("azure", {})
        assert raised.value.name == "azure" and "azure" in str(raised.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"storage": {"azure": {"accountname": "a"}}})
    # The catalogue (distblob.config.keys) knows azure is distribution's and says why it is not.
    assert info.value.key == "storage.azure" and info.value.reason == "not supported; use s3"


@pytest.mark.parametrize(
    ("driver", "parameters", "key", "reason"),
    [
        ("filesystem", {"rootdir": "/x"}, "rootdir", "unknown key"),
        (
            "filesystem",
            {"rootdirectory": 5},
            "rootdirectory",
            "expected a non-empty string, not 5",
        ),
        (
            "filesystem",
            {"rootdirectory": ""},
            "rootdirectory",
            "expected a non-empty string, not ''",
        ),
        ("inmemory", {"size": 1}, "size", "unknown key"),
        ("s3", {**S3_PARAMETERS, "acelerate": True}, "acelerate", "unknown parameter"),
        ("s3", {"bucket": "b"}, "region", "a region is required"),
        ("s3", {**S3_PARAMETERS, "v4auth": False}, "v4auth", "only signature v4 is supported"),
    ],
)
def test_each_driver_names_its_bad_parameter(
    driver: str, parameters: dict[str, Any], key: str, reason: str
) -> None:
    for call in (factory.check, factory.create):
        with pytest.raises(DriverParameterError) as raised:
            call(driver, parameters)
        assert (raised.value.key, raised.value.reason) == (key, reason)
    with pytest.raises(ConfigError) as info:
        parse_config({"storage": {driver: parameters}})
    # A key in no version of distribution is refused by the catalogue before the driver.
    expected = "unknown key" if reason.startswith("unknown") else reason
    assert info.value.key == f"storage.{driver}.{key}"
    assert info.value.reason.startswith(expected)


def test_the_s3_error_keeps_its_name() -> None:
    with pytest.raises(S3ParameterError) as raised:
        S3Driver.check_parameters({"bucket": "b", "region": "r", "chunksize": "1"})
    assert isinstance(raised.value, DriverParameterError) and raised.value.key == "chunksize"
    assert str(raised.value) == "chunksize: 1 is not within 5242880..5368709120"


def test_a_missing_boto3_is_a_config_error_on_the_s3_section(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "boto3" else find_spec(name, *args),
    )
    with pytest.raises(ConfigError) as info:
        parse_config({"storage": {"s3": S3_PARAMETERS}})
    assert info.value.key == "storage.s3"
    assert info.value.reason == "needs boto3 (No module named 'boto3'): pip install 'distblob[s3]'"
    # A bad parameter is still reported first, as when boto3 is installed.
    with pytest.raises(ConfigError) as info:
        parse_config({"storage": {"s3": {"region": "r"}}})
    assert info.value.key == "storage.s3.bucket"


class _SharedMemoryDriver(InMemoryDriver):
    """An in-memory driver that says replicas share it, as an object store does."""

    name = "shared-memory"
    shared_by_replicas = True


class _Recorder:
    """A registered driver's factory and check, recording the parameters each was given."""

    def __init__(self) -> None:
        self.built: list[Mapping[str, object]] = []
        self.checked: list[Mapping[str, object]] = []

    def create(self, parameters: Mapping[str, object]) -> _SharedMemoryDriver:
        self.built.append(dict(parameters))
        return _SharedMemoryDriver()

    def check(self, parameters: Mapping[str, object]) -> None:
        self.checked.append(dict(parameters))
        for key, value in parameters.items():
            if key != "size":
                raise DriverParameterError(key, "unknown key")
            if not isinstance(value, int):
                raise DriverParameterError(key, f"expected a whole number, not {value!r}")


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    """``shared-memory`` registered with the factory for the test."""
    recorder = _Recorder()
    factory.register("shared-memory", recorder.create, check=recorder.check)
    try:
        yield recorder
    finally:
        factory.unregister("shared-memory")


def test_a_registered_driver_is_configurable(recorder: _Recorder) -> None:
    assert factory.names()[-1] == "shared-memory"
    config = parse_config({"storage": {"shared-memory": {"size": 3}}})
    assert config.storage.driver == "shared-memory"
    assert config.storage.parameters == {"size": 3}
    assert recorder.checked == [{"size": 3}] and recorder.built == []
    driver = open_driver(config)
    assert isinstance(driver, _SharedMemoryDriver) and recorder.built == [{"size": 3}]

    with pytest.raises(ConfigError) as info:
        parse_config({"storage": {"shared-memory": {"size": "big"}}})
    assert info.value.key == "storage.shared-memory.size"
    with pytest.raises(ConfigError) as info:
        parse_config({"storage": {"shared-memory": None, "inmemory": None}})
    assert info.value.key == "storage"
    assert info.value.reason == "one storage driver only, not inmemory and shared-memory"


def test_registering_twice_is_refused_and_unregistering_forgets(recorder: _Recorder) -> None:
    with pytest.raises(ValueError, match="registered already"):
        factory.register("shared-memory", recorder.create)
    with pytest.raises(ValueError, match="non-empty string"):
        factory.register("", recorder.create)
    factory.unregister("shared-memory")
    try:
        with pytest.raises(ConfigError) as info:
            parse_config({"storage": {"shared-memory": {}}})
        assert info.value.key == "storage.shared-memory"
        with pytest.raises(InvalidStorageDriverError):
            factory.unregister("shared-memory")
    finally:
        factory.register("shared-memory", recorder.create)  # for the fixture to unregister


def test_without_a_check_the_factory_checks_by_building() -> None:
    built: list[Mapping[str, object]] = []

    def create(parameters: Mapping[str, object]) -> InMemoryDriver:
        built.append(parameters)
        return InMemoryDriver()

    factory.register("built-to-check", create)
    try:
        parse_config({"storage": {"built-to-check": {"anything": 1}}})
        assert built == [{"anything": 1}]
    finally:
        factory.unregister("built-to-check")


def test_upload_leases_follow_the_driver_not_its_name(
    recorder: _Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # A driver of one process (in memory; a filesystem locks with flock): no leases, even
    # with a redis section.
    config = parse_config({"storage": {"inmemory": None}, "redis": {"addr": "127.0.0.1:1"}})
    assert open_upload_leases(config, InMemoryDriver()) is None
    # A driver replicas share gets leases in the configured Redis (connected on first use)...
    config = parse_config({"storage": {"shared-memory": None}, "redis": {"addr": "127.0.0.1:1"}})
    leases = open_upload_leases(config, open_driver(config))
    assert isinstance(leases, RedisUploadLeases)
    # ... and, without one, a note naming its section.
    config = parse_config({"storage": {"shared-memory": None}})
    with caplog.at_level(logging.INFO, "distblob.storage"):
        assert open_upload_leases(config, open_driver(config)) is None
    assert "storage.shared-memory: uploads are locked within this process only" in caplog.text


# -- auth --------------------------------------------------------------------------------------


def test_auth_htpasswd_is_a_section_of_the_tree() -> None:
    config = parse_config({"auth": {"htpasswd": {"realm": "Registry", "path": "/etc/htpasswd"}}})
    assert config.auth == AuthConfig(htpasswd=Htpasswd(realm="Registry", path="/etc/htpasswd"))
    assert config.auth.controller == "htpasswd"
    # No section, or an empty one (``auth:`` alone in YAML), is no access control.
    assert parse_config(None).auth is None
    assert parse_config({"auth": None}).auth is None


@pytest.mark.parametrize(
    ("auth", "key", "reason"),
    [
        ({}, "auth", "name exactly one of htpasswd, token or silly"),
        ("htpasswd", "auth.htpasswd.realm", "required"),  # distribution's bare-name form
        (
            {"htpasswd": {"realm": "r", "path": "p"}, "silly": {"realm": "r", "service": "s"}},
            "auth",
            "exactly one of htpasswd, token or silly, not htpasswd and silly",
        ),
        ({"token": {"realm": "r", "service": "s"}}, "auth.token.rootcertbundle", "required"),
        (
            {"token": {"service": "s", "issuer": "i", "jwks": "j"}},
            "auth.token.realm",
            "required",
        ),
        ({"token": {"realm": "r", "issuer": "i", "jwks": "j"}}, "auth.token.service", "required"),
        ({"token": {"realm": "r", "service": "s", "jwks": "j"}}, "auth.token.issuer", "required"),
        (
            {"token": {"realm": "r", "service": "s", "issuer": "i", "jwks": "j", "x": 1}},
            "auth.token.x",
            "unknown key",
        ),
        (
            {
                "token": {
                    "realm": "r",
                    "service": "s",
                    "issuer": "i",
                    "jwks": "j",
                    "signingalgorithms": ["none"],
                }
            },
            "auth.token.signingalgorithms",
            "unsupported 'none'",
        ),
        (
            {
                "token": {
                    "realm": "r",
                    "service": "s",
                    "issuer": "i",
                    "jwks": "j",
                    "autoredirect": "yes",
                }
            },
            "auth.token.autoredirect",
            "true or false",
        ),
        ({"silly": {"realm": "r"}}, "auth.silly.service", "required"),
        ({"silly": {"service": "s"}}, "auth.silly.realm", "required"),
        ({"ldap": {}}, "auth.ldap", "unknown key"),
        ({"htpasswd": None}, "auth.htpasswd.realm", "required"),
        ({"htpasswd": {"path": "p"}}, "auth.htpasswd.realm", "required"),
        ({"htpasswd": {"realm": "r"}}, "auth.htpasswd.path", "required"),
        ({"htpasswd": {"realm": "r", "path": ""}}, "auth.htpasswd.path", "non-empty string"),
        ({"htpasswd": {"realm": 5, "path": "p"}}, "auth.htpasswd.realm", "non-empty string"),
        ({"htpasswd": {"realm": "r\nX-Evil: 1", "path": "p"}}, "auth.htpasswd.realm", "ASCII"),
        ({"htpasswd": {"realm": "régistre", "path": "p"}}, "auth.htpasswd.realm", "ASCII"),
        ({"htpasswd": {"realm": "r", "path": "p", "cost": 10}}, "auth.htpasswd.cost", "unknown"),
    ],
)
def test_auth_errors_name_the_key(auth: Any, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"auth": auth})
    assert info.value.key == key
    assert reason in info.value.reason


def test_the_access_controller_reads_its_file_once(tmp_path: pathlib.Path) -> None:
    assert open_access_controller(parse_config(None)) is None
    path = tmp_path / "htpasswd"
    config = parse_config({"auth": {"htpasswd": {"realm": "r", "path": str(path)}}})
    with pytest.raises(ConfigError) as info:
        open_access_controller(config)  # distribution writes a file; distblob does not start
    assert info.value.key == "auth.htpasswd.path"
    assert "cannot read" in info.value.reason and not path.exists()
    path.write_text("")
    controller = open_access_controller(config)
    assert isinstance(controller, HtpasswdAccessController)
    assert (controller.realm, controller.path) == ("r", str(path))


# -- the command line --------------------------------------------------------------------------


def test_serve_flags_override_the_tree(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    ran: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.append(options))
    path = tmp_path / "config.yml"
    config = {"storage": {"filesystem": {"rootdirectory": str(tmp_path / "configured")}}}
    path.write_text(yaml.safe_dump({**config, "http": {"addr": "127.0.0.1:5999", "secret": "s"}}))
    flags = ["--root", str(tmp_path / "flag"), "--addr", "127.0.0.1:6001"]
    assert cli.main(["serve", "--config", str(path), *flags]) == 0
    assert (ran[0]["host"], ran[0]["port"]) == ("127.0.0.1", 6001)
    assert (tmp_path / "flag").is_dir() and not (tmp_path / "configured").exists()


def test_garbage_collection_is_off_unless_enabled_and_reads_its_keys() -> None:
    assert parse_config(None).garbage_collect == GarbageCollect(enabled=False)
    doc = {
        "storage": {
            "filesystem": {"rootdirectory": "/data"},
            "maintenance": {
                "garbagecollect": {
                    "enabled": True,
                    "interval": "6h",
                    "grace": "30m",
                    "deleteuntagged": True,
                    "manifestsonly": True,
                }
            },
        }
    }
    assert parse_config(doc).garbage_collect == GarbageCollect(
        enabled=True,
        interval=6 * 3600,
        grace=1800,
        deleteuntagged=True,
        manifestsonly=True,
        dryrun=False,
    )


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"interval": "10s"}, "storage.maintenance.garbagecollect.interval"),
        ({"grace": "soon"}, "storage.maintenance.garbagecollect.grace"),
        ({"deleteuntaged": True}, "storage.maintenance.garbagecollect"),
    ],
)
def test_garbage_collection_refuses_bad_keys(section: dict[str, Any], key: str) -> None:
    doc = {"storage": {"inmemory": None, "maintenance": {"garbagecollect": section}}}
    with pytest.raises(ConfigError) as raised:
        parse_config(doc)
    assert key in str(raised.value)
