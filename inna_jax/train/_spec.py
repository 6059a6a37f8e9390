r"""``OptimizerSpec``: an optimizer family and its hyperparameters, kept apart.

:func:`~inna_jax.train.fit` compiles its training step once per *family* (the factory and its
fixed arguments) and reuses it for every hyperparameter value: the numbers travel in the
optimizer state, as with ``optax.inject_hyperparams``, instead of being constants of the
compiled program. For a family :math:`\mathcal F` and hyperparameters :math:`h`, the update is

.. math::

    (u_k, s_{k+1}) = \mathcal F(h)\,.\mathrm{update}(g_k, s_k, \theta_k),
    \qquad s_k = (h, \text{inner state}_k),

so two specs with the same family and different :math:`h` run the same program.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import jax
import numpy as np
import optax


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Real | np.number):
        return True
    return isinstance(value, np.ndarray | jax.Array) and np.ndim(value) == 0


class OptimizerSpec:
    r"""An optimizer family (a factory and its fixed arguments) with hyperparameter values.

    ``OptimizerSpec(factory, **kwargs)`` stands for ``factory(**kwargs)``. The keyword
    arguments with *numeric* values (Python or NumPy scalars, 0-d arrays; not ``bool``) are
    the hyperparameters :math:`h`, kept as Python floats: they are stored in the optimizer
    state (in the parameters' floating dtype) by
    ``optax.inject_hyperparams`` and are traced values inside the compiled step. Every other
    argument (strings, booleans, callables such as a model's ``predict_fn``, tuples) and every
    default left out are *static*: part of the family and of the compiled program. Name
    numeric arguments that must stay Python numbers (a loop count, say) in ``static_args``.

    Two specs are of the same :attr:`family` when they have the same factory, the same
    static arguments and the same hyperparameter names; :func:`~inna_jax.train.fit` and
    :func:`~inna_jax.train.fit_many` then reuse one compiled step for both, and
    :func:`~inna_jax.train.fit_many` can train runs with different :math:`h` in one program.
    The factory must not branch in Python on a hyperparameter (it may be traced).

    Args:
        factory: a function returning an ``optax.GradientTransformation``; keep a reference
            to it (a module-level function, or one lambda reused) so that the family is the
            same object from call to call.
        static_args: names among ``kwargs`` to keep static even when numeric.
        **kwargs: the arguments of ``factory``.

    Raises:
        TypeError: if ``factory`` is not callable, or a static argument is not hashable.
        ValueError: if ``static_args`` names an argument not given.

    Example:
        >>> import jax.numpy as jnp
        >>> import inna_jax
        >>> from inna_jax.train import OptimizerSpec
        >>> def inna_decay(learning_rate, alpha, beta):
        ...     return inna_jax.inna(inna_jax.power_decay(learning_rate), alpha, beta)
        >>> a = OptimizerSpec(inna_decay, learning_rate=0.1, alpha=0.5, beta=0.1)
        >>> b = a.replace(learning_rate=0.3)
        >>> a.family == b.family, b.hyperparams["learning_rate"]
        (True, 0.3)
        >>> tx = b.build()  # an optax.GradientTransformationExtraArgs
        >>> state = tx.init({"w": jnp.zeros(2)})
        >>> round(float(state.hyperparams["learning_rate"]), 6)  # float32, as the parameters
        0.3

    References:
        optax, ``optax.inject_hyperparams`` (hyperparameters stored in the optimizer state).
    """

    __slots__ = ("_factory", "_hyperparams", "_static")

    def __init__(
        self,
        factory: Callable[..., optax.GradientTransformation],
        /,
        *,
        static_args: Iterable[str] = (),
        **kwargs: Any,
    ):
        if not callable(factory):
            raise TypeError(f"factory must be callable, got {type(factory).__name__}")
        static_names = {static_args} if isinstance(static_args, str) else set(static_args)
        unknown = static_names - set(kwargs)
        if unknown:
            raise ValueError(
                f"static_args names arguments that were not given: {sorted(unknown)}; "
                f"given: {sorted(kwargs)}"
            )
        hyper, static = {}, {}
        for name, value in kwargs.items():
            if name not in static_names and _is_number(value):
                hyper[name] = float(value)  # one dtype for 1 and 0.5: one compiled program
            else:
                try:
                    hash(value)
                except TypeError as err:
                    raise TypeError(
                        f"static argument {name}={value!r} of {_name(factory)} must be "
                        "hashable (it is part of the compiled program's key); pass a tuple "
                        "instead of a list"
                    ) from err
                static[name] = value
        self._factory = factory
        self._hyperparams = hyper
        self._static = static

    @property
    def factory(self) -> Callable[..., optax.GradientTransformation]:
        """The optimizer factory."""
        return self._factory

    @property
    def hyperparams(self) -> dict[str, Any]:
        """The numeric arguments, which travel as values in the optimizer state (a copy)."""
        return dict(self._hyperparams)

    @property
    def static(self) -> dict[str, Any]:
        """The fixed arguments, part of the compiled program (a copy)."""
        return dict(self._static)

    @property
    def family(self) -> Hashable:
        """A hashable key: the factory, the static arguments and the hyperparameter names."""
        return (
            self._factory,
            tuple(sorted(self._static.items(), key=lambda kv: kv[0])),
            tuple(sorted(self._hyperparams)),
        )

    def replace(self, **hyperparams: Any) -> OptimizerSpec:
        """The same family with some hyperparameters changed.

        Raises:
            ValueError: for a name that is not a hyperparameter of this spec.
        """
        unknown = set(hyperparams) - set(self._hyperparams)
        if unknown:
            raise ValueError(
                f"replace() takes hyperparameters of this spec {sorted(self._hyperparams)}, "
                f"got {sorted(unknown)}"
            )
        return OptimizerSpec(
            self._factory,
            static_args=tuple(n for n, v in self._static.items() if _is_number(v)),
            **self._static,
            **{**self._hyperparams, **hyperparams},
        )

    def inner_factory(self) -> Callable[..., optax.GradientTransformation]:
        """``factory`` with the static arguments bound, taking only the hyperparameters."""
        factory, static, names = self._factory, dict(self._static), tuple(self._hyperparams)

        def inner(**hyperparams: Any) -> optax.GradientTransformation:
            return factory(**static, **hyperparams)

        # optax.inject_hyperparams reads the signature: only the hyperparameters appear.
        inner.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names]
        )
        inner.__name__ = _name(factory)
        return inner

    def build(self) -> optax.GradientTransformationExtraArgs:
        """The optimizer: ``optax.inject_hyperparams`` over :meth:`inner_factory`."""
        return optax.inject_hyperparams(self.inner_factory())(**self._hyperparams)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OptimizerSpec):
            return NotImplemented
        return self.family == other.family and self._hyperparams == other._hyperparams

    def __hash__(self) -> int:
        return hash((self.family, tuple(sorted(self._hyperparams.items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in {**self._static, **self._hyperparams}.items())
        return f"OptimizerSpec({_name(self._factory)}, {args})"


def _name(factory: Callable) -> str:
    return getattr(factory, "__qualname__", None) or repr(factory)
