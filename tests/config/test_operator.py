"""An operator's mistakes, made together: a config file and ``REGISTRY_*`` variables with
several problems each are reported in one go, by ``load_config`` and by ``distblob serve``."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from distblob.config import ConfigError, load_config
from distblob.config.env import apply_env
from distblob.config.values import ConfigErrors

pytestmark = pytest.mark.timeout(120)

FILE_WITH_TYPOS = """\
version: 0.1
log: {levle: debug}
storage:
  filesystem: {rootdirectory: ROOT}
  delete: {enable: true}
http: {addr: "127.0.0.1:1", secrett: s}
"""

#: Three variables that cannot be applied (a list for a string, a gap in a list, a mapping for
#: a string) beside one that can.
BAD_VARIABLES = {
    "REGISTRY_PROXY_USERNAME": "[a]",
    "REGISTRY_HEALTH_FILECHECKERS_3_FILE": "/down",
    "REGISTRY_HTTP_SECRET": "{a: b}",
    "REGISTRY_LOG_LEVEL": "debug",
}


def _write(tmp_path: pathlib.Path) -> pathlib.Path:
    config = tmp_path / "config.yml"
    config.write_text(FILE_WITH_TYPOS.replace("ROOT", str(tmp_path / "data")))
    return config


def test_bad_variables_and_the_files_typos_are_reported_together(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_config(_write(tmp_path), BAD_VARIABLES)
    keys = [error.key for error in info.value.errors]
    assert set(keys) >= {
        "REGISTRY_PROXY_USERNAME",
        "REGISTRY_HEALTH_FILECHECKERS_3_FILE",
        "REGISTRY_HTTP_SECRET",
        "log.levle",
        "storage.delete.enable",
        "http.secrett",
    }
    # The variables come first, in the order they are applied (their names').
    assert keys[:3] == [
        "REGISTRY_HEALTH_FILECHECKERS_3_FILE",
        "REGISTRY_HTTP_SECRET",
        "REGISTRY_PROXY_USERNAME",
    ]


def test_apply_env_applies_every_good_variable_and_raises_every_bad_one() -> None:
    with pytest.raises(ConfigErrors) as info:
        apply_env({"version": "0.1"}, BAD_VARIABLES)
    assert len(info.value.errors) == 3
    errors: list[ConfigError] = []
    doc, _ = apply_env({"version": "0.1"}, BAD_VARIABLES, errors)
    assert len(errors) == 3
    # The good variable is applied; a bad one leaves nothing behind (no empty health.file).
    assert doc == {"version": "0.1", "log": {"level": "debug"}}


def test_serve_prints_every_problem_and_exits_non_zero(tmp_path: pathlib.Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    proc = subprocess.run(
        [sys.executable, "-m", "distblob.cli", "serve", str(_write(tmp_path))],
        env={**base, **BAD_VARIABLES},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    for needle in (
        "REGISTRY_PROXY_USERNAME: expected a string, not a list",
        "REGISTRY_HEALTH_FILECHECKERS_3_FILE: index 3 is past the end of health.file",
        "REGISTRY_HTTP_SECRET: expected a string, not a mapping",
        "log.levle: unknown key (did you mean log.level?)",
        "storage.delete.enable: unknown key (did you mean storage.delete.enabled?)",
        "http.secrett: unknown key (did you mean http.secret?)",
    ):
        assert any(needle in line for line in lines), (needle, proc.stderr)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_an_empty_file_is_refused_not_read_as_every_default(
    tmp_path: pathlib.Path, text: str
) -> None:
    # The Go registry 2.8.2 refuses it too ("unsupported version"); starting on the defaults
    # would serve 127.0.0.1:5000 from ./distblob-data, wherever the process happens to run.
    config = tmp_path / "config.yml"
    config.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(config, {})
    assert "is empty" in str(info.value)
    base = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    proc = subprocess.run(
        [sys.executable, "-m", "distblob.cli", "serve", str(config)],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode != 0 and "is empty" in proc.stderr, proc.stderr
    assert not (tmp_path / "distblob-data").exists()


def test_a_problem_a_variable_made_names_the_variable(tmp_path: pathlib.Path) -> None:
    """A key set by a variable is in no file: the report names the variable, and the
    variable a suggested key would take (with Go's field names where they differ)."""
    environ = {
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIR": str(tmp_path),
        "REGISTRY_HTTP_ADDR": "nowhere",
        "REGISTRY_NOTIFICATIONS_EVENTCONFIG_INCLUDEREFERENCES": "maybe",
        "REGISTRY_LOG_LEVL": "debug",  # no such field: ignored, as Go ignores it, and said
    }
    with pytest.raises(ConfigErrors) as info:
        load_config(None, environ)
    lines = str(info.value).splitlines()
    assert lines[0] == (
        "config: storage.filesystem.rootdir: unknown key (did you mean "
        "storage.filesystem.rootdirectory?); as a variable, "
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY (set by REGISTRY_STORAGE_FILESYSTEM_ROOTDIR)"
    )
    assert any(line.endswith("(set by REGISTRY_HTTP_ADDR)") for line in lines)
    assert any(
        "notifications.events.includereferences" in line
        and line.endswith("(set by REGISTRY_NOTIFICATIONS_EVENTCONFIG_INCLUDEREFERENCES)")
        for line in lines
    )
    assert info.value.warnings == ("ignoring unrecognized environment variable REGISTRY_LOG_LEVL",)
    # and distblob serve prints both
    run = subprocess.run(
        [sys.executable, "-m", "distblob.cli", "serve"],
        env={**os.environ, **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "(set by REGISTRY_HTTP_ADDR)" in run.stderr
    assert "warning: ignoring unrecognized environment variable REGISTRY_LOG_LEVL" in run.stderr
