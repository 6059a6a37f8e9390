"""INNA: the pure step, psi0, and the optax optimizer against an independent NumPy reference."""

import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import inna_jax

sys.path.insert(0, str(Path(__file__).parent))
from _problems import mlp_problem, optax_path  # noqa: E402


# --------------------------------------------------------------------------------------
# An independent NumPy transcription of the authors' PyTorch optimizer step (Algorithm 1).
# It shares no code with the package: formulas are written from the paper.
# --------------------------------------------------------------------------------------
def numpy_inna_trajectory(
    theta0, grad_fn, *, steps, lr0, alpha, beta, s, decay_power=0.0, weight_decay=0.0, decoupled=0.0
):
    """Returns the list of theta_k (k = 0..steps) as flat float64 NumPy vectors."""
    theta = np.array(theta0, dtype=np.float64)
    psi = None
    out = [theta.copy()]
    for k in range(steps):
        g = np.asarray(grad_fn(theta, k), dtype=np.float64)
        if psi is None:  # psi_0 from the initial velocity -s * grad J(theta_0)
            psi = (1.0 - alpha * beta) * theta - (beta**2 - beta * s) * g
        lr = lr0 / (k + 1.0) ** decay_power
        theta = theta * (1.0 - lr * decoupled)
        phi = (1.0 / beta - alpha) * theta - psi / beta
        theta, psi = (
            theta + lr * (phi - beta * g - weight_decay * theta),
            psi + lr * phi,
        )
        out.append(theta.copy())
    return np.stack(out)


