"""One test suite for every optimizer of the project (after optax's own common tests).

Every optimizer sees the same problems, written as least-squares residual models so that the
Gauss-Newton methods (EGN, SGN) can take them too: ``predict(params, x)`` gives one residual
per example (one-hot rows ``x`` pick it), the targets are fixed, and the loss is
``mean(0.5 * (predict(params, x) - y) ** 2)``, EGN's "mse". Gradient methods get
``jax.grad`` of that loss; EGN and SGN get ``inputs=x, targets=y``.

Checks, each for every optimizer: convergence on a parabola and on Rosenbrock, extra keyword
arguments accepted (also through ``optax.chain``), no recompilation on the second update,
``optax.inject_hyperparams`` giving the plain numbers, dtypes stable under ``lax.cond`` and
``lax.scan``, bf16 parameters staying bf16, and the update under ``jax.jit`` with parameters
and state sharded over 8 CPU devices giving the unsharded result. Strict dtype promotion is
on for the whole file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import inna_jax


# --------------------------------------------------------------------------------------
# Problems: least-squares residual models.
# --------------------------------------------------------------------------------------
class Problem(NamedTuple):
    name: str
    params0: Any
    minimizer: Any  # of the loss without weight decay
    predict: Callable[[Any, jax.Array], jax.Array]
    inputs: jax.Array
    targets: jax.Array

    def loss(self, params):
        residual = self.predict(params, self.inputs) - self.targets
        return jnp.mean(0.5 * residual**2)


def parabola(dtype=jnp.float64) -> Problem:
    """Residuals theta - t: the loss is |theta - t|^2 / 6."""
    target = jnp.array([1.0, -2.0, 3.0], dtype)
    return Problem(
        "parabola",
        params0=jnp.zeros(3, dtype),
        minimizer=target,
        predict=lambda p, x: x @ p,
        inputs=jnp.eye(3, dtype=dtype),
        targets=target,
    )


def rosenbrock(dtype=jnp.float64) -> Problem:
    """Residuals (10 (y - x^2), 1 - x) with zero targets: the loss is Rosenbrock / 4."""

    def predict(p, x):
        residuals = jnp.stack([10 * (p[1] - p[0] ** 2), 1 - p[0]])
        return x @ residuals

    return Problem(
        "rosenbrock",
        params0=jnp.array([-1.2, 1.0], dtype),
        minimizer=jnp.array([1.0, 1.0], dtype),
        predict=predict,
        inputs=jnp.eye(2, dtype=dtype),
        targets=jnp.zeros(2, dtype),
    )


def regression(dtype=jnp.float64) -> Problem:
    """A small tanh regression with a (16, 2) weight and a bias, for the sharding check."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(24, 16)), dtype)
    y = jnp.asarray(np.tanh(rng.normal(size=(24, 2))), dtype)
    params = {
        "w": jnp.asarray(rng.normal(size=(16, 2)) / 4, dtype),
        "b": jnp.zeros(2, dtype),
    }
    return Problem(
        "regression",
        params0=params,
        minimizer=None,
        predict=lambda p, x: jnp.tanh(x @ p["w"] + p["b"]),
        inputs=x,
        targets=y,
    )


# --------------------------------------------------------------------------------------
# The optimizers under test.
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Spec:
    """An optimizer of the project: ``factory(**kwargs(problem))``."""

    factory: Callable[..., optax.GradientTransformation]
    kwargs: Callable[[Problem], dict]
    static_args: tuple[str, ...] = ()
    needs_batch: bool = False  # EGN/SGN: update(..., inputs=x, targets=y)
    steps: tuple[int, int] = (2000, 20000)  # convergence steps: parabola, Rosenbrock

    def make(self, problem: Problem) -> optax.GradientTransformation:
        return self.factory(**self.kwargs(problem))

    def extra_args(self, problem: Problem) -> dict:
        return dict(inputs=problem.inputs, targets=problem.targets) if self.needs_batch else {}


def _inna_kwargs(**extra):
    def kwargs(problem):
        if problem.name == "rosenbrock":
            base = dict(learning_rate=0.02, alpha=1.0, beta=0.1)
        else:
            base = dict(learning_rate=0.1, alpha=0.5, beta=0.1)
        return base | extra

    return kwargs


