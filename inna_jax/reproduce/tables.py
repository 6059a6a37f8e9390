"""The fixed-width text tables that the commands print: a header, a rule, one line a row.

A table is a list of columns ``(title, layout, spec)``: ``layout`` aligns and pads both the
title and the cells (``"<12"``: left in 12 characters, ``">9"``: right in 9), and ``spec``
formats a cell's value first (``".4f"``, ``"d"``, ``"g"``; ``""`` for a value as it is).
A cell ``x`` of that column reads ``f"{format(x, spec):{layout}}"``, which is what
``f"{x:{layout}{spec}}"`` writes for a number, so that each command keeps the table it
printed before it used this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

#: One column: its title, its layout (alignment and width) and its value's format spec.
Column = tuple[str, str, str]


def format_table(
    columns: Sequence[Column], rows: Iterable[Sequence[Any]], *, sep: str = " "
) -> str:
    """The table: the titles, a rule of ``-`` as long as them, then one line per row.

    Args:
        columns: ``(title, layout, spec)`` per column, in order.
        rows: the cells of each row, one per column.
        sep: what stands between two columns.

    Example:
        >>> from inna_jax.reproduce.tables import format_table
        >>> print(format_table([("method", "<8", ""), ("loss", ">8", ".3f")],
        ...                    [("SGD", 0.1234), ("Adam", 0.05)]))
        method       loss
        -----------------
        SGD         0.123
        Adam        0.050
    """
    head = sep.join(f"{title:{layout}}" for title, layout, _ in columns)
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = zip(row, columns, strict=True)
        lines.append(sep.join(f"{format(x, spec):{layout}}" for x, (_, layout, spec) in cells))
    return "\n".join(lines)


def or_dash(value: Any, spec: str) -> str:
    """``value`` formatted by ``spec``, or ``"-"`` for ``None`` (a value never reached).

    Example:
        >>> from inna_jax.reproduce.tables import or_dash
        >>> or_dash(None, ".2f"), or_dash(1.5, ".2f")
        ('-', '1.50')
    """
    return "-" if value is None else format(value, spec)
