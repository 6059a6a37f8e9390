"""NTK function-space dynamics: diffrax solves against closed forms, rates, analytic NTK."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.special

from inna_jax import ntk_gram
from inna_jax.dynamics import (
    analytic_relu_ntk,
    fit_log_slope,
    function_space_closed_form,
    predicted_rate,
    solve_function_space,
)


def _problem(n=6, seed=0, low=0.5, high=4.0, eigenvalues=None):
    """A fixed PSD kernel with known spectrum (geometric in [low, high]), u0 and y."""
    rng = np.random.default_rng(seed)
    eigenvalues = np.geomspace(low, high, n) if eigenvalues is None else np.asarray(eigenvalues)
    n = len(eigenvalues)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    kernel = (q * eigenvalues) @ q.T
    return kernel, rng.normal(size=n), rng.normal(size=n), eigenvalues, q


TS = np.linspace(0.0, 6.0, 25)


def test_gd_matches_matrix_exponential():
    kernel, u0, y, _, _ = _problem()
    sol = solve_function_space("gd", kernel, u0, y, TS)
    expected = np.stack([y + scipy.linalg.expm(-kernel * t) @ (u0 - y) for t in TS])
    np.testing.assert_allclose(sol.predictions, expected, rtol=0, atol=1e-8)
    closed = function_space_closed_form("gd", kernel, u0, y, TS)
    np.testing.assert_allclose(closed.predictions, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("friction", [0.7, 2.0, 2 * np.sqrt(0.5)])  # under, over, critical
def test_heavy_ball_matches_matrix_exponential(friction):
    kernel, u0, y, _, _ = _problem()
    n = len(u0)
    block = np.block([[np.zeros((n, n)), np.eye(n)], [-kernel, -friction * np.eye(n)]])
    z0 = np.concatenate([u0 - y, np.zeros(n)])
    expected = np.stack([y + (scipy.linalg.expm(block * t) @ z0)[:n] for t in TS])
    sol = solve_function_space("heavy_ball", kernel, u0, y, TS, friction=friction)
    np.testing.assert_allclose(sol.predictions, expected, rtol=0, atol=1e-8)
    closed = function_space_closed_form("heavy_ball", kernel, u0, y, TS, friction=friction)
    np.testing.assert_allclose(closed.predictions, expected, rtol=0, atol=1e-9)


def test_nesterov_r3_matches_bessel_per_eigendirection():
    kernel, u0, y, eigenvalues, q = _problem()
    ts = TS[1:]
    sol = solve_function_space("nesterov", kernel, u0, y, ts, damping=3.0, t0=1e-5)
    x = np.sqrt(eigenvalues)[None, :] * ts[:, None]
    profile = 2 * scipy.special.j1(x) / x  # X(t) = 2 J1(sqrt(lam) t) / (sqrt(lam) t) X(0)
    expected = y + (profile * (q.T @ (u0 - y))) @ q.T
    np.testing.assert_allclose(sol.predictions, expected, rtol=0, atol=1e-8)


@pytest.mark.parametrize("damping", [2.0, 6.0, 8.0])
def test_nesterov_general_r_closed_form_matches_diffrax(damping):
    # Gamma(nu+1) (2/x)^nu J_nu(x), nu = (r-1)/2, checked against the independent ODE solve.
    kernel, u0, y, _, _ = _problem(seed=1)
    ts = TS[1:]
    sol = solve_function_space("nesterov", kernel, u0, y, ts, damping=damping, t0=1e-5)
    closed = function_space_closed_form("nesterov", kernel, u0, y, ts, damping=damping)
    np.testing.assert_allclose(sol.predictions, closed.predictions, rtol=0, atol=1e-8)


def test_heavy_ball_fitted_rate_within_five_percent_of_formula():
    kernel, u0, y, eigenvalues, _ = _problem(low=0.5, high=4.0)
    friction = 2.0  # a^2 > 4 lambda_0 = 2: c = (2 - sqrt(2)) / 2
    ts = np.linspace(0.0, 40.0, 201)
    sol = solve_function_space("heavy_ball", kernel, u0, y, ts, friction=friction)
    slope = fit_log_slope(ts, sol.loss, t_min=20.0, t_max=40.0)
    rate = predicted_rate("heavy_ball", eigenvalues.min(), friction=friction)
    assert rate == pytest.approx((2 - np.sqrt(2)) / 2)
    # the loss 1/2 |e|^2 decays at twice the rate of |e|
    assert -slope / 2 == pytest.approx(rate, rel=0.05)


def test_gd_fitted_rate_within_five_percent_of_formula():
    kernel, u0, y, eigenvalues, _ = _problem(low=0.5, high=4.0)
    ts = np.linspace(0.0, 40.0, 201)
    sol = solve_function_space("gd", kernel, u0, y, ts)
    # late enough for the next mode (lambda_1 = 0.76) to have died, early enough for the
    # loss to stay far above the solver's absolute tolerance
    slope = fit_log_slope(ts, sol.loss, t_min=10.0, t_max=20.0)
    assert -slope / 2 == pytest.approx(predicted_rate("gd", eigenvalues.min()), rel=0.05)


def test_nesterov_is_not_linear_its_semilog_slope_flattens():
    # Many eigendirections in [2, 10] smooth out the Bessel oscillations; lambda_0 = 1 stands
    # apart so that GD reaches its asymptotic rate before t = 10. A linear method
    # keeps its semilog slope; NAG's loss ~ t^-3 has semilog slope ~ -3/t, so from the window
    # t in [10, 20] to t in [40, 80] it flattens by a factor of about 4. We require >= 3, and
    # that GD and heavy ball on the same problem keep their slope within 5%.
    kernel, u0, y, _, _ = _problem(seed=2, eigenvalues=[1.0, *np.geomspace(2.0, 10.0, 39)])
    ts = np.linspace(0.0, 80.0, 801)
    ratios = {}
    for method, kwargs in [
        ("nesterov", {"damping": 3.0}),
        ("gd", {}),
        ("heavy_ball", {"friction": 1.0}),
    ]:
        loss = function_space_closed_form(method, kernel, u0, y, ts, **kwargs).loss
        early = fit_log_slope(ts, loss, t_min=10.0, t_max=20.0)
        late = fit_log_slope(ts, loss, t_min=40.0, t_max=80.0)
        ratios[method] = early / late
    assert ratios["nesterov"] >= 3.0, ratios
    assert ratios["gd"] == pytest.approx(1.0, abs=0.05), ratios
    assert ratios["heavy_ball"] == pytest.approx(1.0, abs=0.05), ratios
    loss = function_space_closed_form("nesterov", kernel, u0, y, ts).loss
    loglog = fit_log_slope(ts, loss, t_min=10.0, t_max=80.0, loglog=True)
    assert loglog == pytest.approx(-2 * predicted_rate("nesterov", 1.0, damping=3.0), rel=0.1)


def test_solve_is_jittable_with_traced_friction():
    kernel, u0, y, _, _ = _problem()
    solve = jax.jit(
        lambda a: solve_function_space("heavy_ball", kernel, u0, y, TS, friction=a).loss
    )
    closed = function_space_closed_form("heavy_ball", kernel, u0, y, TS, friction=1.3).loss
    np.testing.assert_allclose(solve(jnp.asarray(1.3)), closed, rtol=1e-7)


def test_predicted_rates_and_bad_input():
    assert predicted_rate("gd", 0.3) == 0.3
    assert predicted_rate("heavy_ball", 0.25, friction=0.5) == 0.25  # underdamped: a / 2
    assert predicted_rate("heavy_ball", 0.25, friction=1.0) == 0.5  # optimal a = 2 sqrt(lam)
    assert predicted_rate("nesterov", 0.25, damping=8.0) == 4.0
    with pytest.raises(ValueError, match="method must be one of"):
        predicted_rate("adam", 0.1)
    with pytest.raises(ValueError, match="friction"):
        predicted_rate("heavy_ball", 0.1, friction=-1.0)
    with pytest.raises(ValueError, match="lambda_min"):
        predicted_rate("gd", 0.0)
    with pytest.raises(ValueError, match="damping"):
        solve_function_space("nesterov", np.eye(2), np.zeros(2), np.ones(2), TS, damping=-1.0)
    with pytest.raises(ValueError, match="kernel"):
        solve_function_space("gd", np.eye(3), np.zeros(2), np.ones(2), TS)


def test_finite_width_ntk_approaches_analytic_kernel():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 5)))
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    limit = analytic_relu_ntk(x)

    def predict(w, inputs, a):
        return jax.nn.relu(inputs @ w.T) @ a / jnp.sqrt(a.shape[0])

    errors = []
    for m in (64, 1024, 16384):
        key_w, key_a = jax.random.split(jax.random.PRNGKey(m))
        w = jax.random.normal(key_w, (m, 5))
        a = jax.random.rademacher(key_a, (m,)).astype(w.dtype)
        gram = ntk_gram(functools.partial(predict, a=a), w, x)
        errors.append(float(jnp.linalg.norm(gram - limit) / jnp.linalg.norm(limit)))
    # Monte Carlo over m neurons: error ~ m^(-1/2), a factor 4 per 16x in m.
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.02, errors
    assert errors[0] / errors[2] > 4.0, errors
