"""The files the commands write: CSV tables, JSON documents, and a table as both.

Every command of :mod:`inna_jax.reproduce` writes its outputs through these functions, so
that a CSV file is always :func:`inna_jax._csv.write_rows`'s (a header, one column per key)
and a JSON file ``json.dumps(..., indent=2)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inna_jax._csv import write_rows

#: ``rows`` as CSV (columns: ``fields``, default every key in order of appearance): the
#: package's one CSV writer, under the name the commands use
write_csv = write_rows


def write_json(path: str | Path, document: Any, *, newline: bool = True, default=None) -> None:
    """``document`` as indented JSON (``newline``: end the file with one; ``default``: as in
    ``json.dumps``, for values JSON does not know)."""
    text = json.dumps(document, indent=2, default=default)
    Path(path).write_text(text + ("\n" if newline else ""))


def write_table(out: Path, stem: str, rows: Sequence[Mapping]) -> None:
    """``stem.csv`` and ``stem.json`` in ``out``: one table, two formats."""
    write_csv(out / f"{stem}.csv", rows)
    write_json(out / f"{stem}.json", rows)
