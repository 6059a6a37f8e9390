"""The Python snippets of README.md and of the documentation pages run as shown and print what
the page says, with another CPU's LAPACK kernels than the page's author had.

Every fenced ``python`` block of README.md and of every page under docs/ (``docs/**/*.md``,
whatever pages exist) runs in a fresh interpreter, in an empty folder, with the environment a
user has (float32, one CPU device: no ``XLA_FLAGS`` from the test set-up). When a snippet
prints, the page must show what it prints in a ``text`` block right after it (only blank lines
between the two); the test compares the two with doctest's rules (``...`` matches anything,
whitespace is normalised). So no claimed output can drift from the code.

Printed numbers must not depend on the reader's CPU. jaxlib's CPU LAPACK (the Cholesky, eigh,
LU and QR behind ``jnp.linalg`` and ``jax.scipy.linalg``) is SciPy's OpenBLAS, which picks its
kernels per CPU: an Intel Xeon gets the AVX-512 "SkylakeX" kernels, an AMD Zen or a laptop the
AVX2 "Haswell" ones, an older CPU the "Sandybridge" ones. They round differently, and an
ill-conditioned solve turns that into different printed digits. The pages' outputs are written
from a run on their author's machine, so the snippets run here with another CPU family's
kernels (:func:`snippet_coretype`): ``OPENBLAS_CORETYPE`` when the environment sets it (run the
suite with ``OPENBLAS_CORETYPE=Sandybridge`` to check that family), otherwise a family other
than this machine's. A page that matches is right on two CPUs; a number that is rounding-level
by nature is printed as a bound ("gap 4e-11 < 1e-9"), never as raw digits.

A block that cannot run in a test (it needs a GPU, a network or a dataset on disk) is marked
by an HTML comment on the line right above its fence, with the reason::

    <!-- not run in tests: needs a GPU -->

Such blocks must still compile, are reported as skipped with their reason, and stay rare
(at most ``MAX_NOT_RUN`` in all).
"""

from __future__ import annotations

import doctest
import functools
import os
import pathlib
import platform
import re
import subprocess
import sys
from typing import NamedTuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: the most blocks all pages together may mark as not run
MAX_NOT_RUN = 3

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_NOT_RUN = re.compile(r"^[ \t]*<!--\s*not run in tests:\s*(?P<reason>.*?)\s*-->[ \t]*$")
#: languages that look like Python but would escape this test
_PYTHON_LIKE = {"py", "python3", "pycon", "ipython", "ipython3", "py3"}


class Block(NamedTuple):
    lang: str
    body: str
    line: int  # 1-based line of the opening fence
    end: int  # 0-based index of the line after the closing fence
    indent: str
    note: str  # the last non-blank line above the fence


class Snippet(NamedTuple):
    line: int
    code: str
    expected: str | None
    not_run: str | None = None  # the reason given by a "not run in tests" marker


