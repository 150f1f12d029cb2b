"""The documentation's API examples as code: the fenced python blocks marked ``<!-- api-example: AREA -->`` in
README.md and every ``docs/*.md`` page (the README points to the pages; the examples live where a reader
looks for them, and every one of them runs in the suite)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
_EXAMPLE = re.compile(r"^<!-- api-example: (\w+) -->\n```python\n(.*?)^```", re.M | re.S)
MARKER = re.compile(r"^<!-- api-example: (\w+) -->$", re.M)


def documentation_files() -> list[Path]:
    """README.md, then the pages of docs/ in name order."""
    return [README, *sorted(DOCS.glob("*.md"))]


def api_examples(text: str, area: str) -> list[str]:
    """The code of each fenced python block that directly follows ``<!-- api-example: AREA -->``."""
    return [code for name, code in _EXAMPLE.findall(text) if name == area]


def documented_examples(area: str) -> list[tuple[str, str]]:
    """(file, code) of every AREA example in README.md and docs/*.md, in that order (file relative to the repo)."""
    return [
        (path.relative_to(ROOT).as_posix(), code)
        for path in documentation_files()
        for code in api_examples(path.read_text(encoding="utf-8"), area)
    ]


def readme_examples(area: str) -> list[str]:
    """The code of every AREA example in README.md and docs/*.md."""
    return [code for _, code in documented_examples(area)]
