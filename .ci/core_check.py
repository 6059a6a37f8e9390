"""The package a JAX user meets: build it, install the wheel alone in a fresh venv, use it.

Run by .ci/run (it needs pip's index or cache, so it is not a test):

    python .ci/core_check.py [--keep DIR]

1. ``python -m build`` makes the sdist and, from it, the wheel; ``twine check`` accepts both;
   the sdist holds the package, README.md, LICENSE, CHANGELOG.md and no tests; the wheel holds
   py.typed and LICENSE, and its version is ``inna_jax.__version__``.
2. A fresh venv gets the wheel without extras (``pip install inna_jax-*.whl``): only the core
   (jax, jaxlib, optax, numpy, scipy, diffrax and what they need) is installed.
3. There, ``import inna_jax`` and one step of every optimizer (inna, transform, innaprop, egn,
   sgn), ``ntk_gram``, a short DIN solve (``inna_jax.dynamics``), ``inna_jax.rl``'s LQR and
   ``inna_jax.data``'s arrays work, checked against closed forms where there is one; importing
   ``inna_jax.train``, ``inna_jax.models`` or ``inna_jax.reproduce`` fails with one line naming
   the extra; the ``inna-jax`` command prints one line naming the extra, status 2.
4. It prints the venv's site-packages size and package list.

Exits with status 1 and says what failed if anything does.
"""

from __future__ import annotations

import argparse
import email.parser
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs inside the fresh venv, from a folder outside the repository.
USE_THE_CORE = r"""
import importlib.metadata
import math
import subprocess
import sys
import sysconfig
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # float64, for the closed-form comparisons

import inna_jax
import jax.numpy as jnp
import numpy as np
import optax

site = Path(sysconfig.get_paths()["purelib"])
assert Path(inna_jax.__file__).is_relative_to(site), inna_jax.__file__  # the wheel, not the repo
assert importlib.metadata.version("inna_jax") == inna_jax.__version__
assert (Path(inna_jax.__file__).parent / "py.typed").is_file()
for extra_dist in ("flax", "orbax-checkpoint", "tqdm", "scikit-learn", "mnist1d", "matplotlib",
                   "gymnax", "threadpoolctl", "hypothesis", "pytest"):
    try:
        importlib.metadata.version(extra_dist)
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        raise AssertionError(f"{extra_dist} is installed with the core alone")

# A quadratic, 0.5 |A w - b|^2, through a linear model: predict(w, x) = x @ w.
A = jnp.array([[1.0, 0.5], [0.2, -1.0], [0.3, 0.3]])
b = jnp.array([1.0, -0.5, 0.2])
predict = lambda w, x: x @ w
loss = lambda w: 0.5 * jnp.sum((A @ w - b) ** 2)
w0 = jnp.zeros(2)
w_star = jnp.linalg.lstsq(A, b)[0]


def one_step(tx, **extra):
    state = tx.init(w0)
    g = jax.grad(loss)(w0)
    updates, state = tx.update(g, state, w0, **extra)
    w1 = optax.apply_updates(w0, updates)
    assert bool(jnp.all(jnp.isfinite(w1))), w1
    assert float(loss(w1)) < float(loss(w0)), (tx, w1)  # a small step goes downhill
    return w1


one_step(inna_jax.inna(0.1))
one_step(inna_jax.transform(0.5, 0.1, learning_rate=0.1))
one_step(inna_jax.innaprop(0.1))
# Gauss-Newton on a linear model with a vanishing damping: one step solves least squares.
w_egn = one_step(inna_jax.egn(predict, "mse", learning_rate=1.0, regularizer=1e-9),
                 inputs=A, targets=b)
np.testing.assert_allclose(w_egn, w_star, rtol=1e-7)
one_step(inna_jax.sgn(predict, "mse", learning_rate=1.0, regularizer=1e-6, line_search=False),
         inputs=A, targets=b)
np.testing.assert_allclose(inna_jax.ntk_gram(predict, w0, A), A @ A.T, rtol=1e-12)

from inna_jax import dynamics

# DIN on a quadratic: the flow decreases the loss towards its minimum.
sol = dynamics.solve_din(loss, w0, t1=20.0, alpha=0.5, beta=0.1)
w_end = sol.theta[-1]
assert float(loss(w_end)) < 1e-3 + float(loss(w_star)), w_end

import inna_jax.data
import inna_jax.rl

# The LQR's value matrix solves the discounted Lyapunov equation P = Q_K + g A_K^T P A_K.
problem = inna_jax.rl.make_lqr(0)
P, _ = inna_jax.rl.lqr_value(problem)
a_k = np.asarray(problem.A + problem.B @ problem.K, np.float64)
q_k = np.asarray(problem.Q + problem.K.T @ problem.R @ problem.K, np.float64)
np.testing.assert_allclose(P, q_k + problem.gamma * a_k.T @ P @ a_k, rtol=1e-10)
data = inna_jax.data.ArrayDataset(np.zeros((4, 2)), np.zeros(4), np.zeros((2, 2)), np.zeros(2),
                                  num_classes=0, name="zeros")
assert data.x_train.shape == (4, 2)

for part, extra in (("inna_jax.train", "train"), ("inna_jax.models", "train"),
                    ("inna_jax.reproduce", "reproduce")):
    try:
        __import__(part)
    except ImportError as err:
        message = str(err)
        assert "\n" not in message, message
        assert f'"{extra}" extra' in message, message
        assert f'pip install "inna_jax[{extra}]"' in message, message
        assert type(err).__name__ == "MissingExtraError", type(err)
        print(f"import {part}: {message}")
    else:
        raise AssertionError(f"import {part} worked without its extra")

cli = subprocess.run([str(Path(sys.executable).parent / "inna-jax"), "demo"],
                     capture_output=True, text=True)
assert cli.returncode == 2, (cli.returncode, cli.stderr)
assert cli.stdout == "" and cli.stderr.count("\n") == 1, cli.stderr
assert 'pip install "inna_jax[reproduce]"' in cli.stderr, cli.stderr
print(f"inna-jax demo (status {cli.returncode}): {cli.stderr.strip()}")
print("the core works")
"""


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kwargs)


