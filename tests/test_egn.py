"""EGN direction against the dense parameter-space Gauss-Newton step, and the optimizer logic."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg
from jax.flatten_util import ravel_pytree

import inna_jax

D_IN, HIDDEN = 3, 5


def _params(key, c):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k1, (D_IN, HIDDEN)),
        "b1": 0.3 * jax.random.normal(k2, (HIDDEN,)),
        "w2": jax.random.normal(k3, (HIDDEN, c)) / np.sqrt(HIDDEN),
    }


def _predict(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


def _predict_scalar(p, x):
    return _predict(p, x)[:, 0]


def _problem(loss, b, seed=0):
    """(predict_fn, params, x, y, C) with C = 2 (mse), 3 (cross-entropy), 1 (binary)."""
    c = {"mse": 2, "cross_entropy": 3, "binary_cross_entropy": 1}[loss]
    kp, kx, ky = jax.random.split(jax.random.key(seed), 3)
    params = _params(kp, c)
    x = jax.random.normal(kx, (b, D_IN))
    if loss == "mse":
        y = jax.random.normal(ky, (b, c))
    elif loss == "cross_entropy":
        y = jax.random.randint(ky, (b,), 0, c)
    else:
        y = jax.random.bernoulli(ky, 0.5, (b,)).astype(jnp.float64)
    fn = _predict_scalar if c == 1 else _predict
    return fn, params, x, y, c


def _textbook(fn, params, x, y, loss, lam, c, curvature="JtQJ"):
    """-((1/b) J^T Q J + lam I)^{-1} g with Q and g written out per the textbook."""
    flat, unravel = ravel_pytree(params)
    b = x.shape[0]
    jac = np.asarray(jax.jit(jax.jacfwd(lambda f: fn(unravel(f), x).reshape(-1)))(flat))
    f = np.asarray(fn(params, x)).reshape(b, c)
    blocks, residual = [], []
    for i in range(b):
        if loss == "mse":
            q, r = np.eye(c), f[i] - np.asarray(y[i])
        elif loss == "cross_entropy":
            p = np.exp(f[i] - f[i].max())
            p /= p.sum()
            q, r = np.diag(p) - np.outer(p, p), p - np.eye(c)[int(y[i])]
        else:
            p = 1 / (1 + np.exp(-f[i, 0]))
            q, r = np.array([[p * (1 - p)]]), np.array([p - float(y[i])])
        if curvature == "JtLtLJ":  # a known pitfall (Q = L L^T used as L^T L)
            low = np.linalg.cholesky(q + 1e-12 * np.eye(c))
            q = low.T @ low
        blocks.append(q)
        residual.append(r)
    big_q = scipy.linalg.block_diag(*blocks)
    g = jac.T @ np.concatenate(residual) / b
    h = jac.T @ big_q @ jac / b + lam * np.eye(flat.size)
    return -np.linalg.solve(h, g)


# one compiled direction per (predict_fn, loss, implementation, chunk_size); lambda is traced
_direction = jax.jit(
    inna_jax.egn_direction,
    static_argnums=(0,),
    static_argnames=("loss", "implementation", "chunk_size"),
)


def _flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


LOSSES = ["mse", "cross_entropy", "binary_cross_entropy"]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("b", [4, 40])  # P is 30, 35 or 25: b*C < P and b > P
def test_direction_equals_dense_gauss_newton(loss, b):
    fn, params, x, y, c = _problem(loss, b)
    p = _flat(params).size
    assert (b * c < p) if b == 4 else (b > p)
    # each implementation on the small batch; "auto" (a per-layer mix) on the large one
    implementations = ("structured", "jacobian", "matrix_free") if b == 4 else ("auto",)
    for implementation in implementations:
        for lam in (1e-6, 1e-3, 1.0, 10.0):
            d = _direction(
                fn,
                params,
                x,
                y,
                loss=loss,
                regularizer=lam,
                implementation=implementation,
                chunk_size=7,
            )
            assert jax.tree.structure(d) == jax.tree.structure(params)
            expected = _textbook(fn, params, x, y, loss, lam, c)
            gap = _rel(_flat(d), expected)
            assert gap < 1e-8, (implementation, lam, gap)


def test_direction_equals_dense_gauss_newton_with_p_near_1000():
    kp, kx, ky = jax.random.split(jax.random.key(11), 3)
    k1, k2, k3 = jax.random.split(kp, 3)
    params = {
        "w1": jax.random.normal(k1, (20, 40)) / np.sqrt(20),
        "b1": 0.1 * jax.random.normal(k2, (40,)),
        "w2": jax.random.normal(k3, (40, 3)) / np.sqrt(40),
    }
    x = jax.random.normal(kx, (16, 20))
    y = jax.random.randint(ky, (16,), 0, 3)
    assert _flat(params).size == 960
    for lam in (1e-6, 1.0, 10.0):
        d = _direction(_predict, params, x, y, loss="cross_entropy", regularizer=lam)
        expected = _textbook(_predict, params, x, y, "cross_entropy", lam, 3)
        assert _rel(_flat(d), expected) < 1e-8, lam


def test_dense_check_catches_the_JtLtLJ_pitfall():
    fn, params, x, y, c = _problem("cross_entropy", 6)
    d = _flat(_direction(fn, params, x, y, loss="cross_entropy", regularizer=1e-3))
    wrong = _textbook(fn, params, x, y, "cross_entropy", 1e-3, c, curvature="JtLtLJ")
    assert _rel(wrong, d) > 1e-2


def test_probability_targets_equal_integer_labels():
    fn, params, x, y, c = _problem("cross_entropy", 6)
    d_int = egn_flat = _flat(_direction(fn, params, x, y, loss="cross_entropy"))
    d_prob = _flat(_direction(fn, params, x, jax.nn.one_hot(y, c), loss="cross_entropy"))
    np.testing.assert_allclose(d_prob, d_int, rtol=1e-12)
    assert np.all(np.isfinite(egn_flat))


def test_repeated_examples_and_tiny_regularizer_stay_finite():
    fn, params, x, y, c = _problem("mse", 3)
    x_rep, y_rep = jnp.tile(x, (8, 1)), jnp.tile(y, (8, 1))  # 24 rows, only 3 distinct
    # with repeats the batch-space system is singular but M = S^T K S + b*lam*I is SPD
    d = _flat(_direction(fn, params, x_rep, y_rep, loss="mse", regularizer=1e-3))
    np.testing.assert_allclose(d, _textbook(fn, params, x_rep, y_rep, "mse", 1e-3, c), rtol=1e-8)
    for loss in LOSSES:
        fn, params, x, y, _ = _problem(loss, 3)
        reps = (8,) + (1,) * (y.ndim - 1)
        for lam in (1e-20, 1e-300):
            d = _flat(
                _direction(
                    fn, params, jnp.tile(x, (8, 1)), jnp.tile(y, reps), loss=loss, regularizer=lam
                )
            )
            assert np.all(np.isfinite(d)), (loss, lam)


def test_errors():
    fn, params, x, y, _ = _problem("mse", 4)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        inna_jax.egn_direction(fn, params, x, y, loss="hinge")
    with pytest.raises(ValueError, match="unknown loss"):
        inna_jax.egn(fn, loss="hinge")
    with pytest.raises(ValueError, match="do not match"):
        inna_jax.egn_direction(fn, params, x, y[:, :1], loss="mse")
    with pytest.raises(ValueError, match="do not match"):
        inna_jax.egn_direction(fn, params, x, y[:3], loss="mse")
    with pytest.raises(ValueError, match="C >= 2"):
        inna_jax.egn_direction(_predict_scalar, params, x, y[:, 0], loss="cross_entropy")
    for lam in (0.0, -1.0):
        with pytest.raises(ValueError, match="regularizer"):
            inna_jax.egn_direction(fn, params, x, y, loss="mse", regularizer=lam)
        with pytest.raises(ValueError, match="regularizer"):
            inna_jax.egn(fn, "mse", regularizer=lam)
    with pytest.raises(ValueError, match="momentum"):
        inna_jax.egn(fn, momentum=1.0)
    with pytest.raises(ValueError, match="armijo_decrease"):
        inna_jax.egn(fn, line_search=True, armijo_decrease=1.5)
    tx = inna_jax.egn(fn)
    with pytest.raises(ValueError, match="inputs=x, targets=y"):
        tx.update(None, tx.init(params), params)
    with pytest.raises(ValueError, match="do not match"):
        tx.update(None, tx.init(params), params, inputs=x, targets=y[:, 0])


def test_plain_step_is_learning_rate_times_direction():
    fn, params, x, y, _ = _problem("cross_entropy", 8)
    tx = inna_jax.egn(fn, "cross_entropy", learning_rate=0.3, regularizer=0.5)
    updates, state = jax.jit(tx.update)(None, tx.init(params), params, inputs=x, targets=y)
    d = _direction(fn, params, x, y, loss="cross_entropy", regularizer=0.5)
    np.testing.assert_allclose(_flat(updates), 0.3 * _flat(d), rtol=1e-12)
    assert int(state.count) == 1


def _batch_loss(fn, params, x, y):
    f = fn(params, x)
    return 0.5 * jnp.mean(jnp.sum((f - y) ** 2, axis=-1))


def test_armijo_backtracking_matches_a_python_transcription():
    fn, params, x, y, _ = _problem("mse", 10, seed=3)
    lr, c, shrink, grow, trials = 8.0, 0.1, 0.8, 1.5, 15
    tx = inna_jax.egn(fn, "mse", learning_rate=lr, regularizer=1e-2, line_search=True)
    update = jax.jit(tx.update)
    state = tx.init(params)
    prev = lr
    for _ in range(3):
        d = _direction(fn, params, x, y, loss="mse", regularizer=1e-2)
        g = jax.jit(jax.grad(_batch_loss, argnums=1), static_argnums=0)(fn, params, x, y)
        slope = float(optax.tree.vdot(g, d))
        loss0 = float(_batch_loss(fn, params, x, y))
        alpha, k = min(prev * grow, lr), 1
        while True:
            step = jax.tree.map(lambda v, a=alpha: a * v, d)
            new = float(_batch_loss(fn, optax.apply_updates(params, step), x, y))
            if new <= loss0 + c * alpha * slope or k >= trials:
                break
            alpha, k = alpha * shrink, k + 1
        updates, state = update(None, state, params, inputs=x, targets=y)
        assert float(state.step_size) == pytest.approx(alpha, rel=1e-12)
        np.testing.assert_allclose(_flat(updates), alpha * _flat(d), rtol=1e-10)
        params, prev = optax.apply_updates(params, updates), alpha
    assert prev < lr  # the search did backtrack


def test_line_search_constants_are_configurable():
    fn, params, x, y, _ = _problem("mse", 10, seed=3)
    tx = inna_jax.egn(
        fn, "mse", learning_rate=8.0, regularizer=1e-2, line_search=True, armijo_max_trials=1
    )
    _, state = jax.jit(tx.update)(None, tx.init(params), params, inputs=x, targets=y)
    assert float(state.step_size) == 8.0  # one trial: the first step is taken as is
    tx = inna_jax.egn(
        fn, "mse", learning_rate=8.0, regularizer=1e-2, line_search=True, armijo_decrease=0.5
    )
    _, state = jax.jit(tx.update)(None, tx.init(params), params, inputs=x, targets=y)
    k = np.log(float(state.step_size) / 8.0) / np.log(0.5)
    assert k >= 1 and k == pytest.approx(round(k), abs=1e-9)


def test_levenberg_marquardt_moves_lambda_and_the_next_solve_uses_it():
    fn, params, x, y, _ = _problem("mse", 12, seed=1)
    lam0 = 1.0
    # near-exact quadratic model (small step): rho close to 1 > 0.75, so lambda halves
    tx = inna_jax.egn(fn, "mse", 0.05, lam0, adaptive_regularization=True, lm_rule="reference")
    update = jax.jit(tx.update)
    state = tx.init(params)
    updates, state = update(None, state, params, inputs=x, targets=y)
    assert float(state.regularizer) == pytest.approx(0.5 * lam0, rel=1e-12)
    params = optax.apply_updates(params, updates)
    updates2, state = update(None, state, params, inputs=x, targets=y)
    assert float(state.regularizer) == pytest.approx(0.25 * lam0, rel=1e-12)
    with_new = _direction(fn, params, x, y, loss="mse", regularizer=0.5 * lam0)
    with_old = _direction(fn, params, x, y, loss="mse", regularizer=lam0)
    np.testing.assert_allclose(_flat(updates2), 0.05 * _flat(with_new), rtol=1e-10)
    assert _rel(0.05 * _flat(with_old), _flat(updates2)) > 1e-3
    # an overshooting step (4x the Gauss-Newton step): rho < 0.25, lambda grows by 1.5
    tx = inna_jax.egn(fn, "mse", 4.0, 1e-3, adaptive_regularization=True, lm_rule="reference")
    _, state = jax.jit(tx.update)(None, tx.init(params), params, inputs=x, targets=y)
    assert float(state.regularizer) == pytest.approx(1.5e-3, rel=1e-12)
    # clipping to lm_bounds
    tx = inna_jax.egn(
        fn,
        "mse",
        4.0,
        1e-3,
        adaptive_regularization=True,
        lm_rule="reference",
        lm_bounds=(1e-6, 1.2e-3),
    )
    _, state = jax.jit(tx.update)(None, tx.init(params), params, inputs=x, targets=y)
    assert float(state.regularizer) == pytest.approx(1.2e-3, rel=1e-12)


def test_momentum_is_a_bias_corrected_average_of_directions():
    fn, params, x, y, _ = _problem("binary_cross_entropy", 8)
    beta, lr, lam = 0.6, 0.5, 0.1
    tx = inna_jax.egn(fn, "binary_cross_entropy", lr, lam, momentum=beta)
    state = tx.init(params)
    d1 = _flat(_direction(fn, params, x, y, loss="binary_cross_entropy", regularizer=lam))
    u1, state = jax.jit(tx.update)(None, state, params, inputs=x, targets=y)
    np.testing.assert_allclose(_flat(u1), lr * d1, rtol=1e-12)
    params = optax.apply_updates(params, u1)
    d2 = _flat(_direction(fn, params, x, y, loss="binary_cross_entropy", regularizer=lam))
    u2, state = jax.jit(tx.update)(None, state, params, inputs=x, targets=y)
    expected = ((1 - beta) * beta * d1 + (1 - beta) * d2) / (1 - beta**2)
    np.testing.assert_allclose(_flat(u2), lr * expected, rtol=1e-10)


def test_jit_no_recompilation_inject_hyperparams_and_dtype():
    fn, params, x, y, _ = _problem("cross_entropy", 8)
    traces = []

    def counted(p, xx):
        traces.append(1)
        return fn(p, xx)

    tx = inna_jax.egn(counted, "cross_entropy", line_search=True, momentum=0.5)
    update = jax.jit(tx.update)
    state = tx.init(params)
    for _ in range(3):
        updates, state = update(None, state, params, inputs=x, targets=y)
        params = optax.apply_updates(params, updates)
    n = len(traces)
    update(None, state, params, inputs=x, targets=y)
    assert len(traces) == n  # the fourth call reuses the compiled step

    injected = optax.inject_hyperparams(
        inna_jax.egn, static_args=("predict_fn", "loss", "line_search", "armijo_max_trials")
    )(fn, "cross_entropy", learning_rate=0.7, regularizer=0.2)
    plain = inna_jax.egn(fn, "cross_entropy", learning_rate=0.7, regularizer=0.2)
    ui, _ = jax.jit(injected.update)(None, injected.init(params), params, inputs=x, targets=y)
    up, _ = jax.jit(plain.update)(None, plain.init(params), params, inputs=x, targets=y)
    np.testing.assert_allclose(_flat(ui), _flat(up), rtol=1e-12)

    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    tx = inna_jax.egn(fn, "cross_entropy", line_search=True, adaptive_regularization=True)
    u32, s32 = jax.jit(tx.update)(
        None, tx.init(params32), params32, inputs=x.astype(jnp.float32), targets=y
    )
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(u32))
    assert s32.step_size.dtype == jnp.float32 and s32.regularizer.dtype == jnp.float32


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("rule", ["reference", "relative"])
def test_training_decreases_the_loss(loss, rule):
    fn, params, x, y, _ = _problem(loss, 30, seed=2)
    tx = inna_jax.egn(
        fn, loss, 1.0, 1e-2, line_search=True, adaptive_regularization=True, lm_rule=rule
    )
    update = jax.jit(tx.update)
    state = tx.init(params)
    loss_fn = jax.jit(
        lambda p: inna_jax.gauss_newton._loss_roots.mean_loss(
            *inna_jax.gauss_newton._loss_roots.as_matrix(fn(p, x), y, loss), loss
        )
    )
    start = float(loss_fn(params))
    for _ in range(15):
        updates, state = update(None, state, params, inputs=x, targets=y)
        params = optax.apply_updates(params, updates)
    # one full batch: the reference rule lets lambda fall and fits it (measured ratios 0.22,
    # 0.29, 6e-5); the relative floor keeps the steps of a minibatch method (0.38, 0.62, 0.54)
    assert float(loss_fn(params)) < (0.3 if rule == "reference" else 0.7) * start


def test_relative_floor_follows_the_curvature_and_the_step_cap():
    fn, params, x, y, c = _problem("mse", 12, seed=1)
    lr, lam0 = 0.05, 1.0  # a small step: rho > 0.75, so the factor is 0.5
    flat, unravel = ravel_pytree(params)
    jac = np.asarray(jax.jacfwd(lambda f: fn(unravel(f), x).reshape(-1))(flat))
    nu = np.trace(jac @ jac.T) / (12 * 12 * c)  # mean eigenvalue of J^T J / b, S = I
    for kappa in (0.0, 0.3 / (lr * nu), 40.0):
        tx = inna_jax.egn(fn, "mse", lr, lam0, adaptive_regularization=True, lm_floor=kappa)
        _, state = jax.jit(tx.update)(None, tx.init(params), params, inputs=x, targets=y)
        expected = max(0.5 * lam0, kappa * lr * nu)
        assert float(state.regularizer) == pytest.approx(expected, rel=1e-10), kappa
    assert 40.0 * lr * nu > 0.5  # the last floor binds
    with pytest.raises(ValueError, match="unknown lm_rule 'trust'"):
        inna_jax.egn(fn, lm_rule="trust")
    with pytest.raises(ValueError, match="lm_floor"):
        inna_jax.egn(fn, lm_floor=-1.0)


def test_non_finite_trial_gives_no_step_and_raises_lambda():
    # the loss is NaN beyond |w| > 2: a full step from 0 towards w = 3 lands there
    def predict(w, x):
        return x @ w + jnp.where(jnp.max(jnp.abs(w)) > 2.0, jnp.nan, 0.0)

    x, y = jnp.eye(2), jnp.array([3.0, 3.0])
    w = jnp.zeros(2)
    tx = inna_jax.egn(
        predict,
        "mse",
        1.0,
        1e-6,
        line_search=True,
        armijo_max_trials=1,
        adaptive_regularization=True,
        lm_rule="reference",
    )
    updates, state = jax.jit(tx.update)(None, tx.init(w), w, inputs=x, targets=y)
    np.testing.assert_array_equal(updates, np.zeros(2))
    assert float(state.regularizer) == pytest.approx(1.5e-6, rel=1e-12)
    # with the default 15 trials the search backtracks into the finite region instead
    tx = inna_jax.egn(predict, "mse", 1.0, 1e-6, line_search=True)
    updates, _ = jax.jit(tx.update)(None, tx.init(w), w, inputs=x, targets=y)
    assert np.all(np.isfinite(updates)) and 0 < float(updates[0]) <= 2.0


# --- loss roots, batch-space quantities ------------------------------------------------------


def test_hessian_roots_and_the_reduced_cross_entropy_root():
    from inna_jax.gauss_newton._loss_roots import as_matrix, loss_terms

    f = jax.random.normal(jax.random.key(0), (5, 4))
    labels = jnp.array([0, 3, 1, 2, 3])
    p = np.asarray(jax.nn.softmax(f))
    out2d, tgt = as_matrix(f, labels, "cross_entropy")
    for reduced in (False, True):
        t = loss_terms(out2d, tgt, "cross_entropy", reduced=reduced)
        assert t.sqrt_hessian.shape == (5, 4, 3 if reduced else 4)
        for i in range(5):
            s = np.asarray(t.sqrt_hessian[i])
            q = np.diag(p[i]) - np.outer(p[i], p[i])
            np.testing.assert_allclose(s @ s.T, q, atol=1e-15)
            np.testing.assert_allclose(
                s @ np.asarray(t.root_residual[i]), p[i] - np.eye(4)[labels[i]]
            )
    bce = "binary_cross_entropy"
    t = loss_terms(*as_matrix(f[:, 0], jnp.array([1.0, 0, 1, 0, 1]), bce), bce)
    pb = 1 / (1 + np.exp(-np.asarray(f[:, 0])))
    np.testing.assert_allclose(np.asarray(t.sqrt_hessian[:, 0, 0]) ** 2, pb * (1 - pb))


@pytest.mark.parametrize("implementation", ["auto", "matrix_free"])
@pytest.mark.parametrize("loss", LOSSES)
def test_slope_and_curvature_come_from_batch_space(loss, implementation):
    from inna_jax.gauss_newton._egn import _direction as direction_fn

    fn, params, x, y, c = _problem(loss, 7, seed=4)
    lam = 0.3

    @jax.jit
    def pieces(params):
        out = direction_fn(fn, params, x, y, lam, loss=loss, implementation=implementation)
        return out.direction, out.slope, out.root_jd, out.gram_scale, out.gradient_fn()

    d, slope, root_jd, scale, g = pieces(params)
    flat, unravel = ravel_pytree(params)
    g_ref = jax.grad(lambda f: _gn_loss(fn, unravel(f), x, y, loss))(flat)
    np.testing.assert_allclose(_flat(g), g_ref, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(float(slope), float(g_ref @ _flat(d)), rtol=1e-9)
    # |S^T J d|^2 = d^T J^T Q J d (Q = S S^T), and the mean eigenvalue of J^T Q J / b
    jac = np.asarray(jax.jacfwd(lambda f: fn(unravel(f), x).reshape(-1))(flat))
    q = _loss_hessian(fn, params, x, loss, c)
    jd = jac @ _flat(d)
    np.testing.assert_allclose(np.sum(np.asarray(root_jd) ** 2), jd @ q @ jd, rtol=1e-9)
    m = root_jd.shape[1]
    np.testing.assert_allclose(float(scale), np.trace(q @ jac @ jac.T) / (7 * 7 * m), rtol=1e-10)


def _gn_loss(fn, params, x, y, loss):
    from inna_jax.gauss_newton._loss_roots import as_matrix, mean_loss

    return mean_loss(*as_matrix(fn(params, x), y, loss), loss)


def _loss_hessian(fn, params, x, loss, c):
    b = x.shape[0]
    f = np.asarray(fn(params, x)).reshape(b, c)
    blocks = []
    for i in range(b):
        if loss == "mse":
            blocks.append(np.eye(c))
        elif loss == "cross_entropy":
            p = np.exp(f[i] - f[i].max())
            p /= p.sum()
            blocks.append(np.diag(p) - np.outer(p, p))
        else:
            p = 1 / (1 + np.exp(-f[i, 0]))
            blocks.append(np.array([[p * (1 - p)]]))
    return scipy.linalg.block_diag(*blocks)


def test_cholesky_is_factored_once_outside_any_loop():
    from inna_jax.gauss_newton._egn import _cholesky

    m = jnp.eye(6) * 2.0
    eqns = jax.make_jaxpr(_cholesky)(m).jaxpr.eqns
    top = [eqn.primitive.name for eqn in eqns]
    # one factorization at the top; the retry lives only in the while loop's body
    assert top.count("cholesky") == 1 and "while" in top and "cond" not in top
    np.testing.assert_allclose(_cholesky(m), np.sqrt(2.0) * np.eye(6))


def test_cholesky_retries_with_jitter_when_the_factor_is_not_finite():
    from inna_jax.gauss_newton._egn import _cholesky

    m = jnp.array([[1.0, 1.0], [1.0, 1.0 - 1e-12]])  # indefinite by 1e-12: no factor
    assert not np.all(np.isfinite(np.asarray(jax.lax.linalg.cholesky(m))))
    chol = np.asarray(_cholesky(m))
    assert np.all(np.isfinite(chol))
    shift = np.diag(chol @ chol.T - np.asarray(m))  # the jitter that was added
    assert 0 < shift[0] < 1e-10 and np.allclose(chol @ chol.T - np.asarray(m), np.diag(shift))
    # vmapped, one lane needs the retry and the other keeps its exact factor
    both = np.asarray(jax.vmap(_cholesky)(jnp.stack([m, 4.0 * jnp.eye(2)])))
    np.testing.assert_allclose(both[1], 2.0 * np.eye(2))
    assert np.all(np.isfinite(both[0]))


# --- non-finite batches, dtypes, bad labels --------------------------------------------------


def _state_leaves(state):
    return [np.asarray(a) for a in jax.tree.leaves(state)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"momentum": 0.5},
        {"line_search": True, "adaptive_regularization": True, "momentum": 0.3},
    ],
)
def test_a_nan_batch_is_skipped_and_training_goes_on(kwargs):
    fn, params, x, y, _ = _problem("cross_entropy", 12, seed=5)
    tx = inna_jax.egn(fn, "cross_entropy", 0.5, 0.1, **kwargs)
    update = jax.jit(tx.update)
    batches = [(x[:6], y[:6]), (x[6:], y[6:])] * 3
    bad = (x[:6].at[2, 1].set(jnp.nan), y[:6])

    def train(with_bad):
        p, state = params, tx.init(params)
        for k, (xb, yb) in enumerate(batches):
            if with_bad and k == 2:
                before = _state_leaves(state)
                u, state = update(None, state, p, inputs=bad[0], targets=bad[1])
                assert all(np.all(np.asarray(a) == 0) for a in jax.tree.leaves(u))
                for a, b in zip(_state_leaves(state), before, strict=True):
                    np.testing.assert_array_equal(a, b)  # the state is left as it was
            u, state = update(None, state, p, inputs=xb, targets=yb)
            p = optax.apply_updates(p, u)
        return p, state

    clean, clean_state = train(False)
    skipped, skipped_state = train(True)
    assert np.all(np.isfinite(_flat(skipped)))
    np.testing.assert_array_equal(_flat(skipped), _flat(clean))
    assert int(skipped_state.count) == int(clean_state.count) == len(batches)


def test_mixed_bf16_and_f32_parameters_under_strict_promotion():
    params = {
        "w1": (0.3 * jax.random.normal(jax.random.key(0), (3, 4))).astype(jnp.bfloat16),
        "w2": 0.3 * jax.random.normal(jax.random.key(1), (4, 2), jnp.float32),
    }

    def fn(p, x):
        h = jnp.tanh(x.astype(jnp.bfloat16) @ p["w1"]).astype(jnp.float32)
        return h @ p["w2"]

    x = jax.random.normal(jax.random.key(2), (5, 3), jnp.float32)
    y = jax.random.randint(jax.random.key(3), (5,), 0, 2)
    with jax.numpy_dtype_promotion("strict"):
        for kwargs in ({}, {"line_search": True, "adaptive_regularization": True, "momentum": 0.5}):
            tx = inna_jax.egn(fn, "cross_entropy", **kwargs)
            state = tx.init(params)
            assert state.step_size.dtype == jnp.float32
            u, state = jax.jit(tx.update)(None, state, params, inputs=x, targets=y)
            assert u["w1"].dtype == jnp.bfloat16 and u["w2"].dtype == jnp.float32
            assert state.regularizer.dtype == jnp.float32
            assert all(np.all(np.isfinite(np.asarray(a, np.float32))) for a in jax.tree.leaves(u))
            assert float(jnp.max(jnp.abs(u["w2"]))) > 0


def test_cross_entropy_labels_are_checked():
    fn, params, x, y, _ = _problem("cross_entropy", 6)
    with pytest.raises(ValueError, match="targets must be integer class labels .* got float32"):
        inna_jax.egn_direction(fn, params, x, y.astype(jnp.float32), loss="cross_entropy")
    tx = inna_jax.egn(fn, "cross_entropy")
    with pytest.raises(ValueError, match="targets must be integer class labels .* got float64"):
        tx.update(None, tx.init(params), params, inputs=x, targets=y.astype(jnp.float64))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got labels from [0-9] to 3"):
        tx.update(None, tx.init(params), params, inputs=x, targets=y.at[0].set(3))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got labels from -1"):
        inna_jax.egn_direction(fn, params, x, y.at[1].set(-1), loss="cross_entropy")
    # traced labels cannot be checked: an out-of-range one makes the batch loss NaN, and the
    # step is skipped (zero update, state unchanged)
    state = tx.init(params)
    u, new_state = jax.jit(tx.update)(None, state, params, inputs=x, targets=y.at[0].set(7))
    assert all(np.all(np.asarray(a) == 0) for a in jax.tree.leaves(u))
    assert int(new_state.count) == 0


def test_vmapped_runs_equal_separate_runs():
    """Whole EGN runs vmapped over learning rates and initial weights (line search, LM,
    momentum: every branch of the step is traced once)."""
    fn, params, x, y, _ = _problem("cross_entropy", 8, seed=6)
    make = optax.inject_hyperparams(
        inna_jax.egn,
        static_args=("predict_fn", "loss", "line_search", "adaptive_regularization"),
    )
    tx = make(fn, "cross_entropy", 1.0, 0.5, line_search=True, adaptive_regularization=True,
              momentum=0.3)  # fmt: skip

    def run(lr, p):
        state = tx.init(p)
        state.hyperparams["learning_rate"] = lr
        for _ in range(3):
            u, state = tx.update(None, state, p, inputs=x, targets=y)
            p = optax.apply_updates(p, u)
        return p

    lrs = jnp.array([0.4, 1.0])
    starts = jax.tree.map(lambda a: jnp.stack([a, 0.9 * a]), params)
    together = jax.jit(jax.vmap(run))(lrs, starts)
    for r in range(2):
        alone = jax.jit(run)(lrs[r], jax.tree.map(lambda a, r=r: a[r], starts))
        np.testing.assert_allclose(
            _flat(jax.tree.map(lambda a, r=r: a[r], together)), _flat(alone), rtol=1e-10
        )
