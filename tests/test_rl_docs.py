"""``inna_jax.rl``'s public names: explicit exports, docstrings with examples and references.

(The examples themselves run in ``tests/test_docs.py``, which doctests the whole package.)
"""

import inspect

import pytest

from inna_jax import rl

CALLABLES = sorted(n for n in rl.__all__ if callable(getattr(rl, n)))


def test_all_is_exactly_the_public_surface():
    exported = {n for n in dir(rl) if not n.startswith("_")}
    assert set(rl.__all__) == exported - {"annotations"}
    assert rl.__doc__ and rl.__doc__.strip()


@pytest.mark.parametrize("name", CALLABLES)
def test_public_name_is_documented(name):
    obj = getattr(rl, name)
    doc = inspect.getdoc(obj)
    assert doc and doc != inspect.getdoc(type(obj)), f"{name} has no docstring of its own"
    if not hasattr(obj, "_fields"):  # NamedTuples are records; functions need more
        assert ">>>" in doc, f"{name}'s docstring has no runnable >>> example"
        assert "Args:" in doc and "Returns:" in doc, name
