"""``log.formatter``, ``log.fields`` and ``log.accesslog``: the lines' shapes as logrus writes
them, the access log printed whatever ``log.level`` (as the Go registry 2.8.2 prints its
own), and the keys' checks."""

from __future__ import annotations

import datetime
import io
import json
import logging
import random
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from distblob import logs
from distblob.config import ConfigError, parse_config
from distblob.logs import _text_value, configure, go_time
from distblob.registry import Registry
from distblob.server import create_app
from support.goregistry import GoRegistry
from support.server import DistblobServer

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette prefers httpx2; plain httpx works in-process
    from starlette.testclient import TestClient

pytestmark = pytest.mark.timeout(120)

#: Go's RFC3339Nano: seconds, an optional fraction without trailing zeros, Z or an offset.
RFC3339NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?(Z|[+-]\d\d:\d\d)$")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The root logger's handlers and the levels :func:`configure` sets, put back."""
    root = logging.getLogger()
    access = logging.getLogger("distblob.access")
    saved = (list(root.handlers), root.level, access.level)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    access.setLevel(saved[2])


def _configured(log: dict[str, Any]) -> io.StringIO:
    stream = io.StringIO()
    configure(parse_config({"log": log}).log, stream)
    return stream


def test_text_lines_as_logrus(restore_logging: None) -> None:
    """``time``, ``level`` and ``msg`` first, then the fields in key order; values quoted
    unless letters, digits, ``-`` and ``.``."""
    stream = _configured({"formatter": "text", "fields": {"service": "registry", "env": "a b"}})
    logging.getLogger("distblob.serve").warning("disk %s", "almost full")
    (line,) = stream.getvalue().splitlines()
    match = re.fullmatch(r'time="?([^" ]+)"? level=warning msg="disk almost full" (.*)', line)
    assert match is not None, line
    assert RFC3339NANO.match(match.group(1))
    assert match.group(2) == 'env="a b" logger=distblob.serve service=registry'


@pytest.mark.parametrize("formatter", ["json", "logstash"])
def test_json_lines(restore_logging: None, formatter: str) -> None:
    """``json``: ``level``, ``msg``, ``time`` and the fields; ``logstash`` names them
    ``@timestamp``, ``@version`` and ``message``. A field named as one of those is kept,
    renamed ``fields.<name>``, as logrus does."""
    stream = _configured({"formatter": formatter, "fields": {"service": "registry", "level": 3}})
    logging.getLogger("distblob.serve").info("listening")
    record = json.loads(stream.getvalue())
    assert record["service"] == "registry" and record["logger"] == "distblob.serve"
    assert record["level"] == "info" and record["fields.level"] == 3
    if formatter == "json":
        assert record["msg"] == "listening" and RFC3339NANO.match(record["time"])
    else:
        assert record["message"] == "listening" and record["@version"] == "1"
        assert RFC3339NANO.match(record["@timestamp"])


def _logrus_text_value(value: object) -> str:
    """logrus's rule for a text value, spelt out: bare when it is only ASCII letters, digits,
    ``-`` and ``.``, else the JSON string of it (non-strings first as their JSON text)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text and all(c.isascii() and (c.isalnum() or c in "-.") for c in text):
        return text
    return json.dumps(text)


@pytest.mark.parametrize(
    "value",
    [
        *(f"a{chr(code)}b" for code in range(0x180)),
        *(chr(code) for code in (0x2028, 0xFFFD, 0x1F600)),
        "",
        "/v2/lib/app/blobs/uploads/97ba40e6-adae-4828-81be-b25702fbe67f",
        "127.0.0.1:5555",
        'say "hi"\\n',
        0,
        201,
        -3,
        10**30,
        True,
        False,
        None,
        4.5,
        float("nan"),
        {"a": 1},
    ],
)
def test_text_values_as_logrus(value: object) -> None:
    """Every value in a text line follows logrus's rule (the quick paths included)."""
    assert _text_value(value) == _logrus_text_value(value)


def test_go_time() -> None:
    assert RFC3339NANO.match(go_time(1_700_000_000.0))
    assert RFC3339NANO.match(go_time(1_700_000_000.25))


def _go_time_reference(created: float) -> str:
    """The local time of ``created`` as RFC3339Nano, worked out from a datetime each time."""
    moment = datetime.datetime.fromtimestamp(created).astimezone()
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    if fraction:
        text += "." + fraction
    offset = moment.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/St_Johns", "Asia/Kolkata"])
