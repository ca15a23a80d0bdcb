"""The server's log, shaped as distribution's: ``log.formatter`` (logrus's ``text`` and
``json`` formatters, and the ``logstash`` one distribution vendors), ``log.fields`` on every
line, and the access log kept apart from ``log.level``.

distribution prints its access log whatever the level (a separate handler, outside logrus), so
``log.level: error`` silences its own messages but not one line per request. Here the access
records (the ``distblob.access`` logger) have their own level, ``info``, and only
``log.accesslog.disabled`` turns them off.

A line is one record: ``time``, ``level`` and ``msg`` first, then the fields in key order (the
record's own, its logger's name, the configured ``log.fields``), as logrus writes them.
Timestamps are RFC 3339 with the fraction's trailing zeros dropped (Go's ``RFC3339Nano``).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import re
import sys
from collections.abc import Mapping
from typing import IO, Any, Final

from distblob.config.tree import Log

#: Where the access log's fields ride on a record (``extra={ACCESS_FIELDS: {...}}``).
ACCESS_FIELDS: Final = "access_fields"

#: ``log.level`` as Python's levels (logrus's ``panic`` and ``fatal`` are both CRITICAL).
_LEVELS: Final = {
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}
#: Python's levels as logrus names them in a line.
_NAMES: Final = {
    logging.CRITICAL: "fatal",
    logging.ERROR: "error",
    logging.WARNING: "warning",
    logging.INFO: "info",
    logging.DEBUG: "debug",
}
_ACCESS_LOGGER: Final = "distblob.access"


#: The last whole second :func:`go_time` wrote: (seconds, date and time, zone).
_second: tuple[int, str, str] = (-1, "", "")


def go_time(created: float) -> str:
    """``created`` (seconds since the epoch) in local time as Go's ``RFC3339Nano`` writes it:
    the fraction without trailing zeros, ``Z`` for UTC.

    The date, time and zone of a second are worked out once (lines come many a second): the
    microseconds are rounded as ``datetime.fromtimestamp`` rounds them, and a zone's offset
    changes only on a whole second."""
    global _second
    whole = math.floor(created)
    micro = round((created - whole) * 1e6)  # half to even, as datetime rounds
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    second = _second
    if second[0] != whole:
        moment = datetime.datetime.fromtimestamp(whole).astimezone()
        offset = moment.utcoffset()
        if not offset:
            zone = "Z"
        else:
            minutes = int(offset.total_seconds()) // 60
            sign = "+" if minutes >= 0 else "-"
            zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        second = _second = (whole, moment.strftime("%Y-%m-%dT%H:%M:%S"), zone)
    if micro:
        return f"{second[1]}.{micro:06d}".rstrip("0") + second[2]
    return second[1] + second[2]


#: What logrus's text formatter writes bare: ASCII letters, digits, ``-`` and ``.``.
_BARE: Final = re.compile(r"[A-Za-z0-9.-]+")
#: What ``json.dumps`` quotes without escaping anything: printable ASCII but ``"`` and ``\\``.
_PLAIN: Final = re.compile(r"[ !#-\[\]-~]*")


def _text_value(value: object) -> str:
    """A value as logrus's text formatter writes it: bare when it is only letters, digits,
    ``-`` and ``.``, else quoted (escaped, so a value cannot forge another field)."""
    if isinstance(value, str):
        text = value
    elif type(value) is int:
        text = str(value)  # what json.dumps writes for an int, without its machinery
    else:
        text = json.dumps(value, default=str)
    if _BARE.fullmatch(text):
        return text
    if _PLAIN.fullmatch(text):
        return f'"{text}"'  # what json.dumps writes for it: nothing to escape
    return json.dumps(text)


class _GoFormatter(logging.Formatter):
    """One formatter for the three shapes; ``fields`` are ``log.fields``."""

    def __init__(self, kind: str, fields: Mapping[str, Any]) -> None:
        super().__init__()
        self.kind = kind
        self.fields = dict(fields)

    def _data(self, record: logging.LogRecord) -> dict[str, Any]:
        data: dict[str, Any] = {**self.fields, "logger": record.name}
        access = getattr(record, ACCESS_FIELDS, None)
        if isinstance(access, Mapping):
            data.update(access)
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return data

    def format(self, record: logging.LogRecord) -> str:
        level = _NAMES.get(record.levelno, record.levelname.lower())
        when = go_time(record.created)
        if getattr(record, ACCESS_FIELDS, None) is not None:
            message = "request"  # the line's fields say which
        else:
            message = record.getMessage()
        data = self._data(record)
        if self.kind == "text":
            head = [("time", when), ("level", level), ("msg", message)]
            parts = [f"{key}={_text_value(value)}" for key, value in head]
            parts += [f"{key}={_text_value(data[key])}" for key in sorted(data)]
            return " ".join(parts)
        if self.kind == "json":
            for key in ("time", "msg", "level"):  # logrus keeps a field that clashes, renamed
                if key in data:
                    data[f"fields.{key}"] = data.pop(key)
            data.update(time=when, msg=message, level=level)
        else:  # logstash
            for key in ("message", "level"):
                if key in data:
                    data[f"fields.{key}"] = data.pop(key)
            data.update({"@version": "1", "@timestamp": when, "message": message, "level": level})
        return json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))


def configure(log: Log, stream: IO[str] | None = None) -> None:
    """Set up the process's logging from the ``log`` section: one handler on the root logger
    writing to ``stream`` (stderr), the level, and the access log's own level."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_GoFormatter(log.formatter, log.fields))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[log.level])
    access = logging.getLogger(_ACCESS_LOGGER)
    access.setLevel(logging.CRITICAL + 1 if log.accesslog.disabled else logging.INFO)


__all__ = ["ACCESS_FIELDS", "configure", "go_time"]
