"""Runs the notebooks and saves them with fresh outputs.

Usage, from the repository root, in the environment of the README::

    python notebooks/regenerate.py                  # every notebook
    python notebooks/regenerate.py quickstart egn   # some of them

Each notebook runs top to bottom in a fresh kernel, in a temporary folder (files it writes go
there), with the environment a user has: one CPU device, float32, inline plots. The test suite
(``tests/test_notebooks.py``) runs them the same way and fails when a committed notebook's
outputs differ from a fresh run's (text outputs, and the number of figures per cell).
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import nbformat
from nbclient import NotebookClient

HERE = pathlib.Path(__file__).resolve().parent
#: variables of a test or CI environment that a reader's kernel does not have
_NOT_A_USER_ENV = ("XLA_FLAGS", "JAX_ENABLE_X64", "MPLBACKEND")


def notebook_paths(names: list[str] | None = None) -> list[pathlib.Path]:
    """The notebooks of this folder, or those named (with or without ``.ipynb``)."""
    if not names:
        return sorted(HERE.glob("*.ipynb"))
    paths = []
    for name in names:
        path = HERE / (name if name.endswith(".ipynb") else f"{name}.ipynb")
        if not path.exists():
            raise SystemExit(f"regenerate.py: no notebook {path.name} in {HERE}")
        paths.append(path)
    return paths


@contextmanager
def user_environment(extra: dict[str, str] | None = None) -> Iterator[None]:
    """Temporarily removes the test-only variables (and sets ``extra``), for the kernel to start
    as a user's would."""
    names = set(_NOT_A_USER_ENV) | set(extra or {})
    saved = {k: os.environ.pop(k) for k in names if k in os.environ}
    os.environ.update(extra or {})
    try:
        yield
    finally:
        for k in extra or {}:
            os.environ.pop(k, None)
        os.environ.update(saved)


def execute(
    path: pathlib.Path, *, timeout: int = 600, env: dict[str, str] | None = None
) -> tuple[nbformat.NotebookNode, float]:
    """Runs the notebook at ``path`` in a fresh kernel; returns it with outputs, and seconds.

    ``env`` adds variables to the kernel's environment (the tests set ``OPENBLAS_CORETYPE``
    to run a notebook on another CPU's LAPACK kernels).
    """
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp, user_environment(env):
        client = NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            record_timing=False,
            resources={"metadata": {"path": tmp}},
        )
        start = time.perf_counter()
        client.execute()
        elapsed = time.perf_counter() - start
    return notebook, elapsed


def output_summary(notebook: nbformat.NotebookNode) -> list[list[tuple[str, str]]]:
    """What a reader sees of each code cell: its printed text, results and figure count.

    Progress bars and warnings (the stderr stream) and the bytes of the images are left out:
    they change from run to run or from one matplotlib version to the next.
    """
    summary = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        seen: list[tuple[str, str]] = []
        figures = 0
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "stream" and out.get("name") == "stdout":
                text = out.get("text", "")
                if seen and seen[-1][0] == "stdout":  # the kernel splits printed text into
                    seen[-1] = ("stdout", seen[-1][1] + text)  # chunks as timing allows
                else:
                    seen.append(("stdout", text))
            elif kind in ("execute_result", "display_data"):
                data = out.get("data", {})
                if "image/png" in data:
                    figures += 1
                elif "text/plain" in data:
                    seen.append(("result", data["text/plain"]))
            elif kind == "error":
                seen.append(("error", f"{out.get('ename')}: {out.get('evalue')}"))
        seen.append(("figures", str(figures)))
        summary.append(seen)
    return summary


def main(argv: list[str]) -> int:
    for path in notebook_paths(argv):
        notebook, elapsed = execute(path)
        nbformat.write(notebook, path)
        print(f"{path.name}: ran in {elapsed:.0f} s, saved with its outputs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
