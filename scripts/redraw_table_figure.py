"""Redraw a P(stuck) figure with today's `gdrelu.plot` from a results table in markdown.

The rows `| n | p [low, high] | ... |` under a header `| n | Δ = 0 | Δ = 0.01 | ... |`
(as in benchmarks/results/gpu-h100-2026-11-27.md) are read back as GD cells counted by
the certificate, and drawn as `gdrelu run` draws its own (three decimals, as the table
holds them: a redraw of published numbers, not a new run).

    PYTHONPATH=. python scripts/redraw_table_figure.py TABLE.md OUT.png [--setting LINE]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from gdrelu import plot

ROW = re.compile(r"^\|\s*(\d+)\s*\|(.+)\|\s*$")
CELL = re.compile(r"([0-9.]+) \[([0-9.]+), ([0-9.]+)\]")


def cells_of(text: str) -> list[dict]:
    """The cells of the first table whose header names Δ columns; ValueError names what
    is missing or unreadable."""
    lines = [line.strip() for line in text.splitlines()]
    start = next(
        (i for i, line in enumerate(lines) if line.startswith("| n |") and "Δ" in line), None
    )
    if start is None:
        raise ValueError("no table with a header '| n | Δ = ... |'")
    deltas = [float(h.split("=")[1]) for h in lines[start].strip("|").split("|")[1:]]
    cells = []
    for line in lines[start + 2 :]:
        match = ROW.match(line)
        if not match:
            break
        values = [CELL.search(part) for part in match.group(2).split("|")]
        if len(values) != len(deltas) or None in values:
            raise ValueError(f"row {line!r}: not one 'p [low, high]' per Δ column")
        for delta, value in zip(deltas, values, strict=True):
            p, low, high = (float(v) for v in value.groups())
            cells.append({"width": int(match.group(1)), "delta": delta, "p_stuck": p,
                          "ci95": [low, high], "stuck_rule": "certificate"})  # fmt: skip
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--setting", default="", help="the title's setting line(s)")
    args = parser.parse_args()
    try:
        cells = cells_of(args.table.read_text())
    except ValueError as err:
        parser.exit(2, f"{args.table}: {err}\n")
    plot.failure_probability_plot(cells, args.out, args.setting.replace("\\n", "\n"))
    print(f"{len(cells)} cells drawn into {args.out}")


if __name__ == "__main__":
    main()
