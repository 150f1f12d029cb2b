"""The document model shared by every page sonieval writes (the report, the leaderboard): blocks
(headings, paragraphs, bullet lists, tables, images) rendered to both Markdown and HTML, so the two
pages never drift apart, and the number formatting they share."""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["Document", "display_table", "fmt", "json_safe"]


def json_safe(v):
    """JSON-safe value: NaN/inf → None (the tables carry notes saying why)."""
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, Path):
        return str(v)
    return v


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            return "n/a"
        if v != 0 and abs(v) < 10 ** (-digits):
            return f"{float(v):.1e}"  # small p-values: 0.000 would read as "impossible"
        text = f"{float(v):.{digits}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"
    return str(v)


def display_table(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    out = df.copy()
    for c in out.columns:
        if c == "provenance":
            continue
        out[c] = [fmt(v, digits) for v in out[c]]
    return out.drop(columns=[c for c in ("provenance", "simulated") if c in out.columns])


_CODE_SPAN = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"\*\*(.+?)\*\*")
_EM = re.compile(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])")


def _inline_html(escaped: str, code_links: dict[str, str] | None = None) -> str:
    """Markdown's inline marks in already escaped HTML: `code`, **strong**, *emphasis* (not inside code);
    a code span whose text is a key of ``code_links`` becomes a link to its URL."""
    parts = _CODE_SPAN.split(escaped)  # odd positions: the insides of code spans
    for i, part in enumerate(parts):
        if i % 2:
            url = (code_links or {}).get(html.unescape(part))
            parts[i] = (
                f"<code>{part}</code>" if url is None else f'<a href="{html.escape(url)}"><code>{part}</code></a>'
            )
        else:
            parts[i] = _EM.sub(r"<em>\1</em>", _STRONG.sub(r"<strong>\1</strong>", part))
    return "".join(parts)


def _pipe_table(df: pd.DataFrame) -> str:
    """A compact Markdown pipe table of text cells (no padding: rows stay greppable, ``| a | b |``)."""

    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(df.columns), "|" + "---|" * len(df.columns)] + [line(r) for r in df.itertuples(index=False)])


class Document:
    """Blocks rendered to both Markdown and HTML, so the two pages never drift apart.

    ``markup=True``: the text carries Markdown's inline marks (`code`, **strong**, *emphasis*), which the
    HTML page renders too (off by default: the report's text is shown as written)."""

    def __init__(self, banner: str | None = None, *, markup: bool = False):
        self.blocks: list[tuple[str, object]] = []
        self.banner = banner  # shown in red at the top and the bottom of the HTML page (simulated data)
        self.markup = markup
        # with markup: code spans the HTML page links (text -> URL); the Markdown shows them as written
        self.code_links: dict[str, str] = {}

    def h(self, level: int, text: str):
        self.blocks.append(("h", (level, text)))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def bullets(self, items: list[str]):
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, df: pd.DataFrame, digits: int = 3, max_rows: int | None = 60, *, formatted: bool = False):
        """A table; ``formatted=True``: its cells are already text (shown as they are, every row unless
        ``max_rows``, as a compact pipe table in Markdown)."""
        if df is None or df.empty:
            self.p("(no rows)")
            return
        head = df if max_rows is None else df.head(max_rows)
        if formatted:
            self.blocks.append(("text_table", head.astype(str)))
        else:
            self.blocks.append(("table", display_table(head, digits)))
        if max_rows is not None and len(df) > max_rows:
            self.p(f"(first {max_rows} of {len(df)} rows; all rows in the CSV)")

    def image(self, rel: str, alt: str):
        self.blocks.append(("img", (rel, alt)))

    def links(self, items: list[tuple[str, str]]):
        """A bullet list of links: (text, url) each."""
        if items:
            self.blocks.append(("links", list(items)))

    def markdown(self) -> str:
        out = []
        for kind, v in self.blocks:
            if kind == "h":
                out.append("#" * v[0] + " " + v[1])
            elif kind == "p":
                out.append(v)
            elif kind == "ul":
                out.append("\n".join(f"- {x}" for x in v))
            elif kind == "table":
                out.append(v.to_markdown(index=False))
            elif kind == "text_table":
                out.append(_pipe_table(v))
            elif kind == "img":
                out.append(f"![{v[1]}]({v[0]})")
            elif kind == "links":
                out.append("\n".join(f"- [{label}]({url})" for label, url in v))
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        css = (
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;font-size:13px;margin:0.5em 0}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}"
            ".sim{background:#b00;color:#fff;padding:0.6em;font-weight:bold;font-size:1.2em}"
            "img{max-width:100%}.wide{overflow-x:auto;max-width:100%}"
            "th code{word-break:break-all}"  # long system ids as column heads wrap instead of widening the page
        )
        out = [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{css}</style></head><body>"
        ]
        if self.banner:
            out.append(f"<div class='sim'>{html.escape(self.banner)}</div>")
        text = (lambda t: _inline_html(html.escape(t), self.code_links)) if self.markup else html.escape
        for kind, v in self.blocks:
            if kind == "h":
                out.append(f"<h{v[0]}>{text(v[1])}</h{v[0]}>")
            elif kind == "p":
                out.append(f"<p>{text(v)}</p>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{text(x)}</li>" for x in v) + "</ul>")
            elif kind == "table":
                out.append(f"<div class='wide'>{v.to_html(index=False, escape=True, border=0)}</div>")
            elif kind == "text_table":
                out.append(f"<div class='wide'>{_html_text_table(v, text)}</div>")
            elif kind == "img":
                out.append(f"<p><img src='{html.escape(v[0])}' alt='{html.escape(v[1])}'></p>")
            elif kind == "links":
                items = "".join(f"<li><a href='{html.escape(u)}'>{html.escape(t)}</a></li>" for t, u in v)
                out.append(f"<ul>{items}</ul>")
        if self.banner:
            out.append(f"<div class='sim'>{html.escape(self.banner)}</div>")
        out.append("</body></html>")
        return "\n".join(out)


def _html_text_table(df: pd.DataFrame, text) -> str:
    head = "".join(f"<th>{text(str(c))}</th>" for c in df.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{text(str(c))}</td>" for c in r) + "</tr>" for r in df.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