def _cosine_decay(peak: float, steps: int) -> optax.Schedule:
    """peak * (1 + cos(pi k / steps)) / 2, in float64 and strict-promotion safe.

    (optax.cosine_decay_schedule mixes the int32 count with floats, which strict promotion
    refuses when optax.inject_hyperparams evaluates it.)"""

    def schedule(count):
        k = jnp.minimum(jnp.asarray(count).astype(jnp.float64), float(steps))
        return peak * 0.5 * (1.0 + jnp.cos(np.pi * k / steps))

    return schedule


def _innaprop_kwargs(problem):
    # A decaying step: with a constant one, the RMS-scaled step keeps a size ~ gamma * beta.
    steps = 20000 if problem.name == "rosenbrock" else 2000
    peak = 0.01 if problem.name == "rosenbrock" else 0.05
    return dict(
        learning_rate=_cosine_decay(peak, steps),
        alpha=0.1,
        beta=0.9,
        weight_decay=0.0,
    )


def _gauss_newton_kwargs(problem):
    # zero-residual problems: a tiny regularizer gives Newton-like steps; the regression
    # (24 examples, 34 parameters) keeps a well-conditioned system with 1e-2
    lam = 1e-2 if problem.name == "regression" else 1e-6
    return dict(predict_fn=problem.predict, loss="mse", learning_rate=1.0, regularizer=lam)


_GN_STATIC = ("predict_fn", "loss", "line_search", "adaptive_regularization", "armijo_max_trials")

SPECS = {
    "inna": Spec(inna_jax.inna, _inna_kwargs()),
    "inna_s0": Spec(inna_jax.inna, _inna_kwargs(initial_speed=0.0)),
    "inna_s1": Spec(inna_jax.inna, _inna_kwargs(initial_speed=1.0)),
    "inna_coupled_decay": Spec(inna_jax.inna, _inna_kwargs(weight_decay=1e-3)),
    "inna_decoupled_decay": Spec(inna_jax.inna, _inna_kwargs(decoupled_weight_decay=1e-3)),
    "transform": Spec(
        inna_jax.transform,
        lambda problem: _inna_kwargs()(problem),
    ),
    "innaprop": Spec(inna_jax.innaprop, _innaprop_kwargs),
    "egn": Spec(inna_jax.egn, _gauss_newton_kwargs, _GN_STATIC, needs_batch=True, steps=(20, 200)),
    "sgn": Spec(
        inna_jax.sgn,
        _gauss_newton_kwargs,
        (*_GN_STATIC, "cg_iterations"),
        needs_batch=True,
        steps=(20, 200),
    ),
}
NAMES = list(SPECS)


def _step_fn(spec: Spec, tx, problem: Problem):
    """The un-jitted ``(params, state) -> (params, state)`` of one update."""

    def step(params, state):
        grads = jax.grad(problem.loss)(params)
        updates, state = tx.update(grads, state, params, **spec.extra_args(problem))
        return optax.apply_updates(params, updates), state

    return step


def _run(spec, tx, problem, steps, params=None):
    step = _step_fn(spec, tx, problem)
    params = problem.params0 if params is None else params

    @jax.jit
    def go(params):
        return jax.lax.fori_loop(0, steps, lambda _, c: step(*c), (params, tx.init(params)))

    return go(params)


def _expected_minimizer(name: str, problem: Problem, kwargs: dict):
    """Where each optimizer converges: the minimizer, or for INNA with weight decay the zero
    of its fixed-point equation ``beta * grad J(theta) + c * theta = 0`` with
    ``c = mu + lam (1 - gamma mu)`` (coupled ``lam``, decoupled ``mu``, step ``gamma``),
    found by Newton's method from the minimizer."""
    lam = kwargs.get("weight_decay", 0.0) if name.startswith("inna") else 0.0
    mu = kwargs.get("decoupled_weight_decay", 0.0) if name.startswith("inna") else 0.0
    if lam == 0.0 and mu == 0.0:
        return problem.minimizer
    c = mu + lam * (1 - kwargs["learning_rate"] * mu)
    field = lambda p: kwargs["beta"] * jax.grad(problem.loss)(p) + c * p
    newton = jax.jit(lambda p: p - jnp.linalg.solve(jax.jacfwd(field)(p), field(p)))
    theta = problem.minimizer
    for _ in range(30):
        theta = newton(theta)
    assert float(jnp.max(jnp.abs(field(theta)))) < 1e-14
    return theta


