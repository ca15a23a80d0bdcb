"""The catalogue of distribution's keys (distblob.config.keys): each class, typos with the
nearest real key, every problem of a config at once, and the docs' table."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from distblob.config import ConfigError, ConfigErrors, parse_config
from distblob.config.keys import (
    CATALOGUE,
    IMPLEMENTED,
    REFUSED,
    WARNED,
    check_keys,
    lookup,
    markdown_table,
)

pytestmark = pytest.mark.timeout(60)

DOCS = pathlib.Path(__file__).parents[2] / "docs" / "configuration.md"


def test_every_pattern_is_listed_once_with_a_reason_unless_implemented() -> None:
    patterns = [pattern for pattern, _, _ in CATALOGUE]
    assert len(patterns) == len(set(patterns))
    for pattern, kind, why in CATALOGUE:
        assert kind in (IMPLEMENTED, WARNED, REFUSED)
        assert kind == IMPLEMENTED or why, pattern


@pytest.mark.parametrize(
    ("key", "kind", "reason"),
    [
        ("storage.azure", REFUSED, "not supported; use s3"),
        ("storage.gcs", REFUSED, "not supported; use s3"),
        ("storage.swift", REFUSED, "not supported; use s3"),
        ("storage.oss", REFUSED, "not supported; use s3"),
        ("http.tls.letsencrypt", REFUSED, "ACME"),
        ("reporting", WARNED, "Bugsnag"),
        ("log.hooks", WARNED, "hooks"),
        ("compatibility", WARNED, "schema 1"),
        ("http.http2", WARNED, "HTTP/1.1"),
        ("notifications.endpoints[].url", IMPLEMENTED, ""),
        ("middleware.storage[].rewrite", REFUSED, "CDN"),
        ("storage.filesystem.maxthreads", IMPLEMENTED, ""),
        ("storage.s3.accelerate", IMPLEMENTED, ""),
        ("redis.tls.enabled", IMPLEMENTED, "2.8"),
        ("redis.mastername", REFUSED, "Sentinel"),
        ("http.headers", IMPLEMENTED, ""),
        ("redis.addrs", IMPLEMENTED, ""),
        ("proxy.cachewritetimeout", IMPLEMENTED, ""),
        ("storage.s3.bucket", IMPLEMENTED, ""),
        ("loglevel", IMPLEMENTED, ""),
    ],
)
def test_the_class_of_a_key(key: str, kind: int, reason: str) -> None:
    found = lookup(key)
    assert found is not None and found[0] == kind and reason in found[1]


@pytest.mark.parametrize(
    ("doc", "key", "suggestion"),
    [
        ({"storage": {"delet": {"enabled": True}}}, "storage.delet", "storage.delete"),
        ({"htp": {"addr": ":5000"}}, "htp", "http"),
        ({"http": {"adr": ":5000"}}, "http.adr", "http.addr"),
        ({"storage": {"s3": {"regoin": "x"}}}, "storage.s3.regoin", "storage.s3.region"),
        (
            {"storage": {"maintenance": {"uploadpurging": {"intervall": "1h"}}}},
            "storage.maintenance.uploadpurging.intervall",
            "storage.maintenance.uploadpurging.interval",
        ),
    ],
)
def test_a_typo_is_refused_with_the_nearest_real_key(
    doc: dict[str, Any], key: str, suggestion: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert info.value.key == key
    assert info.value.reason == f"unknown key (did you mean {suggestion}?)"


def test_a_key_far_from_any_is_refused_without_a_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"zzzzqqq": 1})
    assert (info.value.key, info.value.reason) == ("zzzzqqq", "unknown key")


def test_every_problem_is_reported_at_once() -> None:
    doc = {
        "version": 0.1,
        "log": {"level": "loud", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": "/srv", "maxthreads": 100},
            "delet": {"enabled": True},
        },
        "http": {"addr": "nowhere", "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "middleware": {"storage": [{"name": "cloudfront", "options": {}}]},
        "auth": {"htpasswd": {"realm": "r"}},
        "reporting": {"bugsnag": {"apikey": "k"}},
    }
    with pytest.raises(ConfigErrors) as info:
        parse_config(doc)
    found = [(error.key, error.reason.split(" (did you")[0]) for error in info.value.errors]
    assert found == [
        ("storage.delet", "unknown key"),
        ("middleware.storage[0]", "cloudfront: not supported: needs CloudFront signing"),
        ("http.addr", "expected host:port, not 'nowhere'"),
        ("log.level", "expected one of panic, fatal, error, warn, info, debug, trace, not 'loud'"),
        ("auth.htpasswd.path", "required: the htpasswd file (bcrypt entries)"),
    ]
    # The first problem stays the error's key and reason; the message has them all.
    assert info.value.key == "storage.delet" and info.value.reason.startswith("unknown key")
    assert str(info.value).splitlines() == [str(error) for error in info.value.errors]
    assert isinstance(info.value, ConfigError)


def test_list_items_are_checked_and_reported_with_their_index() -> None:
    doc = {
        "health": {"file": [{"file": "/a"}, {"fiel": "/b"}]},
        "notifications": {"endpoints": [{"name": "a", "url": "http://a"}, {"nmae": "b"}]},
        "storage": {"inmemory": {}},
    }
    with pytest.raises(ConfigErrors) as info:
        parse_config(doc)
    assert [(error.key, error.reason) for error in info.value.errors] == [
        ("health.file[1].fiel", "unknown key (did you mean health.file[1].file?)"),
        (
            "notifications.endpoints[1].nmae",
            "unknown key (did you mean notifications.endpoints[1].name?)",
        ),
        # then the sections: the items left lack a file, a name
        ("health.file[1].file", "required"),
        ("notifications.endpoints[1].name", "required"),
    ]


def test_a_warned_key_is_accepted_once_with_its_reason() -> None:
    config = parse_config(
        {"reporting": {"newrelic": {"licensekey": "k"}}, "http": {"http2": {"disabled": True}}}
    )
    assert len(config.warnings) == 2
    assert config.warnings[0].startswith("reporting: accepted without effect: ")
    assert config.warnings[1].startswith("http.http2: accepted without effect: ")


def test_a_zero_value_counts_as_absent_but_not_a_driver() -> None:
    # Go cannot tell ``relativeurls: false`` from no relativeurls at all.
    config = parse_config({"http": {"relativeurls": False, "http2": {"disabled": False}}})
    assert config.warnings == ()
    assert check_keys({"storage": {"azure": {}}})[0].key == "storage.azure"


def test_the_level_takes_any_case_and_loglevel_when_log_level_is_unset() -> None:
    assert parse_config({"log": {"level": "INFO"}}).log.level == "info"
    assert parse_config({"loglevel": "debug"}).log.level == "debug"
    assert parse_config({"loglevel": "debug", "log": {"level": "Warn"}}).log.level == "warn"


def test_distribution_bare_name_forms() -> None:
    config = parse_config({"storage": "inmemory"})
    assert config.storage.driver == "inmemory"
    with pytest.raises(ConfigError) as info:
        parse_config({"auth": "silly"})
    assert info.value.key.startswith("auth.silly.")


def test_the_docs_list_every_key_with_its_class() -> None:
    text = DOCS.read_text()
    begin, end = "<!-- keys table: begin -->\n", "<!-- keys table: end -->"
    assert text.split(begin)[1].split(end)[0] == markdown_table()


def test_log_hooks_that_are_all_disabled_are_not_warned_about() -> None:
    hook = {"type": "mail", "levels": ["panic"], "options": {"smtp": {"addr": "m:25"}}}
    assert parse_config({"log": {"hooks": [{**hook, "disabled": True}]}}).warnings == ()
    warned = parse_config({"log": {"hooks": [{**hook, "disabled": False}]}}).warnings
    assert len(warned) == 1 and warned[0].startswith("log.hooks:")