def fenced_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, indented ones (admonitions, tabs) included."""
    lines = text.split("\n")
    blocks = []
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m.group("indent"), m.group("fence")
        info = m.group("info").strip().strip("{}").split()
        lang = info[0].lstrip(".") if info else ""
        close = re.compile(rf"^{re.escape(indent)}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        body = [
            ln[len(indent) :] if ln.startswith(indent) else ln.lstrip() for ln in lines[i + 1 : j]
        ]
        above = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        blocks.append(
            Block(lang, "\n".join(body) + "\n" if body else "", i + 1, j + 1, indent, above)
        )
        i = j + 1
    return blocks


def page_snippets(text: str) -> list[Snippet]:
    """The ``python`` blocks of ``text``, each with the ``text`` block that follows it, if any."""
    lines = text.split("\n")
    blocks = fenced_blocks(text)
    snippets = []
    for k, block in enumerate(blocks):
        if block.lang != "python":
            continue
        expected = None
        if k + 1 < len(blocks):
            following = blocks[k + 1]
            between = lines[block.end : following.line - 1]
            if following.lang == "text" and not any(ln.strip() for ln in between):
                expected = following.body
        marker = _NOT_RUN.match(block.note)
        snippets.append(
            Snippet(block.line, block.body, expected, marker.group("reason") if marker else None)
        )
    return snippets


def _page_name(path: pathlib.Path) -> str:
    return path.relative_to(ROOT).as_posix()


SNIPPETS = {
    f"{_page_name(page)}:line{s.line}": s
    for page in PAGES
    for s in page_snippets(page.read_text(encoding="utf-8"))
}


@functools.cache
def detected_coretype() -> str | None:
    """The core type SciPy's OpenBLAS (jaxlib's LAPACK) picked here; None if it is not OpenBLAS."""
    import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS)
    from threadpoolctl import threadpool_info

    found = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
    scipy_own = [i for i in found if "scipy" in pathlib.Path(i.get("filepath", "")).parent.name]
    for info in scipy_own or found:
        return info.get("architecture")
    return None


def second_coretype() -> tuple[str | None, str]:
    """An ``OPENBLAS_CORETYPE`` of another CPU family than this one, and why (or why none).

    SkylakeX (an Intel Xeon's kernels), or Haswell (AMD Zen's, most laptops') where this CPU
    already gets SkylakeX's; None off x86-64 or when SciPy's LAPACK is not OpenBLAS.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None, f"the second CPU is emulated on x86-64 only, this is {platform.machine()}"
    detected = detected_coretype()
    if detected is None:
        return None, "SciPy's LAPACK, the one jaxlib calls, is not OpenBLAS here"
    if detected.lower() in ("skylakex", "cooperlake", "sapphirerapids"):
        return "Haswell", f"this CPU gets OpenBLAS's {detected} kernels"
    return "SkylakeX", f"this CPU gets OpenBLAS's {detected} kernels"


def snippet_coretype() -> tuple[str | None, str]:
    """The ``OPENBLAS_CORETYPE`` the snippets and notebooks run with, and why.

    The environment's when it sets one, otherwise :func:`second_coretype`.
    """
    chosen = os.environ.get("OPENBLAS_CORETYPE")
    if chosen:
        return chosen, "OPENBLAS_CORETYPE is set in the environment"
    coretype, why = second_coretype()
    if coretype is None:
        return None, f"this CPU's own kernels ({why})"
    return coretype, f"another CPU family's kernels: {why}"


def cpu_hint(coretype: str | None, why: str) -> str:
    """What a mismatch under ``coretype`` means, for a failure message."""
    if coretype is None:
        return ""
    return (
        f"\nIt ran with OPENBLAS_CORETYPE={coretype} ({why}). If it prints what the page says "
        "without OPENBLAS_CORETYPE, the printed number depends on the reader's CPU: choose a "
        "better-conditioned setting, or print a rounding-level number as a bound."
    )


def run_snippet(code: str, cwd: pathlib.Path, coretype: str | None = None):
    """Runs ``code`` in a fresh interpreter with a user's environment (and ``coretype``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    env["MPLBACKEND"] = "Agg"
    if coretype is not None:
        env["OPENBLAS_CORETYPE"] = coretype
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def _matches(expected: str, printed: str) -> bool:
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    return doctest.OutputChecker().check_output(expected, printed, flags)


def test_readme_has_python_snippets():
    readme = [key for key in SNIPPETS if key.startswith("README.md:")]
    assert len(readme) >= 4, "the README tour should show runnable Python snippets"


def test_block_parser_pairs_outputs_markers_and_indented_blocks():
    text = (
        "a\n```python\nprint(1)\n```\n\n```text\n1\n```\n```python\nx = 2\n```\ntext\n"
        "<!-- not run in tests: needs a GPU -->\n```python\nimport cupy\n```\n"
        '!!! note\n    ```python title="t.py"\n    print(2)\n    ```\n\n'
        "    ```text\n    2\n    ```\n"
        "````python\nprint('```')\n````\n```text\nno\n```\n"
    )
    assert page_snippets(text) == [
        Snippet(2, "print(1)\n", "1\n"),
        Snippet(9, "x = 2\n", None),
        Snippet(14, "import cupy\n", None, "needs a GPU"),
        Snippet(18, "print(2)\n", "2\n"),
        Snippet(25, "print('```')\n", "no\n"),
    ]


def test_pages_use_python_as_the_language_of_their_python_blocks():
    # a ```py or ```pycon block would escape this test: the pages use ```python
    odd = [
        f"{_page_name(page)} line {b.line}: ```{b.lang}"
        for page in PAGES
        for b in fenced_blocks(page.read_text(encoding="utf-8"))
        if b.lang.lower() in _PYTHON_LIKE
    ]
    assert not odd, "write these blocks as ```python so that they run in the tests:\n" + "\n".join(
        odd
    )


def test_blocks_not_run_are_rare_and_say_why():
    not_run = {key: s.not_run for key, s in SNIPPETS.items() if s.not_run is not None}
    assert all(not_run.values()), f"a 'not run in tests' marker gives no reason: {not_run}"
    assert len(not_run) <= MAX_NOT_RUN, (
        f"{len(not_run)} blocks are marked as not run (at most {MAX_NOT_RUN}): {not_run}"
    )


@pytest.mark.parametrize("key", list(SNIPPETS), ids=list(SNIPPETS))
def test_snippet_runs_and_prints_what_the_page_says(key, tmp_path):
    snippet = SNIPPETS[key]
    where = key.replace(":line", " line ")
    if snippet.not_run is not None:
        compile(snippet.code, where, "exec")  # a block that is not run still has to parse
        pytest.skip(f"{where} is marked 'not run in tests': {snippet.not_run}")
    coretype, why = snippet_coretype()
    result = run_snippet(snippet.code, tmp_path, coretype)
    assert result.returncode == 0, (
        f"{where} failed (OPENBLAS_CORETYPE={coretype}):\n{result.stderr[-4000:]}"
    )
    if snippet.expected is None:
        assert not result.stdout.strip(), (
            f"{where} prints, but the page shows no ```text block with its output right "
            f"after it; it printed:\n{result.stdout}"
        )
        return
    assert _matches(snippet.expected, result.stdout), (
        f"{where} printed something else than the page says.\npage:\n{snippet.expected}\n"
        f"printed:\n{result.stdout}{cpu_hint(coretype, why)}"
    )