# Measured max distances to the expected point after spec.steps, float64: INNA variants
# 4e-15 (parabola) and 2e-14 (Rosenbrock); INNAprop 0 and 1.5e-5 (its RMS-scaled step shrinks
# only with the cosine schedule); EGN and SGN 0 and 0.
TOLERANCE = {"parabola": 1e-10, "rosenbrock": 1e-10}
TOLERANCE_INNAPROP = {"parabola": 1e-10, "rosenbrock": 1e-4}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("make_problem", [parabola, rosenbrock], ids=["parabola", "rosenbrock"])
def test_converges(name, make_problem):
    spec, problem = SPECS[name], make_problem()
    kwargs = spec.kwargs(problem)
    steps = spec.steps[0 if problem.name == "parabola" else 1]
    params, _ = _run(spec, spec.make(problem), problem, steps)
    expected = _expected_minimizer(name, problem, kwargs)
    tol = (TOLERANCE_INNAPROP if name == "innaprop" else TOLERANCE)[problem.name]
    np.testing.assert_allclose(params, expected, atol=tol, rtol=0)


# --------------------------------------------------------------------------------------
# The optax contract.
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_update_accepts_extra_args_also_through_chain(name):
    spec, problem = SPECS[name], parabola()
    tx = spec.make(problem)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    params = problem.params0
    grads = jax.grad(problem.loss)(params)
    extra = spec.extra_args(problem) | dict(value=problem.loss(params), unused_by_anyone=1)
    update = jax.jit(tx.update)
    plain, _ = update(grads, tx.init(params), params, **spec.extra_args(problem))
    updates, _ = update(grads, tx.init(params), params, **extra)
    chained = optax.chain(optax.clip_by_global_norm(1e9), tx)
    via_chain, _ = jax.jit(chained.update)(grads, chained.init(params), params, **extra)
    np.testing.assert_array_equal(updates, plain)
    np.testing.assert_allclose(via_chain, plain, rtol=1e-14, atol=0)


_COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kwargs: (
        _COMPILES.append(event) if event == "/jax/core/compile/backend_compile_duration" else None
    )
)


@pytest.mark.parametrize("name", NAMES)
def test_no_recompilation_on_the_second_update(name):
    spec, problem = SPECS[name], parabola()
    tx = spec.make(problem)
    step = jax.jit(_step_fn(spec, tx, problem))
    params, state = step(problem.params0, tx.init(problem.params0))
    jax.block_until_ready((params, state))
    before = len(_COMPILES)
    params, state = step(params, state)
    jax.block_until_ready((params, state))
    assert len(_COMPILES) == before, "the second update compiled again"


@pytest.mark.parametrize("name", NAMES)
def test_inject_hyperparams_gives_the_same_numbers(name):
    # the parabola: contractive, so a rounding difference in the first step (a constant
    # folded at compile time versus a traced hyperparameter) is not amplified as on Rosenbrock
    spec, problem = SPECS[name], parabola()
    kwargs = spec.kwargs(problem)
    plain = spec.factory(**kwargs)
    injected = optax.inject_hyperparams(spec.factory, static_args=spec.static_args)(**kwargs)
    a, _ = _run(spec, plain, problem, 25)
    b, state = _run(spec, injected, problem, 25)
    assert state.hyperparams  # something was injected
    # measured: at most 2 ulps apart after 25 steps
    np.testing.assert_allclose(b, a, rtol=1e-15, atol=0)


def _dtypes(tree):
    return jax.tree.map(lambda x: jnp.asarray(x).dtype, tree)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_state_dtypes_are_stable_under_cond_and_scan(name, dtype):
    spec, problem = SPECS[name], rosenbrock(dtype)
    tx = spec.make(problem)
    step = _step_fn(spec, tx, problem)
    state0 = tx.init(problem.params0)

    def body(carry, k):
        params, state = carry
        # a data-dependent branch that either steps or keeps the carry, as optax's own test
        carry = jax.lax.cond(k % 3 != 1, lambda: step(params, state), lambda: (params, state))
        return carry, None

    (params, state), _ = jax.jit(lambda p: jax.lax.scan(body, (p, state0), jnp.arange(6)))(
        problem.params0
    )
    assert params.dtype == dtype
    assert _dtypes(state) == _dtypes(state0)
    assert jax.tree.structure(state) == jax.tree.structure(state0)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_parameters_stay_bf16(name):
    spec, problem = SPECS[name], rosenbrock(jnp.bfloat16)
    tx = spec.make(problem)
    params, state0 = problem.params0, tx.init(problem.params0)
    update = jax.jit(tx.update)
    new, state = params, state0
    for _ in range(2):  # two: with initial speed 0, INNA's first step is exactly zero
        grads = jax.grad(problem.loss)(new)
        updates, state = update(grads, state, new, **spec.extra_args(problem))
        assert updates.dtype == jnp.bfloat16
        new = optax.apply_updates(new, updates)
    assert new.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(new))) and bool(jnp.any(new != params))
    assert _dtypes(state) == _dtypes(state0)


