r"""The runs of ``inna-jax innaprop-lm``: the optimizers and the compiled training loop.

Each method trains every seed at once: one ``jax.jit``-compiled program per method, the seeds
stacked along a leading axis and advanced by ``jax.vmap``, ``eval_every`` steps per call (a
``jax.lax.scan``). Seed :math:`r` fixes the initial weights and the batches, the same for
every method. A batch is ``batch_size`` windows of ``context + 1`` bytes drawn uniformly from
the training bytes (as nanoGPT's ``get_batch``), the targets the inputs shifted by one.

The loop is its own rather than :func:`inna_jax.train.fit_many`'s: a language model is trained
for a number of steps on random windows, not in epochs over a fixed set of examples; it is
evaluated on held-out windows every few steps, not on the whole training set; and its targets
are one token per position, where ``fit_many``'s metrics expect one label per example.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from inna_jax.reproduce.protocol import fast_compile_options

#: name (as ``--methods`` takes it) -> (label, optimizer, its fixed hyperparameters).
METHODS: dict[str, tuple[str, str, dict[str, float]]] = {
    "adamw": ("AdamW", "adamw", {}),
    "innaprop-0.1-0.9": ("INNAprop (0.1, 0.9)", "innaprop", {"alpha": 0.1, "beta": 0.9}),
    "innaprop-1-1": ("INNAprop (1, 1)", "innaprop", {"alpha": 1.0, "beta": 1.0}),
}


def schedule(peak: float, warmup: int, steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to ``peak`` over ``warmup`` steps, then cosine decay to
    ``peak / 10`` at ``steps`` (the authors' GPT-2 recipe: 6e-4 down to 6e-5)."""
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, warmup_steps=warmup, decay_steps=steps, end_value=peak / 10
    )


def make_optimizer(
    method: str, lr: optax.Schedule, weight_decay: float
) -> optax.GradientTransformation:
    r"""``method``'s optimizer after clipping the gradient's global norm at 1.

    AdamW: :math:`(\beta_1, \beta_2) = (0.9, 0.95)`, as nanoGPT's GPT-2 runs; INNAprop:
    :math:`\sigma = 0.99`, as the authors' GPT-2 runs (:func:`inna_jax.innaprop`). Both decay
    every parameter by ``weight_decay`` (decoupled).
    """
    from inna_jax import innaprop

    _, kind, hyper = METHODS[method]
    if kind == "adamw":
        inner = optax.adamw(lr, b1=0.9, b2=0.95, weight_decay=weight_decay)
    else:
        inner = innaprop(lr, hyper["alpha"], hyper["beta"], sigma=0.99, weight_decay=weight_decay)
    return optax.chain(optax.clip_by_global_norm(1.0), inner)


def validation_windows(tokens: np.ndarray, context: int, count: int) -> np.ndarray:
    """``count`` windows of ``context + 1`` bytes, evenly spaced over ``tokens`` (at most the
    number of non-overlapping windows it holds)."""
    span = context + 1
    available = len(tokens) // span
    starts = np.linspace(0, (available - 1) * span, min(count, available)).astype(np.int64)
    return np.stack([tokens[s : s + span] for s in starts]).astype(np.int32)


def _split(make_model: Callable[[Any], Any]):
    """The model's graph and a function ``key -> (params, rest)``."""
    from flax import nnx

    graphdef, _, _ = nnx.split(
        nnx.eval_shape(lambda: make_model(jax.random.key(0))), nnx.Param, ...
    )

    def init(key):
        _, params, rest = nnx.split(make_model(key), nnx.Param, ...)
        return params, rest

    return graphdef, init


def _loss_fn(graphdef):
    from flax import nnx

    def loss(params, rest, windows):
        logits = nnx.merge(graphdef, params, rest)(windows[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, windows[:, 1:]).mean()

    return loss


def _programs(graphdef, tx, steps_per_call: int, batch_size: int, context: int):
    """The jitted training chunk and evaluation, both vmapped over the seeds."""
    loss = _loss_fn(graphdef)
    offsets = jnp.arange(context + 1)

    def one_step(carry, step, data, key):
        params, rest, opt_state = carry
        starts = jax.random.randint(
            jax.random.fold_in(key, step), (batch_size,), 0, data.shape[0] - context
        )
        windows = data[starts[:, None] + offsets].astype(jnp.int32)
        value, grads = jax.value_and_grad(loss)(params, rest, windows)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), rest, opt_state), value

    def chunk(params, rest, opt_state, key, first, data):
        body = lambda carry, step: one_step(carry, step, data, key)  # noqa: E731
        steps = first + jnp.arange(steps_per_call)
        (params, rest, opt_state), values = jax.lax.scan(body, (params, rest, opt_state), steps)
        return params, rest, opt_state, values.mean()

    fast = fast_compile_options()  # LLVM -O1 on a CPU: compiles faster, runs as fast
    train = jax.jit(
        jax.vmap(chunk, in_axes=(0, 0, 0, 0, None, None)),
        donate_argnums=(0, 2),
        compiler_options=fast,
    )
    evaluate = jax.jit(jax.vmap(loss, in_axes=(0, 0, None)), compiler_options=fast)
    return train, evaluate


def train_method(
    method: str,
    make_model: Callable[[Any], Any],
    train_tokens: np.ndarray,
    val_windows: np.ndarray,
    *,
    seeds: list[int],
    steps: int,
    eval_every: int,
    batch_size: int,
    context: int,
    lr: float,
    warmup: int,
    weight_decay: float,
    eval_batch: int = 64,
) -> dict[str, Any]:
    """Trains ``method`` from every seed at once; returns its curves and its seconds.

    Returns:
        ``{"steps": (E+1,), "val_loss": (S, E+1), "train_loss": (S, E+1), "seconds": float}``:
        the validation loss every ``eval_every`` steps (step 0 included) and the mean
        training-batch loss over the steps before each evaluation (NaN at step 0).
    """
    start = time.perf_counter()
    graphdef, init = _split(make_model)
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    fast = fast_compile_options()
    params, rest = jax.jit(jax.vmap(init), compiler_options=fast)(keys)
    tx = make_optimizer(method, schedule(lr, warmup, steps), weight_decay)
    opt_state = jax.jit(jax.vmap(tx.init), compiler_options=fast)(params)
    train, evaluate = _programs(graphdef, tx, eval_every, batch_size, context)
    data = jnp.asarray(train_tokens)
    batch_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)

    # the validation windows go to the device once, not at every evaluation
    val_parts = [
        jnp.asarray(val_windows[lo : lo + eval_batch])
        for lo in range(0, len(val_windows), eval_batch)
    ]

    def val_loss(params, rest) -> np.ndarray:
        total = np.zeros(len(seeds))
        for part in val_parts:
            total += np.asarray(evaluate(params, rest, part)) * len(part)
        return total / len(val_windows)

    val, train_loss = [val_loss(params, rest)], [np.full(len(seeds), np.nan)]
    for first in range(0, steps, eval_every):
        params, rest, opt_state, mean = train(params, rest, opt_state, batch_keys, first, data)
        train_loss.append(np.asarray(mean))
        val.append(val_loss(params, rest))
    return {
        "steps": np.arange(0, steps + 1, eval_every),
        "val_loss": np.stack(val, axis=1),
        "train_loss": np.stack(train_loss, axis=1),
        "seconds": time.perf_counter() - start,
    }