CASES = {
    "constant_lr_s_beta": dict(lr0=0.1, alpha=0.5, beta=0.1, s=0.1),
    "power_decay_weight_decay": dict(
        lr0=0.2, alpha=0.5, beta=0.1, s=0.1, decay_power=0.5, weight_decay=1e-2
    ),
    "s_zero": dict(lr0=0.1, alpha=0.7, beta=0.3, s=0.0),
    "s_one": dict(lr0=0.05, alpha=0.5, beta=0.1, s=1.0, decay_power=0.5),
    "decoupled_decay": dict(lr0=0.1, alpha=0.5, beta=0.2, s=0.2, decoupled=0.05),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_optimizer_matches_numpy_reference_for_300_steps(case):
    cfg = CASES[case]
    steps = 300
    params, flat0, unravel, grad, flat_grad = mlp_problem()
    expected = numpy_inna_trajectory(flat0, flat_grad, steps=steps, **cfg)

    lr = cfg["lr0"]
    if cfg.get("decay_power", 0.0):
        lr = inna_jax.power_decay(cfg["lr0"], cfg["decay_power"])
    tx = inna_jax.inna(
        lr,
        cfg["alpha"],
        cfg["beta"],
        initial_speed=cfg["s"],
        weight_decay=cfg.get("weight_decay", 0.0),
        decoupled_weight_decay=cfg.get("decoupled", 0.0),
    )

    traj = optax_path(tx, params, grad, steps)
    gap = np.max(np.abs(traj - expected[1:]))
    assert np.max(np.abs(expected)) > 0.1  # the trajectory is not trivial
    assert gap < 1e-12, f"max |theta - theta_ref| over 300 steps = {gap:.3e}"


@pytest.mark.parametrize("s", [0.0, 0.1, 1.0])
def test_pure_step_with_psi0_matches_numpy_reference(s):
    steps = 300
    alpha, beta, lr0, q = 0.5, 0.1, 0.1, 0.5
    params, flat0, unravel, grad, flat_grad = mlp_problem(seed=1)
    expected = numpy_inna_trajectory(
        flat0, flat_grad, steps=steps, lr0=lr0, alpha=alpha, beta=beta, s=s, decay_power=q
    )

    @jax.jit
    def run(p):
        psi = inna_jax.inna_psi0(p, grad(p, 0), alpha=alpha, beta=beta, initial_speed=s)

        def body(carry, k):
            p, psi = carry
            lr = lr0 / (k.astype(jnp.float64) + 1.0) ** q
            p, psi = inna_jax.inna_step(
                p, psi, grad(p, k), learning_rate=lr, alpha=alpha, beta=beta
            )
            return (p, psi), jax.flatten_util.ravel_pytree(p)[0]

        return jax.lax.scan(body, (p, psi), jnp.arange(steps))[1]

    gap = np.max(np.abs(np.asarray(run(params)) - expected[1:]))
    assert gap < 1e-12, f"gap {gap:.3e}"


# --------------------------------------------------------------------------------------
# The pure step on pytrees and under JAX transformations.
# --------------------------------------------------------------------------------------
def _numpy_step(t, p, g, lr, a, b, wd=0.0):
    phi = (1 / b - a) * t - p / b
    return t + lr * (phi - b * g - wd * t), p + lr * phi


def test_step_on_pytree_with_none_leaves():
    theta = {
        "a": jnp.array([1.0, 2.0]),
        "frozen": jnp.array([5.0]),
        "nothing": None,
        "nested": (jnp.ones((2, 2)), jnp.array(3.0)),
    }
    psi = jax.tree.map(lambda x: 0.5 * x, theta)
    grad = {
        "a": jnp.array([0.1, -0.2]),
        "frozen": None,
        "nothing": None,
        "nested": (jnp.full((2, 2), 0.3), jnp.array(-1.0)),
    }
    t1, p1 = inna_jax.inna_step(
        theta, psi, grad, learning_rate=0.1, alpha=0.5, beta=0.1, weight_decay=0.01
    )
    assert t1["nothing"] is None and p1["nothing"] is None
    np.testing.assert_array_equal(t1["frozen"], theta["frozen"])
    np.testing.assert_array_equal(p1["frozen"], psi["frozen"])
    for key in [("a",), ("nested", 0), ("nested", 1)]:
        get = lambda tree, key=key: tree[key[0]] if len(key) == 1 else tree[key[0]][key[1]]
        et, ep = _numpy_step(
            np.asarray(get(theta)), np.asarray(get(psi)), np.asarray(get(grad)), 0.1, 0.5, 0.1, 0.01
        )
        np.testing.assert_allclose(get(t1), et, rtol=1e-14)
        np.testing.assert_allclose(get(p1), ep, rtol=1e-14)


def test_step_under_jit_and_vmap_over_hyperparameters():
    rng = np.random.default_rng(0)
    t, p, g = (jnp.asarray(rng.normal(size=(4, 3))) for _ in range(3))
    alphas = jnp.array([0.1, 0.5, 1.0, 2.0])
    step = jax.jit(
        jax.vmap(
            lambda t, p, g, a: inna_jax.inna_step(t, p, g, learning_rate=0.05, alpha=a, beta=0.2)
        )
    )
    t1, p1 = step(t, p, g, alphas)
    for i, a in enumerate(np.asarray(alphas)):
        et, ep = _numpy_step(np.asarray(t[i]), np.asarray(p[i]), np.asarray(g[i]), 0.05, a, 0.2)
        np.testing.assert_allclose(t1[i], et, rtol=1e-14)
        np.testing.assert_allclose(p1[i], ep, rtol=1e-14)


def test_step_under_pmap_on_8_devices():
    n = jax.local_device_count()
    assert n == 8, "tests/conftest.py sets 8 host devices"
    rng = np.random.default_rng(1)
    t, p, g = (jnp.asarray(rng.normal(size=(n, 5))) for _ in range(3))

    def per_device(t, p, g):
        g = jax.lax.pmean(g, "devices")  # the data-parallel pattern: averaged gradients
        return inna_jax.inna_step(t, p, g, learning_rate=0.1, alpha=0.5, beta=0.1)

    t1, p1 = jax.pmap(per_device, axis_name="devices")(t, p, g)
    g_mean = np.asarray(g).mean(0)
    for i in range(n):
        et, ep = _numpy_step(np.asarray(t[i]), np.asarray(p[i]), g_mean, 0.1, 0.5, 0.1)
        np.testing.assert_allclose(t1[i], et, rtol=1e-13)
        np.testing.assert_allclose(p1[i], ep, rtol=1e-13)


def test_step_under_shard_map_on_8_devices():
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    rng = np.random.default_rng(2)
    t, p = (jnp.asarray(rng.normal(size=(16,))) for _ in range(2))
    per_example_grads = jnp.asarray(rng.normal(size=(8, 16)))

    def per_shard(t, p, g):
        g = jax.lax.pmean(jnp.mean(g, axis=0), "data")
        return inna_jax.inna_step(t, p, g, learning_rate=0.1, alpha=0.5, beta=0.1)

    f = jax.jit(
        jax.shard_map(per_shard, mesh=mesh, in_specs=(P(), P(), P("data")), out_specs=(P(), P()))
    )
    g_sharded = jax.device_put(per_example_grads, NamedSharding(mesh, P("data")))
    t1, p1 = f(t, p, g_sharded)
    et, ep = _numpy_step(
        np.asarray(t), np.asarray(p), np.asarray(per_example_grads).mean(0), 0.1, 0.5, 0.1
    )
    np.testing.assert_allclose(t1, et, rtol=1e-13)
    np.testing.assert_allclose(p1, ep, rtol=1e-13)


def test_psi0_formula_and_conventions():
    theta, g = jnp.array([1.0, -2.0]), jnp.array([0.3, 0.7])
    a, b = 0.5, 0.1
    for s in [0.0, b, 1.0, 2.5]:
        psi0 = inna_jax.inna_psi0(theta, g, alpha=a, beta=b, initial_speed=s)
        expected = (1 - a * b) * np.asarray(theta) - b**2 * np.asarray(g) + b * s * np.asarray(g)
        np.testing.assert_allclose(psi0, expected, rtol=1e-15)
        # Invert the change of variable psi = -b v - b^2 g - (ab - 1) theta: v = -s g.
        velocity = (-psi0 - b**2 * g - (a * b - 1) * theta) / b
        np.testing.assert_allclose(velocity, -s * np.asarray(g), atol=1e-14)


# --------------------------------------------------------------------------------------
# The optax optimizer: the usual properties.
# --------------------------------------------------------------------------------------
def _run(tx, loss, params, steps):
    @jax.jit
    def go(params):
        def body(carry, _):
            p, state = carry
            updates, state = tx.update(jax.grad(loss)(p), state, p)
            return (optax.apply_updates(p, updates), state), None

        return jax.lax.scan(body, (params, tx.init(params)), None, length=steps)[0]

    return go(params)


def test_converges_on_parabola():
    loss = lambda p: jnp.sum((p - jnp.array([1.0, -2.0, 3.0])) ** 2)
    params, _ = _run(inna_jax.inna(0.1, 0.5, 0.1), loss, jnp.zeros(3), 1000)
    np.testing.assert_allclose(params, [1.0, -2.0, 3.0], atol=1e-6)


def test_converges_on_rosenbrock():
    def rosenbrock(p):
        return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2

    params, _ = _run(
        inna_jax.inna(0.01, alpha=1.0, beta=0.1), rosenbrock, jnp.array([-1.2, 1.0]), 5000
    )
    np.testing.assert_allclose(params, [1.0, 1.0], atol=1e-6)


def test_lazy_psi0_is_set_at_the_first_update():
    theta, g = jnp.array([1.0, -1.0]), jnp.array([0.5, 2.0])
    a, b, s, lr = 0.5, 0.2, 1.0, 0.1
    tx = inna_jax.inna(lr, a, b, initial_speed=s)
    state = tx.init(theta)
    assert int(state.count) == 0
    updates, state = jax.jit(tx.update)(g, state, theta)
    psi0 = inna_jax.inna_psi0(theta, g, alpha=a, beta=b, initial_speed=s)
    t1, p1 = inna_jax.inna_step(theta, psi0, g, learning_rate=lr, alpha=a, beta=b)
    np.testing.assert_allclose(theta + updates, t1, rtol=1e-15)
    np.testing.assert_allclose(state.psi_minus_theta + t1, p1, rtol=1e-15)
    assert int(state.count) == 1


def test_transform_is_inna_with_alpha_beta_first():
    loss = lambda p: jnp.sum(jnp.cos(p) + p**2)
    p0 = jnp.array([0.3, -1.2, 2.0])
    a, _ = _run(inna_jax.transform(0.3, 0.2, learning_rate=0.05), loss, p0, 50)
    b, _ = _run(inna_jax.inna(0.05, 0.3, 0.2), loss, p0, 50)
    np.testing.assert_array_equal(a, b)
    chained = optax.chain(
        optax.clip_by_global_norm(1e9), inna_jax.transform(0.3, 0.2, learning_rate=0.05)
    )
    c, _ = _run(chained, loss, p0, 50)
    np.testing.assert_array_equal(a, c)


def test_inject_hyperparams_gives_the_same_numbers():
    loss = lambda p: jnp.sum(jnp.sin(p) * p + 0.5 * p**2)
    p0 = jnp.linspace(-1.0, 2.0, 6)
    plain, _ = _run(inna_jax.inna(0.07, 0.6, 0.3, initial_speed=1.0), loss, p0, 40)
    injected_tx = optax.inject_hyperparams(inna_jax.inna)(
        learning_rate=0.07, alpha=0.6, beta=0.3, initial_speed=1.0
    )
    injected, state = _run(injected_tx, loss, p0, 40)
    np.testing.assert_allclose(injected, plain, rtol=1e-14)
    assert set(state.hyperparams) >= {"learning_rate", "alpha", "beta"}


def test_inject_hyperparams_of_transform_gives_the_same_numbers():
    loss = lambda p: jnp.sum(jnp.sin(p) * p + 0.5 * p**2)
    p0 = jnp.linspace(-1.0, 2.0, 6)
    plain, _ = _run(inna_jax.transform(0.6, 0.3, learning_rate=0.07), loss, p0, 40)
    injected_tx = optax.inject_hyperparams(inna_jax.transform)(
        alpha=0.6, beta=0.3, learning_rate=0.07
    )
    injected, state = _run(injected_tx, loss, p0, 40)
    np.testing.assert_allclose(injected, plain, rtol=1e-14)
    assert set(state.hyperparams) == {
        "alpha",
        "beta",
        "learning_rate",
        "weight_decay",
        "decoupled_weight_decay",
    }


def test_update_accepts_and_ignores_extra_keyword_arguments():
    tx = inna_jax.inna(0.1, 0.5, 0.1)
    params, grads = jnp.array([1.0, -2.0]), jnp.array([0.3, 0.1])
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    plain, _ = tx.update(grads, tx.init(params), params)
    extra, _ = tx.update(grads, tx.init(params), params, value=jnp.array(1.0), inputs=None)
    np.testing.assert_array_equal(extra, plain)


def test_inject_hyperparams_changes_take_effect_without_recompiling():
    tx = optax.inject_hyperparams(inna_jax.inna)(learning_rate=0.1, alpha=0.5, beta=0.1)
    params = jnp.array([1.0, 2.0])
    state = tx.init(params)
    update = jax.jit(tx.update)
    g = jnp.array([0.5, -0.5])
    u1, state1 = update(g, state, params)
    old = state1.hyperparams["beta"]
    state1.hyperparams["beta"] = jnp.full_like(old, 0.4)
    u2, _ = update(g, state1, params)
    assert update._cache_size() == 1
    psi = state1.inner_state.psi_minus_theta + params
    et, _ = _numpy_step(np.asarray(params), np.asarray(psi), np.asarray(g), 0.1, 0.5, 0.4)
    np.testing.assert_allclose(params + u2, et, rtol=1e-14)


def test_no_recompilation_on_second_update():
    tx = inna_jax.inna(inna_jax.power_decay(0.1), 0.5, 0.1, initial_speed=1.0)
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(3):
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    assert update._cache_size() == 1


@pytest.mark.parametrize("psi_dtype", [None, jnp.float32])
def test_dtypes_are_preserved_bf16_params_stay_bf16(psi_dtype):
    params = {"w": jnp.ones((4,), jnp.bfloat16), "b": jnp.zeros((2,), jnp.float32)}
    tx = inna_jax.inna(0.1, psi_dtype=psi_dtype)
    state = tx.init(params)
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
    updates, state = jax.jit(tx.update)(grads, state, params)
    new = optax.apply_updates(params, updates)
    assert new["w"].dtype == jnp.bfloat16 and new["b"].dtype == jnp.float32
    assert updates["w"].dtype == jnp.bfloat16
    expected_psi = {"w": psi_dtype or jnp.bfloat16, "b": psi_dtype or jnp.float32}
    for key in params:
        assert state.psi_minus_theta[key].dtype == expected_psi[key]
    assert state.count.dtype == jnp.int32
    # with an f32 psi the bf16 parameter moves by exactly the f32-computed step, rounded once
    if psi_dtype == jnp.float32:
        t, g = np.float32(1.0), np.float32(0.5)
        psi0 = (1 - 0.05) * t
        et, _ = _numpy_step(t, psi0, g, 0.1, 0.5, 0.1)
        assert float(new["w"][0]) == float(jnp.asarray(et, jnp.bfloat16))


def test_float64_state_for_float64_params():
    params = jnp.ones(3, jnp.float64)
    state = inna_jax.inna(0.1).init(params)
    assert state.psi_minus_theta.dtype == jnp.float64


def test_works_with_multisteps_and_apply_if_finite():
    with jax.numpy_dtype_promotion("standard"):  # optax.MultiSteps promotes internally
        _multisteps_and_apply_if_finite()


def _multisteps_and_apply_if_finite():
    loss = lambda p: jnp.sum((p - 2.0) ** 2)
    p0 = jnp.zeros(2)
    # MultiSteps with k=2 and a deterministic gradient: 2N micro-steps == N plain steps.
    # optax 0.2.8 accumulates gradients in float32 even for float64 parameters, so this
    # equivalence is checked in float32, to float32 rounding (two compiled programs).
    p32 = p0.astype(jnp.float32)
    multi, _ = _run(optax.MultiSteps(inna_jax.inna(0.1), every_k_schedule=2), loss, p32, 40)
    plain, _ = _run(inna_jax.inna(0.1), loss, p32, 20)
    too_many, _ = _run(inna_jax.inna(0.1), loss, p32, 40)
    assert multi.dtype == jnp.float32
    np.testing.assert_allclose(multi, plain, rtol=1e-6)
    assert np.max(np.abs(too_many - plain)) > 1e-2

    tx = optax.apply_if_finite(inna_jax.inna(0.1), max_consecutive_errors=3)
    state = tx.init(p0)
    updates, state = tx.update(jnp.array([jnp.nan, 1.0]), state, p0)
    np.testing.assert_array_equal(updates, jnp.zeros(2))
    assert int(state.notfinite_count) == 1
    assert int(state.inner_state.count) == 0  # psi0 still waits for a finite gradient
    updates, state = tx.update(jnp.array([1.0, 1.0]), state, p0)
    assert int(state.inner_state.count) == 1 and bool(jnp.all(updates != 0))


def test_flax_nnx_optimizer():
    from flax import nnx

    with jax.numpy_dtype_promotion("standard"):  # flax promotes f32 params with x64 inputs
        _flax_nnx_optimizer(nnx)


def _flax_nnx_optimizer(nnx):

    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, inna_jax.inna(0.1, 0.5, 0.1), wrt=nnx.Param)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(32, 3)))
    y = x @ jnp.array([[1.0], [-2.0], [0.5]]) + 0.3
    loss_fn = lambda m: jnp.mean((m(x) - y) ** 2)
    first = float(loss_fn(model))
    for _ in range(200):
        grads = nnx.grad(loss_fn)(model)
        optimizer.update(model, grads)
    assert float(loss_fn(model)) < 1e-4 * first