def _shard(tree, mesh):
    """Each leaf sharded on its first axis over the 8 devices when it divides, else replicated."""

    def place(x):
        x = jnp.asarray(x)
        spec = P("data") if x.ndim and x.shape[0] % mesh.size == 0 else P()
        return jax.device_put(x, NamedSharding(mesh, spec))

    return jax.tree.map(place, tree)


@pytest.mark.parametrize("name", NAMES)
def test_sharded_update_gives_the_unsharded_result(name):
    assert jax.device_count() == 8, "tests/conftest.py sets 8 host devices"
    mesh = Mesh(np.array(jax.devices()), ("data",))
    spec, problem = SPECS[name], regression()
    tx = spec.make(problem)
    step = jax.jit(_step_fn(spec, tx, problem))
    params, state = problem.params0, tx.init(problem.params0)
    for _ in range(2):  # two steps, so that the state is not the initial one
        params, state = step(params, state)
    expected = step(params, state)
    sharded_params, sharded_state = _shard(params, mesh), _shard(state, mesh)
    assert sharded_params["w"].sharding.spec == P("data")
    got = step(sharded_params, sharded_state)
    # The sharded gradient sums in another order; measured max differences (float64, values
    # of order 0.01 to 1): INNA 4e-18, INNAprop 1e-16, SGN 5e-16, EGN 2.4e-15.
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)


# --------------------------------------------------------------------------------------
# The INNA family: Flax NNX, and the check that INNA is the last link of a chain.
# --------------------------------------------------------------------------------------
INNA_FAMILY = [n for n in NAMES if not SPECS[n].needs_batch]
# The chain check lives in inna_jax.scale_by_inna, which every alias is; one of each alias.
ALIASES = ["inna", "transform", "innaprop"]


@pytest.mark.parametrize("name", INNA_FAMILY)
def test_flax_nnx_optimizer_with_extra_args(name):
    from flax import nnx

    spec, problem = SPECS[name], parabola()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(32, 3)), jnp.float32)
    y = x @ jnp.array([[1.0], [-2.0], [0.5]], jnp.float32) + 0.3
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, spec.make(problem), wrt=nnx.Param)
    loss_fn = lambda m: jnp.mean((m(x) - y) ** 2)

    @nnx.jit
    def train_step(model, optimizer):
        value, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads, value=value)  # an extra argument, as for a line search
        return value

    first = float(loss_fn(model))
    for _ in range(100):
        train_step(model, optimizer)
    # measured: the loss falls by a factor 130 to 200 (INNA variants), 6000 (INNAprop)
    assert float(loss_fn(model)) < 0.1 * first


def _not_last_chains(tx):
    return {
        "chain(tx, scale)": optax.chain(tx, optax.scale(0.5)),
        "chain(chain(clip, tx), scale)": optax.chain(
            optax.chain(optax.clip_by_global_norm(1.0), tx), optax.scale(0.5)
        ),
        "chain(MultiSteps(tx), scale)": optax.chain(
            optax.MultiSteps(tx, every_k_schedule=1), optax.scale(0.5)
        ),
        "named_chain(tx, scale)": optax.named_chain(("inna", tx), ("scale", optax.scale(0.5))),
    }


@pytest.mark.parametrize("name", ALIASES)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_a_link_after_inna_is_refused(name, jit):
    spec, problem = SPECS[name], parabola()
    params = problem.params0
    grads = jax.grad(problem.loss)(params)
    for label, chained in _not_last_chains(spec.make(problem)).items():
        update = jax.jit(chained.update) if jit else chained.update
        with jax.numpy_dtype_promotion("standard"):  # optax.MultiSteps promotes internally
            state = chained.init(params)
            with pytest.raises(ValueError, match="must be the last link of an optax.chain"):
                update(grads, state, params)
            message = ""
            try:
                update(grads, state, params)
            except ValueError as error:
                message = str(error)
        assert "\n" not in message, f"{label}: the message is not one line"


