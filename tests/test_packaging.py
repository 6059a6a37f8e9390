"""The package's metadata and its optional extras, without network.

The full check (build the wheel and sdist, ``twine check``, install the wheel alone in a fresh
venv and use it there) needs pip's index, so it is a CI step: ``.ci/core_check.py``, run by
``.ci/run``. Here, the extras are removed from a child interpreter instead
(``sys.modules[name] = None`` makes ``import name`` fail as if it were not installed).
"""

import importlib.metadata
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import inna_jax
from inna_jax import _extras

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
# every distribution that an extra adds, as the modules they provide
EXTRA_MODULES = sorted({m.split(".")[0] for deps in _extras.EXTRAS.values() for m in deps.values()})


def _name(requirement: str) -> str:
    """The distribution's name in a requirement such as ``"flax>=0.12"``."""
    for stop in "<>=!~[; ":
        requirement = requirement.split(stop)[0]
    return requirement.lower()


def _expand(extra: str) -> set[str]:
    """The distributions of an extra in pyproject.toml, with ``inna_jax[...]`` expanded."""
    names = set()
    for requirement in PROJECT["optional-dependencies"][extra]:
        if _name(requirement) == "inna_jax":
            inner = requirement.split("[", 1)[1].split("]", 1)[0]
            for other in inner.split(","):
                names |= _expand(other.strip())
        else:
            names.add(_name(requirement))
    return names


def test_the_core_is_jax_optax_numpy_scipy_diffrax():
    assert {_name(r) for r in PROJECT["dependencies"]} == {
        "jax",
        "jaxlib",
        "optax",
        "numpy",
        "scipy",
        "diffrax",
    }


@pytest.mark.parametrize("extra", sorted(_extras.EXTRAS))
def test_the_import_guards_know_the_extras_of_pyproject(extra):
    assert _expand(extra) == set(_extras.EXTRAS[extra])


def test_dev_and_all_hold_every_extra():
    assert _expand("all") == _expand("train") | _expand("reproduce") | _expand("rl")
    dev = _expand("dev")
    assert _expand("all") | _expand("docs") <= dev
    for tool in ("pytest", "pytest-xdist", "hypothesis", "equinox", "build", "twine", "pyright"):
        assert tool in dev, tool


def test_one_version_read_from_the_package():
    assert "version" in PROJECT["dynamic"] and "version" not in PROJECT
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "inna_jax.__version__"}
    assert importlib.metadata.version("inna_jax") == inna_jax.__version__


def test_license_is_the_apache_2_text_and_the_metadata_says_so():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(text.splitlines()) == 202  # the standard text, whole
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    # a License :: classifier next to an SPDX expression is refused by the build backends
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"])


def test_the_metadata_links_the_papers_it_implements():
    urls = importlib.metadata.metadata("inna_jax").get_all("Project-URL") or []
    assert {url.split(", ", 1)[1] for url in urls} >= {
        "https://arxiv.org/abs/1905.12278",
        "https://arxiv.org/abs/2405.14402",
        "https://arxiv.org/abs/2410.05871",
    }, urls


