"""Problems shared by the exactness tests of INNA and INNAprop (tests/test_inna.py,
tests/test_innaprop.py)."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax


def mlp_problem(seed=0, n=64, d=5, h=7):
    """A small tanh MLP regression in float64; params flattened for the NumPy side."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.sin(x @ rng.normal(size=d))
    params = {
        "w1": rng.normal(size=(d, h)) / np.sqrt(d),
        "b1": np.zeros(h),
        "w2": rng.normal(size=(h,)) / np.sqrt(h),
    }
    params = jax.tree.map(jnp.asarray, params)
    flat0, unravel = jax.flatten_util.ravel_pytree(params)

    def loss(p, k):
        # minibatches of 16 examples, cycling: a stochastic gradient
        start = (k % 4) * 16
        xb = jax.lax.dynamic_slice_in_dim(jnp.asarray(x), start, 16)
        yb = jax.lax.dynamic_slice_in_dim(jnp.asarray(y), start, 16)
        pred = jnp.tanh(xb @ p["w1"] + p["b1"]) @ p["w2"]
        return jnp.mean((pred - yb) ** 2)

    grad = jax.jit(jax.grad(loss))
    flat_grad = lambda flat, k: np.asarray(jax.flatten_util.ravel_pytree(grad(unravel(flat), k))[0])
    return params, np.asarray(flat0), unravel, grad, flat_grad


def optax_path(tx, params, grad, steps):
    """The flattened parameters after each of ``steps`` updates of the optax optimizer
    ``tx`` from ``params``, with gradient ``grad(p, k)`` at step ``k``: a ``(steps, P)``
    array (one jitted ``lax.scan``)."""

    def body(carry, k):
        p, state = carry
        updates, state = tx.update(grad(p, k), state, p)
        p = optax.apply_updates(p, updates)
        return (p, state), jax.flatten_util.ravel_pytree(p)[0]

    _, traj = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), jnp.arange(steps)))(params)
    return np.asarray(traj)
