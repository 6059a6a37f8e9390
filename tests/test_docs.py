"""Documentation checks: every public name is documented, and every docstring example runs."""

import importlib
import inspect
import os
import pathlib
import subprocess
import sys

import pytest

import inna_jax

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_snippets import cpu_hint, snippet_coretype  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
PUBLIC_MODULES = [
    "inna_jax",
    "inna_jax.dynamics",
    "inna_jax.train",
    "inna_jax.data",
    "inna_jax.models",
    "inna_jax.rl",
]


def _public_objects():
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue  # a subpackage: its own names are checked under its module
            yield f"{module_name}.{name}", obj


PUBLIC = dict(_public_objects())


def test_every_public_module_has_all_and_a_docstring():
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        assert module.__doc__ and module.__doc__.strip(), module_name
        assert module.__all__, module_name


def _is_record(obj):
    """A NamedTuple or dataclass that only holds results (a solve's output, a fit's history)."""
    return inspect.isclass(obj) and (
        hasattr(obj, "_fields") or hasattr(obj, "__dataclass_fields__")
    )


CALLABLES = sorted(n for n, o in PUBLIC.items() if callable(o))


@pytest.mark.parametrize("name", CALLABLES)
def test_public_name_has_docstring_with_example(name):
    obj = PUBLIC[name]
    doc = inspect.getdoc(obj)
    assert doc and doc != inspect.getdoc(type(obj)), f"{name} has no docstring of its own"
    top_level = name.count(".") == 1
    if top_level or not _is_record(obj):
        assert ">>>" in doc, f"{name}'s docstring has no runnable >>> example"


@pytest.mark.parametrize("name", [n for n in CALLABLES if n.count(".") == 1])
def test_top_level_names_have_math_and_references(name):
    doc = inspect.getdoc(PUBLIC[name])
    assert "math" in doc, f"{name}'s docstring shows no math (:math: or .. math::)"
    assert "References" in doc, f"{name}'s docstring has no References section"


def test_top_level_exports_are_exactly_all():
    exported = {n for n in dir(inna_jax) if not n.startswith("_")}
    assert set(inna_jax.__all__) <= exported


#: the package's modules in groups of similar doctest time, so that xdist spreads them
DOCTEST_GROUPS = {
    "optimizers": sorted(str(p.relative_to(ROOT)) for p in (ROOT / "inna_jax").glob("*.py"))
    + ["inna_jax/inertial"],
    "gauss-newton": ["inna_jax/gauss_newton"],
    "dynamics": ["inna_jax/dynamics"],
    "train-data-models": ["inna_jax/train", "inna_jax/data", "inna_jax/models"],
    "rl": ["inna_jax/rl"],
    "reproduce": ["inna_jax/reproduce"],
}


def test_doctest_groups_cover_the_package():
    covered = {pathlib.Path(entry).parts[1] for group in DOCTEST_GROUPS.values() for entry in group}
    packages = {p.parent.name for p in (ROOT / "inna_jax").glob("*/__init__.py")}
    files = {p.name for p in (ROOT / "inna_jax").glob("*.py")}
    assert packages | files <= covered, sorted((packages | files) - covered)


@pytest.mark.parametrize("group", list(DOCTEST_GROUPS))
def test_docstring_examples_run(group):
    """Runs the ``>>>`` examples of a part of the package, in a fresh process as a user would
    (float32 defaults, one CPU device), with pytest's doctest collector, and with another CPU
    family's LAPACK kernels, as the pages' snippets (tests/test_snippets.py)."""
    coretype, why = snippet_coretype()
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_ENABLE_X64")}
    env["MPLBACKEND"] = "Agg"
    if coretype is not None:
        env["OPENBLAS_CORETYPE"] = coretype
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--doctest-modules",
            *DOCTEST_GROUPS[group],
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "-o",
            "addopts=",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        result.stdout[-6000:] + result.stderr[-2000:] + cpu_hint(coretype, why)
    )
    assert " passed" in result.stdout


# The maintainers' notes live outside the repository, so no shipped file may cite them. The
# searched names are built from pieces so that this file does not match itself.
_INTERNAL_NOTES = ["REFERENCE" + ".md", "REFERENCE" + " §", ".." + "/shared", "DESIGN" + ".md"]
_SEARCHED = ["inna_jax", "tests", "notebooks", "benchmarks", "experiments", "docs", "README.md"]


def test_no_file_cites_the_maintainers_internal_notes():
    offenders = []
    for entry in _SEARCHED:
        path = ROOT / entry
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if file.suffix not in {".py", ".md", ".ipynb", ".txt", ".rst", ".toml", ".cfg"}:
                continue
            text = file.read_text(encoding="utf-8", errors="replace")
            for number, line in enumerate(text.splitlines(), 1):
                hits = [name for name in _INTERNAL_NOTES if name in line]
                if hits:
                    offenders.append(f"{file.relative_to(ROOT)}:{number}: {hits[0]}")
    assert not offenders, "files cite notes that do not ship:\n" + "\n".join(offenders)
