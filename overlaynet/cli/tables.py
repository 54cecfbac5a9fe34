"""Aligned text tables, as docker's tabwriter prints them (pure).

docker writes every table through Go's text/tabwriter with `NewWriter(out, 10, 1, 3, ' ', 0)`
(cli/command/formatter/formatter.go): a cell is its text plus 3 spaces, at least 10 wide; the
text after a line's last tab is not a cell and is never padded. `tabwrite` is that algorithm,
column blocks included, so `--format 'table …'` lines up exactly as docker's does.
"""

from __future__ import annotations

# docker's tabwriter settings: minimal cell width (padding included) and padding.
MIN_WIDTH = 10
PADDING = 3


def _format(
    lines: list[list[str]],
    line0: int,
    line1: int,
    widths: list[int],
    out: list[str],
    cell: tuple[int, int],
) -> None:
    """Go's tabwriter.format: a column block is a run of lines that have a cell in `column`."""
    column = len(widths)
    this = line0
    while this < line1:
        if column >= len(lines[this]) - 1:
            this += 1
            continue
        _write_lines(lines, line0, this, widths, out)
        line0 = this
        min_width, padding = cell
        width = min_width
        while this < line1 and column < len(lines[this]) - 1:
            width = max(width, len(lines[this][column]) + padding)
            this += 1
        widths.append(width)
        _format(lines, line0, this, widths, out, cell)
        widths.pop()
        line0 = this
    _write_lines(lines, line0, line1, widths, out)


def _write_lines(
    lines: list[list[str]], line0: int, line1: int, widths: list[int], out: list[str]
) -> None:
    for cells in lines[line0:line1]:
        text = [cell.ljust(widths[j]) if j < len(widths) else cell for j, cell in enumerate(cells)]
        out.append("".join(text))


def tabwrite(text: str, min_width: int = MIN_WIDTH, padding: int = PADDING) -> str:
    """`text` with its tab-separated cells aligned as docker's tabwriter aligns them."""
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    _format(lines, 0, len(lines), [], out, (min_width, padding))
    return "\n".join(out)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A header and rows through docker's tabwriter (lines right-stripped: no trailing blanks)."""
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells for {len(headers)} columns")
    text = "\n".join("\t".join(row) for row in [headers, *rows])
    return "\n".join(line.rstrip() for line in tabwrite(text).split("\n"))