def check_dists(dist: Path, version: str) -> Path:
    sdist = next(dist.glob("*.tar.gz"))
    wheel = next(dist.glob("*.whl"))
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for needed in ("README.md", "LICENSE", "CHANGELOG.md", "pyproject.toml", "inna_jax/py.typed"):
        assert needed in names, f"the sdist lacks {needed}"
    assert not any(name.startswith("tests/") for name in names), "the sdist holds tests/"
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        info = f"inna_jax-{version}.dist-info"
        assert "inna_jax/py.typed" in names, "the wheel lacks py.typed"
        assert f"{info}/licenses/LICENSE" in names, "the wheel lacks LICENSE"
        meta = email.parser.Parser().parsestr(whl.read(f"{info}/METADATA").decode())
    assert meta["Version"] == version, (meta["Version"], version)
    assert meta["License-Expression"] == "Apache-2.0", meta["License-Expression"]
    core = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    print(f"wheel {wheel.name}: core requirements {', '.join(core)}")
    return wheel


def version_in_source() -> str:
    for line in (ROOT / "inna_jax" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise AssertionError("inna_jax/__init__.py sets no __version__")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build and install in DIR and keep it")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="inna_jax_core_"))
    work.mkdir(parents=True, exist_ok=True)
    timings = {}
    try:
        start = time.perf_counter()
        dist = work / "dist"
        shutil.rmtree(dist, ignore_errors=True)
        # a copy of the sources, so that building writes nothing into the checkout
        src = work / "src"
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(
            ROOT,
            src,
            ignore=shutil.ignore_patterns(
                ".git",
                ".venv",
                ".ci-venv",
                "*.egg-info",
                "__pycache__",
                "out",
                "runs",
                "results",
                "build",
                "dist",
                ".pytest_cache",
                ".ruff_cache",
            ),
        )
        run(
            [sys.executable, "-m", "build", "--outdir", str(dist), str(src)],
            stdout=subprocess.DEVNULL,
        )
        run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())])
        wheel = check_dists(dist, version_in_source())
        timings["build + twine check"] = time.perf_counter() - start

        start = time.perf_counter()
        venv = work / "venv"
        shutil.rmtree(venv, ignore_errors=True)
        run([sys.executable, "-m", "venv", str(venv)])
        py = str(venv / "bin" / "python")
        run([py, "-m", "pip", "install", "--quiet", str(wheel)])
        timings["fresh venv + pip install wheel"] = time.perf_counter() - start

        start = time.perf_counter()
        run([py, "-c", textwrap.dedent(USE_THE_CORE)], cwd=work)
        timings["use the core"] = time.perf_counter() - start

        site = subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        size = subprocess.run(["du", "-sh", site], capture_output=True, text=True).stdout.split()[0]
        freeze = subprocess.run(
            [
                py,
                "-m",
                "pip",
                "list",
                "--format=freeze",
                "--exclude",
                "pip",
                "--exclude",
                "setuptools",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        print(f"core venv: site-packages {size}, {len(freeze)} packages: {' '.join(freeze)}")
    except subprocess.CalledProcessError as err:
        what = " ".join(map(str, err.cmd[:3]))[:80]
        print(f"core check FAILED: {what} exited with status {err.returncode}", file=sys.stderr)
        return 1
    except (AssertionError, StopIteration) as err:
        print(f"core check FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    for step, seconds in timings.items():
        print(f"  {step}: {seconds:.1f} s")
    print("core check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
