"""Aligned text tables, as docker's tabwriter prints them."""

from __future__ import annotations


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain aligned columns, three spaces apart, as docker's tabwriter prints them."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)
