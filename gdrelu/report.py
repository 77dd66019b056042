"""A reproduction report: sections of text, tables and figures, as Markdown and as one
static HTML page with its figures embedded (it opens in a browser with nothing installed).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple


class Table(NamedTuple):
    """A table: column names and rows of cells (floats written to 4 significant digits,
    everything else as `str` gives it)."""

    header: tuple[str, ...]
    rows: list[tuple]


class Section(NamedTuple):
    """One experiment's part of the report. `figure` is a file name in the report's
    directory (or None); `settings` are the spec fields that define the experiment, as its
    runs got them (`ExperimentSpec.applied`)."""

    name: str
    title: str
    paragraphs: list[str]
    tables: list[Table]
    figure: str | None
    settings: dict[str, Any]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {**self._asdict(), "tables": [t._asdict() for t in self.tables]}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Section:
        tables = [
            Table(tuple(t["header"]), [tuple(r) for r in t["rows"]]) for t in values["tables"]
        ]
        return cls(**{**values, "tables": tables})


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(title: str, preamble: Sequence[str], sections: Sequence[Section]) -> str:
    """The report as Markdown, figures linked by file name."""
    lines = [f"# {title}", "", *(p + "\n" for p in preamble)]
    for s in sections:
        lines += [f"## {s.title}", "", *(p + "\n" for p in s.paragraphs)]
        if s.figure:
            lines += [f"![{s.title}]({s.figure})", ""]
        for t in s.tables:
            lines += ["| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
            lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in t.rows]
            lines.append("")
        settings = json.dumps(s.settings, sort_keys=True, default=str)
        lines += [f"Settings: `{settings}`", "", f"Time: {s.seconds:.1f} s", ""]
    return "\n".join(lines)


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
        for row in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_figure(directory: Path, name: str, alt: str) -> str:
    data = base64.b64encode((directory / name).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.2em .5em;"
    "text-align:right}img{max-width:100%}code{font-size:.85em;word-break:break-all}"
)


def html_page(title: str, preamble: Sequence[str], sections: Sequence[Section], directory: Path):
    """The report as one HTML page; figures (PNG files in `directory`) embedded."""
    parts = [f"<h1>{html.escape(title)}</h1>", *(f"<p>{html.escape(p)}</p>" for p in preamble)]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in s.paragraphs]
        if s.figure:
            parts.append(_html_figure(directory, s.figure, s.title))
        parts += [_html_table(t) for t in s.tables]
        settings = html.escape(json.dumps(s.settings, sort_keys=True, default=str))
        parts.append(f"<p>Settings: <code>{settings}</code></p><p>Time: {s.seconds:.1f} s</p>")
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