def test_the_package_says_it_is_typed():
    assert (ROOT / "inna_jax" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["inna_jax"]
    assert "Typing :: Typed" in PROJECT["classifiers"]


def _without_extras(code: str, keep: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Runs ``code`` in a child interpreter in which no extra's module but ``keep`` can be
    imported."""
    blocked = [name for name in EXTRA_MODULES if name not in keep]
    prelude = f"import sys\nfor name in {blocked!r}:\n    sys.modules[name] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_the_core_works_without_any_extra():
    result = _without_extras(
        """
        import jax, jax.numpy as jnp, optax
        import inna_jax
        from inna_jax import dynamics, rl, data

        predict = lambda w, x: x @ w
        x, y = jnp.array([[1.0, 0.5], [0.2, -1.0], [0.3, 0.3]]), jnp.array([1.0, -0.5, 0.2])
        loss = lambda w: 0.5 * jnp.sum((predict(w, x) - y) ** 2)
        w = jnp.zeros(2)
        for tx, kw in [
            (inna_jax.inna(0.1), {}),
            (inna_jax.transform(learning_rate=0.1), {}),
            (inna_jax.innaprop(0.1), {}),
            (inna_jax.egn(predict, regularizer=1e-3), {"inputs": x, "targets": y}),
            (inna_jax.sgn(predict, line_search=False), {"inputs": x, "targets": y}),
        ]:
            updates, _ = tx.update(jax.grad(loss)(w), tx.init(w), w, **kw)
            assert float(loss(optax.apply_updates(w, updates))) < float(loss(w)), tx
        assert inna_jax.ntk_gram(predict, w, x).shape == (3, 3)
        sol = dynamics.solve_din(loss, w, t1=1.0)
        assert float(loss(sol.theta[-1])) < float(loss(w))
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


@pytest.mark.parametrize(
    ("part", "extra"),
    [
        ("inna_jax.train", "train"),
        ("inna_jax.models", "train"),
        ("inna_jax.reproduce", "reproduce"),
    ],
)
def test_a_part_without_its_extra_is_one_line_naming_it(part, extra):
    result = _without_extras(
        f"""
        try:
            import {part}
        except ImportError as err:
            print(type(err).__name__)
            print(err)
        """
    )
    assert result.returncode == 0, result.stderr
    kind, message = result.stdout.splitlines()  # exactly one line of message
    assert kind == "MissingExtraError"
    assert message.startswith(f'{part} needs the "{extra}" extra (missing: flax, ')
    assert message.endswith(f': pip install "inna_jax[{extra}]"')


@pytest.mark.parametrize(
    ("loader", "missing"),
    [
        ("load_digits", "scikit-learn"),
        ("load_diabetes", "scikit-learn"),
        ("load_mnist1d", "mnist1d"),
    ],
)
def test_a_data_loader_without_its_extra_is_one_line_naming_it(loader, missing):
    # inna_jax.data's arrays and batching are core; the loaders of scikit-learn's sets and of
    # mnist1d need the reproduce extra, and say so when they are called
    result = _without_extras(
        f"""
        from inna_jax import data
        try:
            data.{loader}()
        except ImportError as err:
            print(type(err).__name__)
            print(err)
        """
    )
    assert result.returncode == 0, result.stderr
    kind, message = result.stdout.splitlines()
    assert kind == "MissingExtraError"
    assert message == (
        f'inna_jax.data.{loader} needs the "reproduce" extra (missing: {missing}): '
        'pip install "inna_jax[reproduce]"'
    )


def test_the_command_without_its_extra_is_one_line_and_status_2():
    result = _without_extras(
        """
        from inna_jax.cli import main
        sys.exit(main(["demo", "--out", "nowhere"]))
        """
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith('inna-jax needs the "reproduce" extra (missing: flax, ')
    assert result.stderr.endswith(': pip install "inna_jax[reproduce]"\n')
    assert result.stderr.count("\n") == 1


def test_missing_lists_only_what_is_absent():
    result = _without_extras(
        """
        from inna_jax import _extras
        print(_extras.missing("rl"))
        sys.modules["gymnax"] = sys.modules["six"] = sys  # any module: "installed"
        print(_extras.missing("rl"))
        _extras.require("rl", "x")
        del sys.modules["six"]
        sys.modules["six"] = None
        try:
            _extras.require("rl", "x", only=("gymnax",))
            _extras.require("rl", "x")
        except ImportError as err:
            print(err)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "['gymnax', 'six']",
        "[]",
        'x needs the "rl" extra (missing: six): pip install "inna_jax[rl]"',
    ]


def test_the_train_extra_alone_trains_a_model_on_the_users_arrays():
    result = _without_extras(
        """
        import numpy as np, optax
        from flax import nnx
        from inna_jax.data import ArrayDataset
        from inna_jax.models import MLP
        from inna_jax.train import fit

        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 3)).astype(np.float32)
        y = (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
        data = ArrayDataset(x[:48], y[:48], x[48:], y[48:], num_classes=0, name="linear")
        result = fit(MLP(3, (8,), 1, rngs=nnx.Rngs(0)), optax.adam(1e-2), data,
                     epochs=3, batch_size=16, quiet=True)
        losses = [row["train_loss"] for row in result.history]
        assert losses[-1] < losses[0], losses
        print("ok")
        """,
        keep=("flax", "orbax", "tqdm"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "ok\n"