@pytest.mark.parametrize("name", ALIASES)
def test_inna_last_or_wrapped_is_accepted(name):
    spec, problem = SPECS[name], parabola()
    params = problem.params0
    grads = jax.grad(problem.loss)(params)
    wrapped = {
        "chain(clip, tx)": optax.chain(optax.clip_by_global_norm(1.0), spec.make(problem)),
        "chain(scale, chain(clip, tx))": optax.chain(
            optax.scale(1.0), optax.chain(optax.clip(1.0), spec.make(problem))
        ),
        "named_chain(clip, tx)": optax.named_chain(
            ("clip", optax.clip(1.0)), ("inna", spec.make(problem))
        ),
        "MultiSteps": optax.MultiSteps(spec.make(problem), every_k_schedule=2),
        "apply_if_finite": optax.apply_if_finite(spec.make(problem), max_consecutive_errors=2),
        "inject_hyperparams": optax.inject_hyperparams(spec.factory)(**spec.kwargs(problem)),
    }
    for label, tx in wrapped.items():
        with jax.numpy_dtype_promotion("standard"):  # MultiSteps and apply_if_finite promote
            state = tx.init(params)
            step = jax.jit(tx.update)
            p = params
            for _ in range(2):
                updates, state = step(grads, state, p)
                p = optax.apply_updates(p, updates)
        assert bool(jnp.all(jnp.isfinite(p))), label


# --------------------------------------------------------------------------------------
# Arguments: one line naming the argument, the value and what is allowed.
# --------------------------------------------------------------------------------------
BAD_ARGUMENTS = [
    (inna_jax.inna, dict(learning_rate="0.1"), "learning_rate must be a real number"),
    (inna_jax.inna, dict(learning_rate=True), "learning_rate must be a real number"),
    (inna_jax.inna, dict(learning_rate=[0.1]), "learning_rate must be a scalar"),
    (inna_jax.inna, dict(learning_rate=0.1, alpha=1j), "alpha must be a real number"),
    (inna_jax.inna, dict(learning_rate=0.1, beta="big"), "beta must be a real number"),
    (inna_jax.transform, dict(learning_rate="0.1"), "learning_rate must be a real number"),
    (inna_jax.transform, dict(alpha=-1.0), "alpha must be a finite number > 0"),
    (inna_jax.scale_by_inna, dict(learning_rate=0.1, rms_decay=1.0), "rms_decay must lie in"),
    (inna_jax.innaprop, dict(learning_rate="1e-3"), "learning_rate must be a real number"),
    (inna_jax.innaprop, dict(learning_rate=0.9), "learning_rate must be < beta"),
    (inna_jax.innaprop, dict(learning_rate=3.0, alpha=2.0, beta=2.0), "learning_rate must be <"),
    (inna_jax.innaprop, dict(sigma=1.0), r"sigma must lie in \[0, 1\), got sigma=1.0"),
    (inna_jax.innaprop, dict(sigma=-0.5), "sigma must lie in"),
    (inna_jax.innaprop, dict(eps=-1e-8), "eps must be a finite number >= 0"),
    (inna_jax.innaprop, dict(weight_decay=-0.01), "weight_decay must be a finite number >= 0"),
    (inna_jax.innaprop, dict(alpha=0.0), "alpha must be a finite number > 0"),
]


@pytest.mark.parametrize(
    "factory, kwargs, fragment",
    BAD_ARGUMENTS,
    ids=[f"{f.__name__}-{'-'.join(map(str, k))}" for f, k, _ in BAD_ARGUMENTS],
)
def test_bad_arguments_raise_one_line_naming_them(factory, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        factory(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("factory", [inna_jax.inna, inna_jax.transform, inna_jax.innaprop])
def test_unknown_keyword_arguments_are_errors(factory):
    with pytest.raises(TypeError, match="lr"):
        factory(lr=0.1)


# --------------------------------------------------------------------------------------
# What users bring: masked INNA beside another optimizer, integer and Python-scalar leaves,
# schedules, empty batches.
# --------------------------------------------------------------------------------------
def _split_problem():
    rng = np.random.default_rng(3)
    params = {"w": jnp.asarray(rng.normal(size=(3, 2))), "b": jnp.asarray(rng.normal(size=2))}
    grads = [
        jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), params) for _ in range(6)
    ]
    return params, grads


