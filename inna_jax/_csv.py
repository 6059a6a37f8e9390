"""One CSV writer for the package: rows of dicts, one column per key in order of appearance.

Used by :mod:`inna_jax.train` (``metrics.csv``) and by the commands of
:mod:`inna_jax.reproduce` (their tables and curves), so that every CSV file of the package is
written the same way (``csv.DictWriter``, a header, ``""`` for a key a row lacks).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path


def columns(rows: Iterable[Mapping]) -> list[str]:
    """The keys of ``rows``, each once, in order of first appearance."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return list(keys)


def write_rows(
    path: str | Path, rows: Sequence[Mapping], fields: Sequence[str] | None = None
) -> None:
    """Writes ``rows`` to ``path`` as CSV with a header.

    Args:
        path: the file, (over)written.
        rows: one mapping per row.
        fields: the columns in order (default: :func:`columns` of ``rows``); a row without
            one of them gets ``""`` there.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> write_rows(path, [{"a": 1}, {"a": 2, "b": 3}])
        >>> path.read_text().splitlines()
        ['a,b', '1,', '2,3']
    """
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields or columns(rows)), restval="")
        writer.writeheader()
        writer.writerows(rows)
