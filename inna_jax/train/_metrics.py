"""The metrics files of a call with ``out_dir``: ``metrics.json`` and ``metrics.csv``.

For one run, its history rows; for a group, one entry per run (its index, seed and
hyperparameters, and its history) and one CSV row per run and evaluated epoch. They are
rewritten after every evaluation, by the first process only.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax

from inna_jax import _csv


def write_metrics(out_dir: Path, histories: list[list[dict]], runs: list[dict] | None) -> None:
    """``metrics.json``/``metrics.csv``: one run's rows, or a group's with its run columns."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if runs is None:
        (out_dir / "metrics.json").write_text(json.dumps(histories[0], indent=2) + "\n")
        _csv.write_rows(out_dir / "metrics.csv", histories[0])
        return
    doc = [{**info, "history": hist} for info, hist in zip(runs, histories, strict=True)]
    (out_dir / "metrics.json").write_text(json.dumps(doc, indent=2) + "\n")
    rows = [
        {"run": info["run"], "seed": info["seed"], **info["hyperparams"], **row}
        for info, hist in zip(runs, histories, strict=True)
        for row in hist
    ]
    _csv.write_rows(out_dir / "metrics.csv", rows)


class MetricsFiles:
    """Where (if anywhere) the histories are written, and the runs' columns."""

    def __init__(self, out_dir, run_info: list[dict], group: bool):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.run_info = run_info if group else None
        self.is_main = jax.process_index() == 0

    def write(self, histories: list[list[dict]]) -> None:
        """(Re)writes the files with ``histories`` (nothing without ``out_dir``)."""
        if self.out_dir is not None and self.is_main:
            write_metrics(self.out_dir, histories, self.run_info)
