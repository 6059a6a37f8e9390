"""One vocabulary in inna_jax.dynamics: names, defaults, deprecated aliases, refused arguments."""

import inspect
import warnings

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inna_jax
from inna_jax.dynamics import (
    compare,
    convergence_order,
    din_hessian_form,
    din_vector_field,
    discrete_path,
    function_space_closed_form,
    heavy_ball_ode,
    nesterov_ode,
    nesterov_scan,
    predicted_rate,
    solve_din,
    solve_function_space,
    solve_heavy_ball,
    solve_nesterov,
)

A = jnp.array([[2.0, 0.5], [0.5, 1.0]])
THETA0 = jnp.array([1.0, -2.0])
TS = jnp.linspace(0.0, 1.0, 5)
KERNEL = np.array([[2.0, 0.3], [0.3, 0.5]])
U0, Y = np.zeros(2), np.array([1.0, -1.0])


def loss(theta):
    return 0.5 * theta @ A @ theta + jnp.sum(jnp.sin(theta))


GRAD = jax.grad(loss)
STATE = (THETA0, jnp.array([0.3, 0.1]))


def _same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _quiet(fn):
    """Runs ``fn`` with the deprecation warnings of old names silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return fn()


# -- one default per quantity, everywhere ------------------------------------------------------


def test_inna_defaults_are_the_optimizers():
    optimizer = inspect.signature(inna_jax.inna).parameters
    for fn in (solve_din, din_vector_field, din_hessian_form):
        params = inspect.signature(fn).parameters
        assert params["alpha"].default == optimizer["alpha"].default == 0.5, fn
        assert params["beta"].default == optimizer["beta"].default == 0.1, fn
    assert optimizer["initial_speed"].default is None
    assert inspect.signature(solve_din).parameters["initial_speed"].default is None
    # initial_speed=None is s = beta, as in inna
    explicit = solve_din(loss, THETA0, t1=1.0, ts=TS, alpha=0.5, beta=0.1, initial_speed=0.1)
    _same(solve_din(loss, THETA0, t1=1.0, ts=TS), explicit)
    kwargs = {"steps": 5, "learning_rate": 0.1}
    _same(
        compare("inna", loss, THETA0, **kwargs),
        compare("inna", loss, THETA0, alpha=0.5, beta=0.1, initial_speed=0.1, **kwargs),
    )
    assert float(solve_din(loss, THETA0, t1=1.0, ts=TS, beta=0.3).psi[0][0]) == float(
        solve_din(loss, THETA0, t1=1.0, ts=TS, beta=0.3, initial_speed=0.3).psi[0][0]
    )


@pytest.mark.parametrize(
    "name, value, method",
    [("friction", 1.0, "heavy_ball"), ("damping", 3.0, "nesterov")],
)
def test_friction_and_damping_have_one_default_everywhere(name, value, method):
    explicit = {name: value}
    solve = solve_heavy_ball if method == "heavy_ball" else solve_nesterov
    field = heavy_ball_ode if method == "heavy_ball" else nesterov_ode
    _same(solve(loss, THETA0, t1=1.0, ts=TS), solve(loss, THETA0, t1=1.0, ts=TS, **explicit))
    _same(field(GRAD)(0.5, STATE, None), field(GRAD, **explicit)(0.5, STATE, None))
    kwargs = {"steps": 5, "learning_rate": 0.01}
    _same(
        compare(method, loss, THETA0, **kwargs), compare(method, loss, THETA0, **kwargs | explicit)
    )
    _same(
        discrete_path(method, loss, THETA0, **kwargs),
        discrete_path(method, loss, THETA0, **kwargs | explicit),
    )
    ts = np.linspace(0.0, 3.0, 4)
    _same(
        solve_function_space(method, KERNEL, U0, Y, ts),
        solve_function_space(method, KERNEL, U0, Y, ts, **explicit),
    )
    _same(
        function_space_closed_form(method, KERNEL, U0, Y, ts),
        function_space_closed_form(method, KERNEL, U0, Y, ts, **explicit),
    )
    assert predicted_rate(method, 0.2) == predicted_rate(method, 0.2, **explicit)
    assert inspect.signature(solve).parameters[name].default == value
    assert inspect.signature(field).parameters[name].default == value
    if method == "nesterov":
        assert inspect.signature(nesterov_scan).parameters["damping"].default == value


# -- deprecated names ---------------------------------------------------------------------------

HB = {"steps": 5, "learning_rate": 0.01}
ORDER = {"t1": 0.2, "time_step": 0.1, "halvings": 1}
DEPRECATED = {
    "compare heavy_ball damping": (
        lambda: compare("heavy_ball", loss, THETA0, damping=1.5, **HB),
        lambda: compare("heavy_ball", loss, THETA0, friction=1.5, **HB),
        "friction=1.5",
    ),
    "convergence_order heavy_ball damping": (
        lambda: convergence_order("heavy_ball", loss, THETA0, damping=1.5, **ORDER).gaps,
        lambda: convergence_order("heavy_ball", loss, THETA0, friction=1.5, **ORDER).gaps,
        "friction=1.5",
    ),
    "discrete_path heavy_ball damping": (
        lambda: discrete_path("heavy_ball", loss, THETA0, damping=1.5, **HB),
        lambda: discrete_path("heavy_ball", loss, THETA0, friction=1.5, **HB),
        "friction=1.5",
    ),
    "compare nesterov r": (
        lambda: compare("nesterov", loss, THETA0, r=8.0, **HB),
        lambda: compare("nesterov", loss, THETA0, damping=8.0, **HB),
        "damping=8.0",
    ),
    "convergence_order nesterov r": (
        lambda: convergence_order("nesterov", loss, THETA0, r=8.0, **ORDER).gaps,
        lambda: convergence_order("nesterov", loss, THETA0, damping=8.0, **ORDER).gaps,
        "damping=8.0",
    ),
    "solve_heavy_ball damping": (
        lambda: solve_heavy_ball(loss, THETA0, t1=1.0, ts=TS, damping=1.5),
        lambda: solve_heavy_ball(loss, THETA0, t1=1.0, ts=TS, friction=1.5),
        "friction=1.5",
    ),
    "solve_nesterov r": (
        lambda: solve_nesterov(loss, THETA0, t1=1.0, ts=TS, r=8.0),
        lambda: solve_nesterov(loss, THETA0, t1=1.0, ts=TS, damping=8.0),
        "damping=8.0",
    ),
    "heavy_ball_ode damping": (
        lambda: heavy_ball_ode(GRAD, damping=1.5)(0.0, STATE, None),
        lambda: heavy_ball_ode(GRAD, friction=1.5)(0.0, STATE, None),
        "friction=1.5",
    ),
    "nesterov_ode r": (
        lambda: nesterov_ode(GRAD, r=8.0)(0.5, STATE, None),
        lambda: nesterov_ode(GRAD, damping=8.0)(0.5, STATE, None),
        "damping=8.0",
    ),
    "nesterov_scan step": (
        lambda: nesterov_scan(GRAD, THETA0, step=0.01, steps=5),
        lambda: nesterov_scan(GRAD, THETA0, learning_rate=0.01, steps=5),
        "learning_rate=0.01",
    ),
}


@pytest.mark.parametrize("case", sorted(DEPRECATED))
def test_deprecated_names_warn_with_the_new_name_and_mean_the_same(case):
    old, new, replacement = DEPRECATED[case]
    with pytest.warns(DeprecationWarning, match=f"use {replacement}") as record:
        result = old()
    # the warning points at the caller's line, not inside the package
    assert all(w.filename == __file__ for w in record), [w.filename for w in record]
    _same(result, new())


def test_heavy_ball_damping_is_resolved_per_method():
    # old damping= meant heavy ball's a; for Nesterov it now means r, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        nesterov = compare("nesterov", loss, THETA0, damping=8.0, **HB)
    assert not np.array_equal(nesterov.discrete, compare("nesterov", loss, THETA0, **HB).discrete)
    with pytest.raises(TypeError, match="both damping= .* and friction="):
        _quiet(lambda: compare("heavy_ball", loss, THETA0, damping=1.5, friction=1.0, **HB))
    with pytest.raises(TypeError, match="both r= .* and damping="):
        solve_nesterov(loss, THETA0, t1=1.0, r=2.0, damping=4.0)
    with pytest.raises(TypeError, match="both damping= .* and friction="):
        solve_heavy_ball(loss, THETA0, t1=1.0, damping=2.0, friction=4.0)


# -- refused arguments --------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [compare, discrete_path, convergence_order])
@pytest.mark.parametrize(
    "method, kwargs, pattern",
    [
        ("nesterov", {"friction": 2.0}, "friction .*does not apply to method='nesterov'"),
        ("gd", {"alpha": 0.5}, "alpha .*does not apply to method='gd'"),
        ("inna", {"damping": 3.0}, "damping .*does not apply to method='inna'"),
        ("heavy_ball", {"beta": 0.1}, "beta .*does not apply to method='heavy_ball'"),
        ("heavy_ball", {"r": 3.0}, "r .*does not apply to method='heavy_ball'"),
        ("gd", {"initial_speed": 1.0}, "initial_speed .*does not apply to method='gd'"),
    ],
)
def test_hyperparameters_of_another_method_are_refused(fn, method, kwargs, pattern):
    extra = ORDER if fn is convergence_order else HB
    with pytest.raises(ValueError, match=pattern):
        fn(method, loss, THETA0, **extra, **kwargs)


@pytest.mark.parametrize(
    "call, pattern",
    [
        (
            lambda: solve_function_space("nesterov", KERNEL, U0, Y, TS, friction=1.0),
            "friction .*does not apply to method='nesterov'",
        ),
        (
            lambda: solve_function_space("gd", KERNEL, U0, Y, TS, damping=3.0),
            "damping .*does not apply to method='gd'",
        ),
        (
            lambda: function_space_closed_form("heavy_ball", KERNEL, U0, Y, TS, damping=3.0),
            "damping .*does not apply to method='heavy_ball'",
        ),
        (
            lambda: predicted_rate("nesterov", 0.1, friction=2.0),
            "friction .*does not apply to method='nesterov'",
        ),
    ],
)
def test_function_space_refuses_another_methods_hyperparameter(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: compare("heavy_ball", loss, THETA0, frction=1.0, **HB), "compare"),
        (lambda: convergence_order("gd", loss, THETA0, rr=1.0, **ORDER), "convergence_order"),
        (lambda: solve_heavy_ball(loss, THETA0, t1=1.0, frction=1.0), "solve_heavy_ball"),
        (lambda: solve_nesterov(loss, THETA0, t1=1.0, frction=1.0), "solve_nesterov"),
        (
            lambda: nesterov_scan(GRAD, THETA0, learning_rate=0.1, steps=2, frction=1),
            "nesterov_scan",
        ),
        (lambda: heavy_ball_ode(GRAD, frction=1.0), "heavy_ball_ode"),
    ],
)
def test_unknown_keywords_are_errors(call, name):
    with pytest.raises(TypeError, match=rf"{name}\(\) got an unexpected keyword argument"):
        call()


# -- one-line errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: solve_din(loss, THETA0, t1=1.0, beta=0.0),
            "beta must be a finite number > 0, got beta=0.0",
        ),
        (
            lambda: solve_din(loss, THETA0, t1=1.0, alpha="0.5"),
            "alpha must be a finite number > 0, got alpha='0.5'",
        ),
        (
            lambda: solve_din(loss, THETA0, t1=1.0, initial_speed=float("nan")),
            "initial_speed must be a finite number >= 0, got initial_speed=nan",
        ),
        (
            lambda: solve_din(loss, THETA0, t1=1.0, beta=jnp.array([0.1, 0.2])),
            "beta must be a scalar, got an array of shape (2,)",
        ),
        (
            lambda: solve_din(loss, THETA0, t1=-1.0),
            "t1 must be a finite number > 0, got t1=-1.0",
        ),
        (
            lambda: solve_heavy_ball(loss, THETA0, t1=1.0, friction=-1.0),
            "friction must be a finite number >= 0, got friction=-1.0",
        ),
        (
            lambda: solve_nesterov(loss, THETA0, t1=1.0, damping=0.0),
            "damping must be a finite number > 0, got damping=0.0",
        ),
        (
            lambda: compare("nesterov", loss, THETA0, steps=2, learning_rate=0.1, damping=-3.0),
            "damping must be a finite number > 0, got damping=-3.0",
        ),
        (
            lambda: solve_din(
                loss,
                THETA0,
                t1=1.0,
                dt0=1e-3,
                stepsize_controller=diffrax.ConstantStepSize(),
                max_steps=0,
            ),
            "max_steps must be a positive integer, got max_steps=0",
        ),  # fmt: skip
    ],
)
def test_bad_values_raise_one_line_naming_the_argument(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_traced_bad_value_in_a_vmapped_solve_names_the_argument():
    # a vmapped grid with beta = 0 in it used to end in diffrax's max-steps error
    def final(beta):
        return solve_din(loss, THETA0, t1=0.5, beta=beta, ts=jnp.array([0.5])).theta

    np.testing.assert_array_equal(
        jax.vmap(final)(jnp.array([0.1, 0.2])).shape, (2, 1, 2)
    )  # the check costs nothing on good values
    with pytest.raises(eqx.EquinoxRuntimeError, match="beta must be a finite number > 0"):
        jax.vmap(final)(jnp.array([0.1, 0.0]))