def _run_updates(tx, params, grads, jit):
    update = jax.jit(tx.update) if jit else tx.update
    state = tx.init(params)
    for g in grads:
        updates, state = update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


@pytest.mark.parametrize("name", ALIASES)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_masked_inna_beside_another_optimizer_equals_multi_transform(name, jit):
    spec = SPECS[name]
    make = lambda: spec.make(parabola())
    params, grads = _split_problem()
    on_w, on_b = {"w": True, "b": False}, {"w": False, "b": True}
    with jax.numpy_dtype_promotion("standard"):  # optax.adam promotes internally
        split = {
            "chain(masked(inna), masked(adam))": optax.chain(
                optax.masked(make(), on_w), optax.masked(optax.adam(1e-3), on_b)
            ),
            "named_chain(masked(inna), masked(adam))": optax.named_chain(
                ("inna", optax.masked(make(), on_w)), ("adam", optax.masked(optax.adam(1e-3), on_b))
            ),
            "chain(chain(clip, masked(inna)), masked(adam))": optax.chain(
                optax.chain(optax.clip(1e9), optax.masked(make(), on_w)),
                optax.masked(optax.adam(1e-3), on_b),
            ),
        }
        labels = {"w": "inna", "b": "adam"}
        reference = optax.multi_transform({"inna": make(), "adam": optax.adam(1e-3)}, labels)
        expected = _run_updates(reference, params, grads, jit)
        for label, tx in split.items():
            got = _run_updates(tx, params, grads, jit)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
                np.testing.assert_array_equal(a, b, err_msg=label)
    # and INNA's leaves did move as INNA moves them alone
    alone = _run_updates(make(), params["w"], [g["w"] for g in grads], jit)
    np.testing.assert_array_equal(expected["w"], alone)


@pytest.mark.parametrize("name", ALIASES)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_a_later_link_touching_inna_leaves_is_refused_with_multi_transform_spelling(name, jit):
    spec = SPECS[name]
    params, grads = _split_problem()
    overlapping = optax.chain(
        optax.masked(spec.make(parabola()), {"w": True, "b": False}),
        optax.masked(optax.scale(0.5), {"w": True, "b": True}),
    )
    update = jax.jit(overlapping.update) if jit else overlapping.update
    with pytest.raises(ValueError) as info:
        update(grads[0], overlapping.init(params), params)
    message = str(info.value)
    assert "\n" not in message
    assert "link 1 of 2" in message and "changes updates['w']" in message
    assert "optax.multi_transform({'inna': inna_jax.inna(...)" in message


@pytest.mark.parametrize("name", NAMES)
def test_integer_parameters_are_refused_by_name(name):
    spec, problem = SPECS[name], parabola()
    tx = spec.make(problem)
    params = {"w": problem.params0, "n": jnp.array([5, 5])}
    fragment = r"takes floating-point parameters only, got params\['n'\] of dtype int64"
    with pytest.raises(ValueError, match=fragment) as info:
        tx.init(params)
    assert "\n" not in str(info.value)
    # update refuses them too (a state built without them, as when the tree changed)
    state = tx.init({"w": problem.params0, "n": jnp.array([5.0, 5.0])})
    grads = {"w": jax.grad(problem.loss)(problem.params0), "n": jnp.zeros(2)}
    with pytest.raises(ValueError, match=fragment):
        tx.update(grads, state, params, **spec.extra_args(problem))


def _scalar_leaf_problem():
    """A one-parameter residual model w * x - y, for Python-float leaves."""
    x = jnp.array([[1.0], [2.0]])
    y = jnp.array([0.5, 1.5])
    predict = lambda p, x: x[:, 0] * p["w"]
    return Problem("scalar", {"w": 1.0}, None, predict, x, y)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_python_scalar_leaves_work_as_in_optax(name, jit):
    # optax.adam(...).init({"w": 1.0}) works; each optimizer takes a Python float leaf as
    # JAX's default float (float64 here), giving bit for bit what jnp.asarray(1.0) gives
    spec = SPECS[name]
    problem = _scalar_leaf_problem()
    tx = spec.make(parabola()._replace(predict=problem.predict))
    step = _step_fn(spec, tx, problem)
    step = jax.jit(step) if jit else step
    results = []
    for params in ({"w": 1.0}, {"w": jnp.asarray(1.0, jnp.float64)}):
        state0 = tx.init(params)
        p, state = params, state0
        for _ in range(3):
            p, state = step(p, state)
        assert _dtypes(state) == _dtypes(state0)
        assert p["w"].dtype == jnp.float64 and bool(p["w"] != 1.0)
        results.append((p, state))
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1]), strict=True):
        np.testing.assert_array_equal(a, b)


