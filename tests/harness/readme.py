"""README's API examples as code: the fenced python blocks marked ``<!-- api-example: AREA -->``."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_EXAMPLE = re.compile(r"^<!-- api-example: (\w+) -->\n```python\n(.*?)^```", re.M | re.S)


def api_examples(text: str, area: str) -> list[str]:
    """The code of each fenced python block that directly follows ``<!-- api-example: AREA -->``."""
    return [code for name, code in _EXAMPLE.findall(text) if name == area]


def readme_examples(area: str) -> list[str]:
    return api_examples(README.read_text(encoding="utf-8"), area)
