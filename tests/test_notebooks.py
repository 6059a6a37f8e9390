"""Executes every notebook in notebooks/ as a user would, and checks its committed outputs.

A notebook is committed with its outputs (``python notebooks/regenerate.py``), so a reader sees
the results and plots without running it. Each one is run here in a fresh kernel; the test
fails when it errors, takes over two minutes, or when what a reader sees in the committed file
(printed text, results, number of figures per cell) differs from the fresh run: outputs that
are missing or stale.

What a notebook prints must not depend on the reader's CPU: the committed outputs come from the
author's machine, and the fresh run here uses another CPU family's LAPACK kernels
(``OPENBLAS_CORETYPE``, chosen as for the pages' snippets, see tests/test_snippets.py); a number
that is rounding-level by nature is printed as a bound.
"""

import importlib.util
import pathlib
import sys

import nbformat
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_snippets import cpu_hint, snippet_coretype  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("regenerate", ROOT / "notebooks" / "regenerate.py")
regenerate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regenerate)

NOTEBOOKS = regenerate.notebook_paths()


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_its_committed_outputs_are_fresh(path):
    committed = nbformat.read(path, as_version=4)
    coretype, why = snippet_coretype()
    env = {} if coretype is None else {"OPENBLAS_CORETYPE": coretype}
    fresh, elapsed = regenerate.execute(path, timeout=300, env=env)
    assert elapsed < 120, f"{path.name} took {elapsed:.0f} s, over the 2-minute budget"
    last = committed.cells[-1]
    assert last.cell_type == "markdown" and "conclusion" in last.source.lower(), (
        f"{path.name} must end with a short markdown conclusion of what it showed"
    )
    old, new = regenerate.output_summary(committed), regenerate.output_summary(fresh)
    hint = f"run `python notebooks/regenerate.py {path.stem}` and commit the notebook"
    assert any(any(kind != "figures" for kind, _ in cell) for cell in old), (
        f"{path.name} is committed without outputs; {hint}"
    )
    for i, (a, b) in enumerate(zip(old, new, strict=True)):
        assert a == b, (
            f"{path.name}, code cell {i + 1}: the committed outputs are stale; {hint}.\n"
            f"committed: {a}\nfresh:     {b}{cpu_hint(coretype, why)}"
        )