def test_go_time_as_datetime_writes_it(zone: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-second shortcut writes what a datetime of each moment gives: fractions rounded
    half to even (up to the next second), and the zone across a daylight saving change."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    monkeypatch.setattr(logs, "_second", (-1, "", ""))  # a second of another zone
    try:
        rng = random.Random(zone)
        moments = [1_700_000_000 + rng.random() * 1e6 for _ in range(2000)]
        moments += [1_700_000_000 + f for f in (0.0, 0.5, 0.9999994, 0.9999995, 0.9999996)]
        moments += [1_700_000_000.0000005, 1_700_000_000.0000015, 1_700_000_000.1]
        # Around the 2024 changes in Europe and America (UTC seconds), one second apart.
        for change in (1_711_846_800, 1_729_990_800, 1_710_052_200, 1_730_611_800):
            moments += [change + step + 0.25 for step in range(-3, 4)]
        for created in sorted(moments) + moments:
            assert go_time(created) == _go_time_reference(created), created
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_access_log_whatever_the_level(restore_logging: None) -> None:
    """``log.level: error`` silences the server's own info lines, not the access log; the
    json formatter gives its fields as fields."""
    stream = _configured({"level": "error", "formatter": "json", "fields": {"site": "x"}})
    logging.getLogger("distblob.serve").info("not printed")
    with TestClient(create_app(Registry.in_memory(), secret=b"log")) as client:
        assert client.get("/v2/").status_code == 200
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["logger"] == "distblob.access" and record["site"] == "x"
    assert (record["method"], record["path"], record["status"]) == ("GET", "/v2/", 200)
    assert record["user"] == "-" and record["level"] == "info"


def test_access_log_disabled(restore_logging: None) -> None:
    stream = _configured({"accesslog": {"disabled": True}})
    with TestClient(create_app(Registry.in_memory(), secret=b"log")) as client:
        assert client.get("/v2/").status_code == 200
    assert "logger=distblob.access" not in stream.getvalue()
    assert "logger=httpx" in stream.getvalue()  # the test client's line: the log was written


@pytest.mark.parametrize(
    ("log", "key"),
    [
        ({"formatter": "xml"}, "log.formatter"),
        ({"fields": ["a"]}, "log.fields"),
        ({"accesslog": {"disabled": "yes"}}, "log.accesslog.disabled"),
        ({"accesslog": {"enabled": True}}, "log.accesslog.enabled"),
    ],
)
def test_log_key_errors(log: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"log": log})
    assert info.value.key == key


@pytest.mark.parametrize(
    ("http", "key"),
    [
        ({"net": "udp"}, "http.net"),
        ({"net": "tcp", "addr": "/run/registry.sock"}, "http.addr"),
        ({"prefix": "registry/"}, "http.prefix"),
        ({"host": "registry.example.com"}, "http.host"),
        ({"relativeurls": "yes"}, "http.relativeurls"),
        ({"headers": {"X-A": "one"}}, "http.headers.X-A"),
        ({"headers": {"X-A": ["a\r\nSet-Cookie: x"]}}, "http.headers.X-A"),
    ],
)
def test_http_key_errors(http: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"http": http})
    assert info.value.key == key


def test_http_keys_parsed() -> None:
    http = parse_config(
        {
            "http": {
                "net": "unix",
                "addr": "/run/registry.sock",
                "prefix": "/reg/",
                "host": "https://r.example",
                "relativeurls": False,
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            }
        }
    ).http
    assert (http.net, http.addr, http.prefix) == ("unix", "/run/registry.sock", "/reg")
    assert (http.host, http.relativeurls) == ("https://r.example", False)
    assert http.headers == {"X-Content-Type-Options": ("nosniff",)}
    assert parse_config({}).http.relativeurls is None


def test_access_log_at_level_error_as_go(tmp_path: Path) -> None:
    """Both registries, ``log.level: error`` and json lines with ``log.fields``: each still
    logs the request (Go in Apache's combined format on stdout, distblob one json record),
    and neither prints its info lines."""
    log = {"level": "error", "formatter": "json", "fields": {"service": "registry"}}
    with GoRegistry(tmp_path / "go", extra_config={"log": log}) as go:
        assert httpx.get(f"{go.url}/v2/lib/missing/tags/list").status_code == 404
        go.stop()
        go_text = go.log_text()
    with DistblobServer(tmp_path / "ours", extra_config={"log": log}) as ours:
        assert httpx.get(f"{ours.url}/v2/lib/missing/tags/list").status_code == 404
        ours.stop()
        our_text = ours.log_text()
    assert '"GET /v2/lib/missing/tags/list HTTP/1.1" 404' in go_text
    go_json = [json.loads(line) for line in go_text.splitlines() if line.startswith("{")]
    assert all(record["level"] in ("error", "fatal", "panic") for record in go_json)
    ours_json = [json.loads(line) for line in our_text.splitlines() if line.startswith("{")]
    access = [r for r in ours_json if r["logger"] == "distblob.access"]
    assert [(r["path"], r["status"]) for r in access][-1] == ("/v2/lib/missing/tags/list", 404)
    assert all(r["service"] == "registry" for r in ours_json)
    others = [r for r in ours_json if r["logger"] != "distblob.access"]
    assert all(r["level"] in ("error", "fatal") for r in others), others
