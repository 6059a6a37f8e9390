"""solve_grid: the numbers of a loop of solves, one compilation, the strategy, clear errors."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inna_jax.dynamics import solve_din, solve_grid, solve_heavy_ball
from inna_jax.dynamics._grid import _choose_strategy

THETA0 = jnp.array([-1.0, 1.5])
ALPHAS = jnp.array([0.5, 1.3])
BETAS = jnp.array([0.01, 0.1, 0.3])
TS = jnp.array([0.5, 1.0, 3.0])
FIXED = {"stepsize_controller": diffrax.ConstantStepSize(), "dt0": 1e-3}


def figure1_loss(theta):
    return 100.0 * (theta[1] - jnp.abs(theta[0])) ** 2 + jnp.abs(1.0 - theta[0])


def _loop(**options):
    """The reference: one solve_din per grid point, in a Python loop."""
    return [
        [
            solve_din(figure1_loss, THETA0, alpha=a, beta=b, t1=3.0, ts=TS, **options)
            for b in BETAS.tolist()
        ]
        for a in ALPHAS.tolist()
    ]


@pytest.mark.parametrize(
    "options, strategy, atol",
    [
        # lax.map runs each lane's own solve: bitwise the loop's numbers (measured: 0)
        ({}, "auto", 0.0),
        ({}, "map", 0.0),
        (FIXED, "map", 0.0),
        # vmap batches the arithmetic; with fixed steps the lanes stay in lockstep and differ
        # from the loop by rounding only (measured: 2.8e-13 after 3,000 steps across the kink)
        (FIXED, "auto", 1e-11),
    ],
)
def test_grid_gives_the_loops_numbers(options, strategy, atol):
    grid = {"alpha": ALPHAS[:, None], "beta": BETAS}
    sol = solve_grid(
        solve_din, figure1_loss, THETA0, grid=grid, t1=3.0, ts=TS, strategy=strategy, **options
    )
    assert sol.theta.shape == (2, 3, 3, 2) and sol.num_steps.shape == (2, 3)
    loop = _loop(**options)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(sol.theta[i, j], loop[i][j].theta, rtol=0, atol=atol)
            np.testing.assert_allclose(sol.psi[i, j], loop[i][j].psi, rtol=0, atol=atol)
            assert int(sol.num_steps[i, j]) == int(loop[i][j].num_steps)
            np.testing.assert_array_equal(sol.ts[i, j], TS)
    # and the grid moves: the points end in different places
    assert float(jnp.std(sol.theta[:, :, -1, 0])) > 1e-2


def test_grid_of_another_solve_and_batched_map():
    def quadratic(theta):
        return 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * theta**2)

    frictions = jnp.array([0.0, 0.5, 2.0, 4.0])
    sol = solve_grid(
        solve_heavy_ball,
        quadratic,
        THETA0,
        grid={"friction": frictions},
        t1=2.0,
        ts=TS[:2],
        strategy="map",
        batch_size=2,
    )
    for k, a in enumerate(frictions.tolist()):
        single = solve_heavy_ball(quadratic, THETA0, friction=a, t1=2.0, ts=TS[:2])
        # lax.map(batch_size=2) vmaps pairs of adaptive lanes: equal up to the controller's
        # rounding (measured 4e-15)
        np.testing.assert_allclose(sol.theta[k], single.theta, rtol=0, atol=1e-10)


def test_grid_compiles_once():
    traces = []

    def counted_loss(theta):
        traces.append(1)
        return figure1_loss(theta)

    def solve(alphas, betas):
        grid = {"alpha": alphas, "beta": betas}
        return solve_grid(solve_din, counted_loss, THETA0, grid=grid, t1=1.0, ts=TS[:2])

    first = solve(ALPHAS[:, None], BETAS)
    n_traces = len(traces)
    assert n_traces > 0
    # another grid of the same size, another t1 value: no new trace of the loss
    second = solve(ALPHAS[::-1, None] + 0.1, BETAS * 2)
    again = solve_grid(
        solve_din,
        counted_loss,
        THETA0,
        grid={"alpha": ALPHAS[:, None], "beta": BETAS},
        t1=1.5,
        ts=TS[:2],
    )
    assert len(traces) == n_traces
    assert not np.allclose(first.theta, second.theta)
    assert again.theta.shape == first.theta.shape


def test_strategy_follows_the_step_size_controller():
    assert _choose_strategy("auto", None) == "map"
    assert _choose_strategy("auto", diffrax.PIDController(rtol=1e-3, atol=1e-6)) == "map"
    assert _choose_strategy("auto", diffrax.ConstantStepSize()) == "vmap"
    assert _choose_strategy("auto", diffrax.StepTo(ts=jnp.linspace(0, 1, 3))) == "vmap"
    assert _choose_strategy("map", diffrax.ConstantStepSize()) == "map"
    assert _choose_strategy("auto", None, backend="gpu") == "vmap"
    assert _choose_strategy("vmap", None) == "vmap"


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"grid": {"alpha": ALPHAS, "beta": jnp.array([0.1, 0.0])}},
            ValueError,
            "beta must be a finite number > 0 at every grid point, got beta=0.0 at index 1",
        ),
        (
            {"grid": {"alpha": jnp.array([[0.5, 1.0], [jnp.nan, 1.0]])}},
            ValueError,
            "alpha must be a finite number > 0 at every grid point, got alpha=nan at index (1, 0)",
        ),
        (
            {"grid": {"alpha": ALPHAS, "beta": BETAS}},
            ValueError,
            "the grid arrays must broadcast to one shape",
        ),
        ({"grid": {"friction": ALPHAS}}, ValueError, "grid names must be hyperparameters"),
        ({"grid": {}}, ValueError, "grid must be a non-empty mapping"),
        ({"grid": {"alpha": ALPHAS}, "strategy": "pmap"}, ValueError, "strategy must be one"),
        ({"grid": {"alpha": ALPHAS}, "batch_size": 0}, ValueError, "batch_size must be"),
        (
            {"grid": {"alpha": ALPHAS}, "frction": 1.0},
            TypeError,
            "solve_din() got an unexpected keyword argument 'frction'",
        ),
        (
            {"grid": {"alpha": ALPHAS}, "alpha": 1.0},
            ValueError,
            "alpha is given both in grid and as an option",
        ),
        ({"grid": {"alpha": ALPHAS}, "beta": -1.0}, ValueError, "beta must be a finite number"),
    ],
)
def test_bad_grids_raise_one_line(kwargs, error, message):
    kwargs = {"t1": 1.0} | kwargs
    with pytest.raises(error) as info:
        solve_grid(solve_din, figure1_loss, THETA0, **kwargs)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_only_the_four_solves_are_gridded():
    with pytest.raises(ValueError, match="solve must be one of solve_din"):
        solve_grid(jax.jit, figure1_loss, THETA0, grid={"alpha": ALPHAS}, t1=1.0)