_NEGATIVE_LATER = lambda k: 0.1 - 0.05 * jnp.asarray(k, jnp.float64)  # 0.1, 0.05, 0, -0.05


@pytest.mark.parametrize("name", ALIASES)
def test_a_negative_schedule_is_refused_where_its_value_is_known(name):
    spec, problem = SPECS[name], parabola()
    kwargs = spec.kwargs(problem)
    with pytest.raises(ValueError, match=r"learning_rate\(0\) = -0.1") as info:
        spec.factory(**(kwargs | dict(learning_rate=lambda k: -0.1))).init(problem.params0)
    assert "\n" not in str(info.value)
    # eager updates check the value at the current count: the fourth update (count 3)
    tx = spec.factory(**(kwargs | dict(learning_rate=_NEGATIVE_LATER)))
    params, state = problem.params0, tx.init(problem.params0)
    for _ in range(3):
        updates, state = tx.update(jax.grad(problem.loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    with pytest.raises(ValueError, match=r"finite values >= 0, got learning_rate\(3\) = -0.05"):
        tx.update(jax.grad(problem.loss)(params), state, params)


def test_innaprop_schedules_are_checked_against_beta_where_known():
    with pytest.raises(ValueError, match=r"must be < beta .* learning_rate\(0\) = 0.95"):
        inna_jax.innaprop(optax.constant_schedule(0.95), alpha=0.1, beta=0.9).init(jnp.ones(2))
    rising = lambda k: 0.45 * jnp.asarray(k, jnp.float64)  # 0, 0.45, 0.9
    tx = inna_jax.innaprop(rising, alpha=0.1, beta=0.9)
    params, state = jnp.ones(2), tx.init(jnp.ones(2))
    for _ in range(2):
        updates, state = tx.update(jnp.ones(2), state, params)
        assert bool(jnp.all(jnp.isfinite(updates)))
    with pytest.raises(ValueError, match=r"learning_rate\(2\) = 0.9 .* beta=0.9"):
        tx.update(jnp.ones(2), state, params)


@pytest.mark.parametrize("name", ["egn", "sgn"])
def test_gauss_newton_schedules_must_stay_positive_where_known(name):
    spec, problem = SPECS[name], parabola()
    kwargs = spec.kwargs(problem)
    with pytest.raises(ValueError, match=r"finite values > 0, got learning_rate\(0\) = 0.0"):
        spec.factory(**(kwargs | dict(learning_rate=lambda k: 0.0))).init(problem.params0)
    tx = spec.factory(**(kwargs | dict(learning_rate=_NEGATIVE_LATER)))
    params, state = problem.params0, tx.init(problem.params0)
    step = _step_fn(spec, tx, problem)
    for _ in range(2):
        params, state = step(params, state)
    with pytest.raises(ValueError, match=r"learning_rate\(2\) = 0.0"):
        step(params, state)


@pytest.mark.parametrize("name", ["egn", "sgn", "egn_direction"])
@pytest.mark.parametrize("empty", ["inputs", "targets"])
def test_an_empty_batch_is_refused_by_name(name, empty):
    predict = lambda w, x: x @ w
    x, y = jnp.ones((3, 2)), jnp.ones(3)
    batch = dict(inputs=x, targets=y) | {empty: jnp.ones((0, 2)) if empty == "inputs" else y[:0]}
    fragment = rf"{empty} must hold a batch of at least one example .* got an array of shape \(0"
    with pytest.raises(ValueError, match=fragment) as info:
        if name == "egn_direction":
            inna_jax.egn_direction(predict, jnp.zeros(2), batch["inputs"], batch["targets"])
        else:
            tx = getattr(inna_jax, name)(predict)
            tx.update(None, tx.init(jnp.zeros(2)), jnp.zeros(2), **batch)
    assert "\n" not in str(info.value)


def test_egn_docstring_shows_the_current_fit_call():
    # fit always passes the batch; its extra_args argument is deprecated
    assert "extra_args=True" not in inna_jax.egn.__doc__
    assert "fit(..., mesh=data_mesh(n))" in inna_jax.egn.__doc__
