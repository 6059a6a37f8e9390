"""The optional extras of ``pip install inna_jax[...]`` and the one-line error when one is missing.

The core (``pip install inna_jax``: jax, jaxlib, optax, numpy, scipy, diffrax) holds the
optimizers, :mod:`inna_jax.dynamics`, :mod:`inna_jax.rl` and :mod:`inna_jax.data`'s arrays
and batching. The other parts need an extra:

- ``train`` (flax, orbax-checkpoint, tqdm): :mod:`inna_jax.train`, :mod:`inna_jax.models`.
- ``reproduce`` (``train`` + scikit-learn, mnist1d, matplotlib, threadpoolctl):
  :mod:`inna_jax.reproduce`, the ``inna-jax`` command, the loaders of
  :mod:`inna_jax.data` that read scikit-learn's data sets or make mnist1d.
- ``rl`` (gymnax, six): the environments of the DQN (``inna-jax egn-rl``).

Importing a part whose extra is missing raises :class:`MissingExtraError` (an
:class:`ImportError`) with one line naming the part, the extra and the ``pip`` command. The
check looks the modules up without importing them (:func:`importlib.util.find_spec`).
``tests/test_packaging.py`` checks that :data:`EXTRAS` agrees with ``pyproject.toml``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: extra -> {distribution name in pyproject.toml: module it provides}
EXTRAS: dict[str, dict[str, str]] = {
    "train": {
        "flax": "flax",
        "orbax-checkpoint": "orbax.checkpoint",
        "tqdm": "tqdm",
    },
    "reproduce": {
        "flax": "flax",
        "orbax-checkpoint": "orbax.checkpoint",
        "tqdm": "tqdm",
        "scikit-learn": "sklearn",
        "mnist1d": "mnist1d",
        "matplotlib": "matplotlib",
        "threadpoolctl": "threadpoolctl",
    },
    "rl": {
        "gymnax": "gymnax",
        "six": "six",
    },
}


class MissingExtraError(ImportError):
    """A part of inna_jax was used without the optional extra it needs.

    Attributes:
        extra: the extra's name, as in ``pip install "inna_jax[extra]"``.
        missing: the distributions of the extra that are not installed.
    """

    def __init__(self, part: str, extra: str, missing: list[str]) -> None:
        self.extra = extra
        self.missing = missing
        super().__init__(
            f'{part} needs the "{extra}" extra (missing: {", ".join(missing)}): '
            f'pip install "inna_jax[{extra}]"'
        )


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it or its parents."""
    top, _, rest = module.partition(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):  # a broken entry in sys.modules
        return False
    if spec is None or not rest:
        return spec is not None
    folders = [Path(folder, *rest.split(".")) for folder in spec.submodule_search_locations or []]
    return any(f.is_dir() or f.with_suffix(".py").is_file() for f in folders)


def missing(extra: str) -> list[str]:
    """The distributions of ``extra`` that are not installed (empty when it is complete)."""
    return [dist for dist, module in EXTRAS[extra].items() if not _installed(module)]


def require(extra: str, part: str, only: tuple[str, ...] = ()) -> None:
    """Raises :class:`MissingExtraError` naming ``part`` unless ``extra`` is installed.

    Args:
        extra: a key of :data:`EXTRAS`.
        part: what needs it, as the user wrote it (``"inna_jax.train"``).
        only: the distributions of ``extra`` that ``part`` needs (default: all of them).

    Example:
        >>> from inna_jax._extras import require
        >>> require("train", "inna_jax.train")  # nothing happens when flax & co. are there
    """
    absent = [dist for dist in missing(extra) if not only or dist in only]
    if absent:
        raise MissingExtraError(part, extra, absent)
