"""Parsing the numbers clients and configs send: ASCII digits only.

``str.isdigit`` also accepts digits such as ``²`` that ``int`` refuses, so a check with it lets
a crafted header or query parameter reach ``int`` and fail there (a 500 instead of a 400).
"""

from __future__ import annotations


def is_ascii_digits(text: str) -> bool:
    """Whether ``text`` is one or more of ``0``-``9`` and nothing else."""
    return text.isascii() and text.isdigit()


__all__ = ["is_ascii_digits"]
