"""The documentation holds together: README.md stays short, every relative link of README.md and docs/*.md
points to a file (and a heading) that exists, every ``docs/….md`` reference in the code does too, and every
marked API example is run by some test."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from harness.readme import MARKER, ROOT, api_examples, documentation_files

README_MAX_LINES = 260
_FENCE = re.compile(r"^(```|~~~)")
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ID = re.compile(r"""<a\s+(?:name|id)=["']([^"']+)["']""")
# docs/PAGE.md or docs/PAGE.md#anchor, as docstrings and messages cite a page
_CODE_REF = re.compile(r"docs/([\w.-]+\.md)(#[\w-]+)?")
_KEPT = {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "Pc"}


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation and symbols dropped (hyphens and
    underscores kept), spaces made hyphens (github-slugger's rule; by hand because no kept Python library
    implements it)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "").lower()
    kept = "".join(ch for ch in text if ch in " -" or unicodedata.category(ch) in _KEPT)
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a page offers: its headings' slugs (the n-th repeat gets ``-n``) and explicit ids."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        found.update(_HTML_ID.findall(line))
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link and image outside code."""
    out, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            out.extend((number, target) for target in _LINK.findall(_CODE_SPAN.sub("", line)))
    return out


def broken(source: Path, target: str) -> str | None:
    """Why a relative link from ``source`` does not resolve; None when it does (or is not relative)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
        return None
    file_part, _, anchor = target.partition("#")
    dest = (source.parent / file_part).resolve() if file_part else source
    if not dest.exists():
        return f"no file {file_part}"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"no heading #{anchor} in {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}"
    return None


def test_slug_follows_github():
    assert slug("Job 1: KAD leaderboards") == "job-1-kad-leaderboards"
    assert slug("The weight-free `mel` codec") == "the-weight-free-mel-codec"
    assert slug("Measured (`bench/bench_gallery.py`)") == "measured-benchbench_gallerypy"
    assert slug("Every mark, in every model") == "every-mark-in-every-model"
    assert slug("R² and 12 × 101") == "r-and-12--101"


def test_a_broken_link_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A part\n\n[ok](#a-part) [bad](#nowhere) [gone](missing.md)\n`[code](x.md)`\n")
    problems = [broken(page, target) for _, target in links(page)]  # the link inside code is no link
    assert problems == [None, f"no heading #nowhere in {page}", "no file missing.md"]


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; move details into docs/ (limit {README_MAX_LINES})"


@pytest.mark.parametrize("path", documentation_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path):
    problems = [f"{path.name}:{n}: {target}: {why}" for n, target in links(path) if (why := broken(path, target))]
    assert not problems, "\n".join(problems)


def test_the_code_cites_pages_and_sections_that_exist():
    """Docstrings and messages point to docs/PAGE.md#section (DESIGN.md, a file outside the repository, is gone)."""
    problems = []
    for folder in ("sonieval", "tests", "scripts", "bench", "study_app", "protocols"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".yaml", ".js") or "__pycache__" in path.parts or path == Path(__file__):
                continue
            text = path.read_text(encoding="utf-8")
            if "DESIGN.md" in text:
                problems.append(f"{path.relative_to(ROOT)}: cites DESIGN.md (use docs/architecture.md)")
            for page, anchor in _CODE_REF.findall(text):
                why = broken(ROOT / "docs" / "index.md", page + anchor)
                if why:
                    problems.append(f"{path.relative_to(ROOT)}: docs/{page}{anchor}: {why}")
    assert not problems, "\n".join(problems)


def test_every_marked_example_is_a_python_block_that_a_test_runs():
    tests = [p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("test_*.py")]
    problems = []
    for path in documentation_files():
        text = path.read_text(encoding="utf-8")
        for area in sorted(set(MARKER.findall(text))):
            if len(api_examples(text, area)) != len(re.findall(rf"^<!-- api-example: {area} -->$", text, re.M)):
                problems.append(f"{path.name}: a '{area}' marker not directly followed by a ```python block")
            if not any(
                f'"{area}"' in t and re.search(r"\b(api_examples|documented_examples|readme_examples)\(", t)
                for t in tests
            ):
                problems.append(f"{path.name}: no test runs the '{area}' examples")
    assert not problems, "\n".join(problems)
