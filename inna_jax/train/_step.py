r"""The functional training step and the masked evaluation pass (un-jitted; see ``_programs``).

The step is the pure map

.. math::

    (\theta_k, s_k, \mathrm{ok}_k;\ B_k) \mapsto (\theta_{k+1}, s_{k+1}, \mathrm{ok}_{k+1}),
    \quad g_k = \nabla_\theta \tfrac{1}{b}\textstyle\sum_{i\in B_k} \ell(f(x_i;\theta_k), y_i),

with :math:`(u_k, s_{k+1}) = \mathrm{tx.update}(g_k, s_k, \theta_k)` and
:math:`\theta_{k+1} = \theta_k + u_k`. The optimizer always receives the parameters (INNA
needs them) and the batch as ``inputs=``/``targets=`` (EGN and SGN need them; a plain
``GradientTransformation`` is wrapped by ``optax.with_extra_args_support``, which drops
them). A non-finite loss or non-finite new parameters set
:math:`\mathrm{ok}` to false, and from then on every step returns its input state unchanged
(a select or one ``lax.cond``, no Python branch), so the state stays at the last finite one
and the host can check the flag only now and then.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from inna_jax.train import _losses


class TrainState(NamedTuple):
    """Everything a training step reads and writes.

    Attributes:
        params: the model's ``nnx.Param`` values, a nested dict of arrays
            (``nnx.to_pure_dict``): plain pytrees make each jitted call cheap to dispatch.
        rest: the model's other variables (batch statistics, RNG streams), a nested dict of
            arrays.
        opt_state: the optimizer state.
        ok: ``True`` while every loss and parameter so far was finite.
        bad_step: the first step whose loss or update was non-finite, ``-1`` if none.
        step: the number of updates applied.
    """

    params: Any
    rest: Any
    opt_state: Any
    ok: jax.Array
    bad_step: jax.Array
    step: jax.Array


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _keep(ok: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    if jax.dtypes.issubdtype(old.dtype, jax.dtypes.prng_key):
        data = jnp.where(ok, jax.random.key_data(new), jax.random.key_data(old))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(old))
    return jnp.where(ok, new, old)


def make_step(
    graphdef: Any,
    optimizer: optax.GradientTransformation,
    loss: str | Callable,
    *,
    branch: bool = False,
):
    """The un-jitted step ``(state, x, y) -> (state, (loss, ok, bad_step))``.

    ``branch=True`` keeps or drops the new state with one ``lax.cond``: on a CPU it compiles
    and runs faster than a ``jnp.where`` per array (the default), which suits accelerators,
    where a conditional reads its predicate back on the host. Both give the same bits, and a
    vmapped group turns the conditional into selects anyway.
    """
    loss_mean = _losses.mean_loss(loss)
    optimizer = optax.with_extra_args_support(optimizer)

    def train_step(state: TrainState, x: jax.Array, y: jax.Array):
        model = nnx.merge(graphdef, state.params, state.rest)
        # nnx's grad differentiates the Params and lets batch statistics and RNG counts
        # update in place (a jax.grad over merge cannot mutate variables of the outer trace).
        value, grads = nnx.value_and_grad(lambda m: loss_mean(m(x), y))(model)
        grads = nnx.to_pure_dict(grads)
        rest = nnx.to_pure_dict(cast(nnx.State, nnx.split(model, nnx.Param, ...)[2]))
        updates, opt_state = optimizer.update(
            grads, state.opt_state, state.params, inputs=x, targets=y
        )
        params = optax.apply_updates(state.params, updates)
        ok = state.ok & jnp.isfinite(value) & _all_finite(params)
        new, old = (params, rest, opt_state), (state.params, state.rest, state.opt_state)
        if branch:
            params, rest, opt_state = jax.lax.cond(ok, lambda: new, lambda: old)
        else:
            params, rest, opt_state = jax.tree.map(functools.partial(_keep, ok), new, old)
        new_state = TrainState(
            params=params,
            rest=rest,
            opt_state=opt_state,
            ok=ok,
            bad_step=jnp.where(state.ok & ~ok, state.step, state.bad_step),
            step=state.step + ok.astype(state.step.dtype),
        )
        return new_state, (value, new_state.ok, new_state.bad_step)

    return train_step


def make_eval(graphdef: Any, loss: str | Callable, *, classification: bool) -> Callable:
    """The un-jitted masked sums ``(params, rest, x, y, mask) -> (loss_sum, metric_sum)``.

    ``metric_sum`` counts correct predictions (classification) or sums squared errors
    (regression); padded rows have ``mask = 0``.
    """
    per_example = _losses.per_example_loss(loss)
    metric = _losses.correct if classification else _losses.squared_error

    def eval_sums(params, rest, x, y, mask):
        outputs = nnx.merge(graphdef, params, rest)(x)
        losses = per_example(outputs, y)
        metrics = metric(outputs, y).astype(losses.dtype)
        mask = mask.astype(losses.dtype)
        return jnp.sum(losses * mask), jnp.sum(metrics * mask)

    return eval_sums
