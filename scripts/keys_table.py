"""Write the configuration reference's table of every key from the catalogue
(``python -m scripts.keys_table``; ``tests/config/test_keys.py`` checks they agree)."""

from __future__ import annotations

from pathlib import Path

from distblob.config.keys import markdown_table

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
BEGIN, END = "<!-- keys table: begin -->\n", "<!-- keys table: end -->"


def main() -> None:
    text = PAGE.read_text()
    head, rest = text.split(BEGIN)
    tail = rest.split(END)[1]
    PAGE.write_text(head + BEGIN + markdown_table() + END + tail)


if __name__ == "__main__":
    main()