# --------------------------------------------------------------------------------------
# Errors.
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(learning_rate=0.1, alpha=0.0), "alpha=0.0"),
        (dict(learning_rate=0.1, alpha=-1.0), "alpha=-1.0"),
        (dict(learning_rate=0.1, beta=0.0), "beta=0.0"),
        (dict(learning_rate=0.1, beta=-0.5), "beta=-0.5"),
        (dict(learning_rate=-0.1), "learning_rate=-0.1"),
        (dict(learning_rate=math.nan), "learning_rate=nan"),
        (dict(learning_rate=math.inf), "learning_rate=inf"),
        (dict(learning_rate=0.1, initial_speed=-1.0), "initial_speed=-1.0"),
        (dict(learning_rate=0.1, weight_decay=-1e-4), "weight_decay=-0.0001"),
    ],
)
def test_bad_hyperparameters_raise_value_error_naming_them(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.")):
        inna_jax.inna(**kwargs)


def test_update_without_params_says_why():
    tx = inna_jax.inna(0.1)
    state = tx.init(jnp.zeros(2))
    with pytest.raises(ValueError, match="needs the current parameters"):
        tx.update(jnp.ones(2), state)


def test_power_decay_values_and_errors():
    schedule = inna_jax.power_decay(0.3, power=0.25)
    ks = np.arange(10)
    np.testing.assert_allclose(jax.vmap(schedule)(ks), 0.3 * (ks + 1.0) ** -0.25, rtol=1e-15)
    with pytest.raises(ValueError, match="power=-0.5"):
        inna_jax.power_decay(0.1, power=-0.5)
    with pytest.raises(ValueError, match="init_value=-1"):
        inna_jax.power_decay(-1, power=0.5)
