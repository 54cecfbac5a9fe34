"""docker's tabwriter: cells padded by 3 to at least 10, the last cell never padded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from overlaynet.cli.tables import tabwrite

CELL = st.text(alphabet="abcdefghij -_.:", max_size=16)


def test_short_cells_get_the_minimum_width_and_long_ones_three_spaces() -> None:
    assert tabwrite("ID\tNAME\nabc\tx") == "ID        NAME\nabc       x"
    assert tabwrite("longer-than-ten\tx") == "longer-than-ten   x"


def test_a_line_without_a_cell_in_a_column_ends_its_block() -> None:
    # Go's column blocks: the middle line has no tab, so lines 1 and 3 align separately.
    assert tabwrite("a-long-cell\tx\nplain\nb\ty") == "a-long-cell   x\nplain\nb         y"


def test_a_trailing_newline_is_kept() -> None:
    assert tabwrite("a\tb\n") == "a         b\n"


@given(st.lists(st.lists(CELL, min_size=3, max_size=3), min_size=1, max_size=6))
def test_every_column_starts_at_the_same_offset_on_every_line(rows: list[list[str]]) -> None:
    lines = tabwrite("\n".join("\t".join(r) for r in rows)).split("\n")
    widths = [max(10, max(len(r[c]) for r in rows) + 3) for c in range(2)]
    for row, line in zip(rows, lines, strict=True):
        assert line == row[0].ljust(widths[0]) + row[1].ljust(widths[1]) + row[2]
