"""distribution's remaining ``storage.s3`` parameters: ``multipartcopy*``, ``useragent``,
``usedualstack``, ``accelerate``, ``usefipsendpoint`` and ``loglevel``, as they reach boto3's
client (against ``rclone serve s3`` where a request shows it), and bad values naming their key."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

from distblob.config import ConfigError, parse_config
from distblob.storage.driver.s3 import MiB, S3Driver
from support.s3server import RcloneS3

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def bucket(s3_server: RcloneS3) -> str:
    return s3_server.new_bucket()


def _sent(driver: S3Driver, event: str) -> list[Any]:
    seen: list[Any] = []
    driver._client.meta.events.register(event, lambda **kwargs: seen.append(kwargs))
    return seen


def test_useragent_is_sent(s3_server: RcloneS3, bucket: str) -> None:
    driver = S3Driver.from_parameters(s3_server.parameters(bucket, useragent="mirror/1.0"))
    sent = _sent(driver, "before-send.s3")
    driver.put_content("/a", b"x")
    agents = [call["request"].headers["User-Agent"] for call in sent]
    assert agents and all(b"mirror/1.0" in agent or "mirror/1.0" in agent for agent in agents)


@pytest.mark.parametrize(
    ("parameters", "endpoint"),
    [
        ({"usefipsendpoint": True}, "https://s3-fips.us-east-1.amazonaws.com"),
        ({"usedualstack": "true"}, "https://s3.dualstack.us-east-1.amazonaws.com"),
    ],
)
def test_endpoint_variants_reach_the_client(parameters: dict[str, Any], endpoint: str) -> None:
    driver = S3Driver.from_parameters({"bucket": "b", "region": "us-east-1", **parameters})
    assert driver._client.meta.endpoint_url == endpoint


def test_accelerate_reaches_the_client() -> None:
    driver = S3Driver.from_parameters({"bucket": "b", "region": "us-east-1", "accelerate": True})
    assert driver._client.meta.config.s3["use_accelerate_endpoint"] is True


def test_multipart_copy_settings_are_used_and_fall_back_on_rclone(
    s3_server: RcloneS3, bucket: str
) -> None:
    parameters = s3_server.parameters(
        bucket,
        multipartcopythresholdsize=5 * MiB,
        multipartcopychunksize=5 * MiB,
        multipartcopymaxconcurrency=2,
    )
    driver = S3Driver.from_parameters(parameters)
    data = os.urandom(6 * MiB)
    driver.put_content("/big", data)
    part_copies = _sent(driver, "provide-client-params.s3.UploadPartCopy")
    driver.move("/big", "/moved")
    # Above the threshold the copy goes part by part in chunks of the configured size; rclone
    # stores empty parts for those, so the driver falls back to one CopyObject (the first part
    # to fail may stop the other before it is sent).
    ranges = {call["params"]["CopySourceRange"] for call in part_copies}
    assert ranges and ranges <= {f"bytes=0-{5 * MiB - 1}", f"bytes={5 * MiB}-{6 * MiB - 1}"}
    assert driver.get_content("/moved") == data
    small = _sent(driver, "provide-client-params.s3.UploadPartCopy")
    driver.put_content("/small", b"y" * 100)
    driver.move("/small", "/small2")  # under the threshold: one CopyObject
    assert small == [] and driver.get_content("/small2") == b"y" * 100


@pytest.fixture
def botocore_level() -> Iterator[None]:
    logger = logging.getLogger("botocore")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.mark.usefixtures("botocore_level")
def test_loglevel_turns_botocore_debug_on() -> None:
    logging.getLogger("botocore").setLevel(logging.WARNING)
    S3Driver.from_parameters({"bucket": "b", "region": "us-east-1", "loglevel": "off"})
    assert logging.getLogger("botocore").level == logging.WARNING
    S3Driver.from_parameters({"bucket": "b", "region": "us-east-1", "loglevel": "DebugWithSigning"})
    assert logging.getLogger("botocore").level == logging.DEBUG


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("multipartcopychunksize", 1024),
        ("multipartcopymaxconcurrency", 0),
        ("multipartcopythresholdsize", 6 << 30),
        ("usedualstack", "maybe"),
        ("accelerate", 1.5),
        ("usefipsendpoint", "yes"),
        ("loglevel", "verbose"),
        ("useragent", ["a"]),
    ],
)
def test_a_bad_value_names_its_key(key: str, value: object) -> None:
    doc = {"storage": {"s3": {"bucket": "b", "region": "us-east-1", key: value}}}
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert info.value.key == f"storage.s3.{key}"
