"""The README's Python snippets run as shown, each on its own, and print what the README says.

Every fenced ``python`` block of README.md runs in a fresh interpreter, in an empty folder, with
the environment a user has (float32, one CPU device: no ``XLA_FLAGS`` from the test set-up).
When a snippet prints, the README must show what it prints in a ``text`` block right after it
(only blank lines between the two); the test compares the two with doctest's rules (``...``
matches anything, whitespace is normalised). So no claimed output can drift from the code.
"""

from __future__ import annotations

import doctest
import os
import pathlib
import re
import subprocess
import sys
from typing import NamedTuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
_FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


class Snippet(NamedTuple):
    line: int
    code: str
    expected: str | None


def readme_snippets(text: str) -> list[Snippet]:
    """The ``python`` blocks of ``text``, each with the ``text`` block that follows it, if any."""
    blocks = [
        (m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1, m.start(), m.end())
        for m in _FENCE.finditer(text)
    ]
    snippets = []
    for i, (lang, body, line, _, end) in enumerate(blocks):
        if lang != "python":
            continue
        expected = None
        if i + 1 < len(blocks):
            next_lang, next_body, _, next_start, _ = blocks[i + 1]
            if next_lang == "text" and not text[end:next_start].strip():
                expected = next_body
        snippets.append(Snippet(line, body, expected))
    return snippets


SNIPPETS = readme_snippets(README.read_text(encoding="utf-8"))


def test_readme_has_python_snippets():
    assert len(SNIPPETS) >= 4, "the README tour should show runnable Python snippets"


def test_snippet_parser_pairs_outputs():
    text = "a\n```python\nprint(1)\n```\n\n```text\n1\n```\n```python\nx = 2\n```\ntext\n"
    assert readme_snippets(text) == [Snippet(2, "print(1)\n", "1\n"), Snippet(9, "x = 2\n", None)]


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"line{s.line}" for s in SNIPPETS])
def test_readme_snippet_runs_and_prints_what_the_readme_says(snippet, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    env["MPLBACKEND"] = "Agg"
    result = subprocess.run(
        [sys.executable, "-c", snippet.code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    where = f"README.md line {snippet.line}"
    assert result.returncode == 0, f"{where} failed:\n{result.stderr[-4000:]}"
    if snippet.expected is None:
        assert not result.stdout.strip(), (
            f"{where} prints, but the README shows no ```text block with its output right "
            f"after it; it printed:\n{result.stdout}"
        )
        return
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    assert checker.check_output(snippet.expected, result.stdout, flags), (
        f"{where} printed something else than the README says.\nREADME:\n{snippet.expected}\n"
        f"printed:\n{result.stdout}"
    )
