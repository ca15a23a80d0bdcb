"""Shared fixtures: paths to the ground-truth data the real Go registry produced."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: ``shared/`` sits beside the checkout (in CI too, where it is a read-only copy).
SHARED = ROOT.parent / "shared"
GO_FIXTURES = SHARED / "fixtures" / "go-registry"


@pytest.fixture(scope="session")
def go_fixtures() -> pathlib.Path:
    assert GO_FIXTURES.is_dir(), f"the Go registry fixtures are missing at {GO_FIXTURES}"
    return GO_FIXTURES


@pytest.fixture(scope="session")
def go_upload(go_fixtures: pathlib.Path) -> dict[str, Any]:
    """The fixture upload's description, with its data regenerated as ``data``."""
    spec: dict[str, Any] = json.loads((go_fixtures / "upload.json").read_text())
    spec["data"] = fixture_data(spec["seed_prefix"], spec["length"])
    return spec


def fixture_data(prefix: str, length: int) -> bytes:
    """Regenerate the upload: sha256(prefix + i) digests for i = 0, 1, ... cut to ``length``."""
    import hashlib

    out = bytearray()
    i = 0
    while len(out) < length:
        out += hashlib.sha256(f"{prefix}{i}".encode()).digest()
        i += 1
    return bytes(out[:length])
