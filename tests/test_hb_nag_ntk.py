"""The dynamics-ntk experiment: a tiny run end to end, its outputs and the width trend."""

import csv
import json

import numpy as np
import pytest
from jax.random import PRNGKey

from inna_jax import cli
from inna_jax.dynamics import analytic_relu_ntk, predicted_rate
from inna_jax.reproduce import hb_nag_ntk


def test_cli_registers_dynamics_ntk_with_documented_flags():
    parser = cli.build_parser()
    args = parser.parse_args(["dynamics-ntk", "--n", "40", "--widths", "16", "64", "--full"])
    assert args._module is hb_nag_ntk
    assert (args.n, args.widths, args.full) == (40, [16, 64], True)
    sub = parser._subparsers._group_actions[0].choices["dynamics-ntk"]
    for action in sub._actions:
        if action.dest != "help":
            assert action.help, f"flag {action.option_strings} has no help text"


def test_tiny_run_writes_outputs_and_gap_closes_with_width(tmp_path):
    summary = hb_nag_ntk.run(
        out=tmp_path,
        n=40,
        width=64,
        widths=(16, 512),
        steps=40,
        sweep_steps=20,
        learning_rate=0.05,
        momenta=(0.5,),
        dampings=(3.0,),
        sweep_configs=(("gd", 0.0), ("nesterov", 3.0)),
        verbose=False,
    )
    for name in (
        "rates.csv",
        "curves.csv",
        "width_sweep.csv",
        "summary.json",
        "loss_semilog.png",
        "loss_loglog.png",
        "slopes.png",
        "width_sweep.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name

    # the predicted column is the formula on the analytic kernel's lambda_0
    x, _ = hb_nag_ntk.digits_regression(40)
    lambda0 = float(np.linalg.eigvalsh(np.asarray(analytic_relu_ntk(x)))[0])
    assert summary["lambda_0"] == pytest.approx(lambda0, rel=1e-6)
    rows = {
        (r["method"], float(r["hyper"])): r for r in csv.DictReader(open(tmp_path / "rates.csv"))
    }
    assert set(rows) == {("gd", 0.0), ("heavy_ball", 0.5), ("nesterov", 3.0)}
    a = 0.5 / np.sqrt(0.05)
    assert float(rows[("heavy_ball", 0.5)]["predicted"]) == pytest.approx(
        -2 * predicted_rate("heavy_ball", lambda0, friction=a)
    )
    assert float(rows[("nesterov", 3.0)]["predicted"]) == -3.0
    for r in rows.values():  # every loss falls
        assert float(r["slope_discrete"]) < 0 and float(r["slope_ntk_ode"]) < 0

    # the parameter-space ODE of the network approaches the NTK ODE as the width grows
    sweep = json.loads((tmp_path / "summary.json").read_text())["width_sweep"]
    for method in ("gd", "nesterov"):
        narrow, wide = (r for r in sweep if r["method"] == method)
        assert narrow["width"] == 16 and wide["width"] == 512
        assert wide["gap_param_ode_vs_ntk_ode"] < 0.5 * narrow["gap_param_ode_vs_ntk_ode"], method
        assert wide["gap_network_vs_linear"] < 0.5 * narrow["gap_network_vs_linear"], method
    assert sweep[-1]["kernel_error"] < 0.5 * sweep[0]["kernel_error"]

    # the curves (float64 here, tests/conftest.py) come from the discrete runners of
    # inna_jax.dynamics: they are the three methods on the network's own gradient and on the
    # NTK model's, as NumPy transcriptions compute them
    n, width, lr = 40, 64, 0.05
    w0, signs = (np.asarray(a) for a in hb_nag_ntk.init_network(PRNGKey(0), width, 64, "float64"))
    kernel = np.asarray(analytic_relu_ntk(x), np.float64)
    y = hb_nag_ntk.digits_regression(n)[1]

    def predict(w):
        return np.maximum(x @ w.T, 0.0) @ signs / np.sqrt(width)

    def grad(w):
        error = predict(w) - y
        return ((error[:, None] * (x @ w.T > 0)) * signs / np.sqrt(width)).T @ x

    curves = list(csv.DictReader(open(tmp_path / "curves.csv")))
    for method, hyper in (("gd", 0.0), ("heavy_ball", 0.5), ("nesterov", 3.0)):
        rows = [r for r in curves if (r["method"], float(r["hyper"])) == (method, hyper)]
        assert len(rows) == 41
        net = _np_method(grad, w0, method, hyper, lr, 40)
        lin = _np_method(lambda u: kernel @ (u - y), predict(w0), method, hyper, lr, 40)
        for key, path, fn in (("discrete", net, predict), ("linear", lin, lambda u: u)):
            expected = [0.5 * np.sum((fn(p) - y) ** 2) / n for p in path]
            got = [float(r[key]) for r in rows]
            np.testing.assert_allclose(got, expected, rtol=1e-9, err_msg=f"{method} {key}")


def _np_method(grad, x0, method, hyper, lr, steps):
    """NumPy transcriptions: GD; Polyak's heavy ball with momentum b (theta_{-1} = theta_0);
    Nesterov with momentum (k-1)/(k+r-1) (Su, Boyd, Candès 2016, equation (1))."""
    path, x, prev, y = [x0], x0.copy(), x0.copy(), x0.copy()
    for k in range(1, steps + 1):
        if method == "gd":
            x = x - lr * grad(x)
        elif method == "heavy_ball":
            x, prev = x - lr * grad(x) + hyper * (x - prev), x
        else:
            x_new = y - lr * grad(y)
            y = x_new + (k - 1) / (k + hyper - 1) * (x_new - x)
            x = x_new
        path.append(x)
    return path


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"learning_rate": -0.05},
            "learning_rate must be a finite number > 0, got learning_rate=-0.05",
        ),
        ({"steps": 4}, "steps must be an integer >= 8, got steps=4"),
        ({"widths": ()}, "widths must hold at least one width"),
        ({"momenta": (0.5, 1.0)}, "momenta must be numbers in [0, 1), got 1.0 in momenta"),
        ({"dampings": (0.0,)}, "dampings must be finite numbers > 0, got 0.0 in dampings"),
        ({"sweep_configs": (("adam", 0.0),)}, "sweep_configs must be (method, hyperparameter)"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError) as info:
        hb_nag_ntk.run(out=tmp_path, verbose=False, **kwargs)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert not any(tmp_path.iterdir())  # refused before anything was computed or written
