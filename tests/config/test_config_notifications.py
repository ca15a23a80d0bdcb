"""``notifications``: distribution's keys and defaults, and each fault a ConfigError naming its
key."""

from __future__ import annotations

from typing import Any

import pytest

from distblob.config import ConfigError, parse_config
from distblob.config.notifications import Endpoint, Notifications


def notifications(doc: object) -> Notifications:
    return parse_config({"version": 0.1, "notifications": doc}).notifications


def refused(doc: object) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        notifications(doc)
    return caught.value


def test_config_notifications_absent_means_no_endpoints() -> None:
    assert parse_config({"version": 0.1}).notifications == Notifications()
    assert notifications(None).enabled == ()


def test_config_notifications_every_key_as_distribution_documents_it() -> None:
    doc: dict[str, Any] = {
        "events": {"includereferences": True},
        "endpoints": [
            {
                "name": "alistener",
                "disabled": False,
                "url": "https://my.listener.com/event",
                "headers": {"Authorization": ["Bearer token"]},
                "timeout": "1s",
                "threshold": 10,
                "backoff": "1s",
                "ignoredmediatypes": ["application/octet-stream"],
                "ignore": {
                    "mediatypes": ["application/vnd.docker.image.rootfs.diff.tar.gzip"],
                    "actions": ["pull"],
                },
            },
            {"name": "off", "disabled": True},
        ],
    }
    config = notifications(doc)
    assert config.includereferences
    (endpoint,) = config.enabled
    assert endpoint == Endpoint(
        name="alistener",
        url="https://my.listener.com/event",
        headers={"Authorization": ("Bearer token",)},
        timeout=1.0,
        threshold=10,
        backoff=1.0,
        ignored_media_types=frozenset(
            {"application/octet-stream", "application/vnd.docker.image.rootfs.diff.tar.gzip"}
        ),
        ignored_actions=frozenset({"pull"}),
    )
    assert len(config.endpoints) == 2


def test_config_notifications_defaults_are_distributions() -> None:
    (endpoint,) = notifications({"endpoints": [{"name": "a", "url": "http://h/"}]}).enabled
    assert (endpoint.timeout, endpoint.threshold, endpoint.backoff) == (1.0, 10, 1.0)
    zero = {"name": "a", "url": "http://h/", "timeout": 0, "threshold": 0, "backoff": 0}
    assert notifications({"endpoints": [zero]}).enabled == (endpoint,)  # 0: the default


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ({"endpoint": []}, "notifications.endpoint"),
        ({"events": {"includereferences": "yes"}}, "notifications.events.includereferences"),
        ({"endpoints": {"name": "a"}}, "notifications.endpoints"),
        ({"endpoints": [{"url": "http://h/"}]}, "notifications.endpoints[0].name"),
        ({"endpoints": [{"name": "a"}]}, "notifications.endpoints[0].url"),
        ({"endpoints": [{"name": "a", "url": "ftp://h/"}]}, "notifications.endpoints[0].url"),
        (
            {"endpoints": [{"name": "a", "url": "http://h/", "timeout": "soon"}]},
            "notifications.endpoints[0].timeout",
        ),
        (
            {"endpoints": [{"name": "a", "url": "http://h/", "headers": {"X": "v"}}]},
            "notifications.endpoints[0].headers.X",
        ),
        (
            {"endpoints": [{"name": "a", "url": "http://h/", "ignore": {"actions": ["pul"]}}]},
            "notifications.endpoints[0].ignore.actions",
        ),
        (
            {"endpoints": [{"name": "a", "url": "http://h/", "retries": 3}]},
            "notifications.endpoints[0].retries",
        ),
        (
            {"endpoints": [{"name": "a", "url": "http://h/"}, {"name": "a", "url": "http://i/"}]},
            "notifications.endpoints",
        ),
    ],
)
def test_config_notifications_faults_name_their_key(doc: object, key: str) -> None:
    assert refused(doc).key == key
