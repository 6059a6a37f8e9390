"""Griffe extension: the reST parts of inna_jax's docstrings, as Markdown for mkdocstrings.

The docstrings are Google style (``Args:``, ``Returns:``, ...) with Sphinx markup inside:
``:math:`...```, ``.. math::`` blocks, ``:func:`...``` (and ``:class:``, ``:mod:``, ...)
references and reST simple tables. mkdocstrings renders docstring text as Markdown, so this
extension rewrites, at build time only (the source files are not touched):

- ``:math:`x``` -> ``$x$`` and ``.. math::`` blocks -> ``$$ ... $$`` (``pymdownx.arithmatex``,
  rendered by the vendored KaTeX); a block with ``&`` or ``\\`` is wrapped in ``aligned``, as
  Sphinx does;
- ``:func:`name```, ``:class:`~a.b```, ... -> an optional cross-reference (a link where the
  target is documented on the site, plain code elsewhere), resolved like Python would from
  the docstring's module;
- reST simple tables -> Markdown tables;
- ``Example:`` -> ``Examples:``, so that griffe reads the ``>>>`` lines as a doctest.

Doctest lines (``>>>``, ``...`` and their output) are left alone.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(math|func|class|meth|attr|data|mod|obj|exc|const):`((?:[^`\\]|\\.)+?)`", re.S
)
_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
_TABLE_BORDER = re.compile(r"^(\s*)(=+)( +=+)+\s*$")
_EXAMPLE_HEADER = re.compile(r"^(\s*)Example:\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """The lines from ``start`` that are blank or indented more than ``indent``."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end], end


def _dedent(lines: list[str]) -> list[str]:
    cut = min((_indent(line) for line in lines if line.strip()), default=0)
    return [line[cut:] for line in lines]


def _math_block(pad: str, tex_lines: list[str]) -> list[str]:
    tex_lines = [line.rstrip() for line in tex_lines if line.strip()]
    tex = "\n".join(tex_lines)
    if "&" in tex or "\\\\" in tex:
        tex_lines = ["\\begin{aligned}", *tex_lines, "\\end{aligned}"]
    return ["", pad + "$$", *(pad + line for line in tex_lines), pad + "$$", ""]


def _table(lines: list[str], start: int) -> tuple[list[str], int] | None:
    """A reST simple table starting at ``lines[start]`` as Markdown lines, and the next index."""
    border = lines[start]
    pad = border[: _indent(border)]
    spans = [m.span() for m in re.finditer(r"=+", border)]
    borders = [start]
    i = start + 1
    while i < len(lines) and len(borders) < 3:
        if _TABLE_BORDER.match(lines[i]) and lines[i].strip() == border.strip():
            borders.append(i)
        elif not lines[i].strip():
            return None
        i += 1
    if len(borders) != 3:
        return None

    def cells(line: str) -> list[str]:
        out = []
        for k, (a, _) in enumerate(spans):
            b = spans[k + 1][0] if k + 1 < len(spans) else len(line)
            out.append(line[a:b].strip())
        return out

    def rows(first: int, last: int) -> list[list[str]]:
        result: list[list[str]] = []
        for line in lines[first:last]:
            row = cells(line)
            if result and not row[0]:  # continuation line
                result[-1] = [f"{p} {q}".strip() for p, q in zip(result[-1], row, strict=True)]
            else:
                result.append(row)
        return result

    head = rows(borders[0] + 1, borders[1])
    body = rows(borders[1] + 1, borders[2])

    def md(row: list[str]) -> str:
        return pad + "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    out = ["", *(md(r) for r in head), pad + "|" + "---|" * len(spans), *(md(r) for r in body), ""]
    return out, borders[2] + 1


def _blocks(text: str) -> tuple[list[str], list[bool]]:
    """Block-level conversion; returns the lines and which of them inline roles may touch."""
    lines = text.splitlines()
    out: list[str] = []
    editable: list[bool] = []
    i = 0
    in_doctest = False
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith(">>>"):
            in_doctest = True
        elif not stripped:
            in_doctest = False
        if in_doctest:
            out.append(line)
            editable.append(False)
            i += 1
            continue
        if m := _EXAMPLE_HEADER.match(line):
            out.append(f"{m.group(1)}Examples:")
            editable.append(False)
            i += 1
            continue
        if m := _DIRECTIVE.match(line):
            body, i = _block(lines, i + 1, _indent(line))
            tex = ([m.group(2)] if m.group(2).strip() else []) + _dedent(body)
            new = _math_block(m.group(1), tex)
            out += new
            editable += [False] * len(new)
            continue
        if _TABLE_BORDER.match(line) and (table := _table(lines, i)) is not None:
            new, i = table
            out += new
            editable += [True] * len(new)
            continue
        out.append(line)
        editable.append(True)
        i += 1
    return out, editable


class RstRoles(griffe.Extension):
    """Rewrites every docstring of a loaded package once, when the package is complete."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        self._collection = loader.modules_collection
        self._walk(pkg, set())

    def _walk(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = self.convert(obj.docstring.value, obj)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, seen)

    def _lookup(self, path: str) -> griffe.Object | griffe.Alias | None:
        try:
            return self._collection.get_member(path)
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None

    def resolve(self, name: str, obj: griffe.Object) -> str:
        """The full path that ``name`` means in ``obj``'s docstring (itself when not found)."""
        name = name.strip().rstrip("()").lstrip(".")
        module = obj if obj.is_module else obj.module
        scopes = []
        if obj.is_class:
            scopes.append(obj.path)
        if obj.parent is not None and obj.parent.is_class:
            scopes.append(obj.parent.path)
        scopes += [module.path, module.path.rsplit(".", 1)[0], "inna_jax"]
        candidates = [name] if name.startswith("inna_jax") else []
        candidates += [f"{scope}.{name}" for scope in scopes]
        for candidate in candidates:
            found = self._lookup(candidate)
            if found is None:
                continue
            if found.is_alias:
                try:
                    return found.final_target.path
                except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                    return found.target_path
            return found.path
        return name

    def _role(self, match: re.Match, obj: griffe.Object) -> str:
        role, content = match.group(1), match.group(2)
        if role == "math":
            tex = " ".join(part.strip() for part in content.split("\n")).strip()
            return f"${tex}$"
        content = " ".join(content.split())
        if m := re.fullmatch(r"(.+?)\s*<(.+)>", content):
            title, target = m.group(1), m.group(2)
        else:
            target = content.lstrip("~")
            title = target.rsplit(".", 1)[-1] if content.startswith("~") else target
        identifier = self.resolve(target, obj)
        return (
            f'<autoref identifier="{html.escape(identifier)}" optional>'
            f"<code>{html.escape(title)}</code></autoref>"
        )

    def convert(self, text: str, obj: griffe.Object) -> str:
        lines, editable = _blocks(text)
        out: list[str] = []
        run: list[str] = []
        for line, ok in zip(lines, editable, strict=True):
            if ok:
                run.append(line)
                continue
            if run:
                out.append(_ROLE.sub(lambda m: self._role(m, obj), "\n".join(run)))
                run = []
            out.append(line)
        if run:
            out.append(_ROLE.sub(lambda m: self._role(m, obj), "\n".join(run)))
        return "\n".join(out)
