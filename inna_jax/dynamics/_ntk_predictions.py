r"""Function-space predictions of a linearized network trained on MSE: train and test outputs.

For a network :math:`f(x, \theta)` linearized at its initial parameters,
:math:`f^{lin}(x, \theta) = f(x, \theta_0) + J(x)(\theta - \theta_0)`, trained on the mean
squared error :math:`L = \frac{1}{2n}\sum_{i=1}^n \|f(x_i) - y_i\|^2`, the training error
:math:`e = f(X) - y` (length :math:`nC`) obeys a linear ODE driven by :math:`\Theta/n`, with
:math:`\Theta = K(X, X)` the empirical NTK (Jacot et al. 2018; Lee et al. 2019):

.. math::

    \text{gd: } \dot e = -\tfrac{1}{n}\Theta e, \quad
    \text{heavy\_ball: } \ddot e + a\dot e + \tfrac{1}{n}\Theta e = 0, \quad
    \text{nesterov: } \ddot e + \tfrac{r}{t}\dot e + \tfrac{1}{n}\Theta e = 0,

from rest, the function-space forms of the ODEs of Bu, Xu and Chen (AISTATS 2021, §3). The
parameters move only along :math:`J^\top`, :math:`\theta(t) - \theta_0 = J(X)^\top w(t)`, so
:math:`e(t) - e_0 = \Theta w(t)`, and any other input follows as
:math:`f(x_*, t) = f(x_*, 0) + K(x_*, X)\,w(t)`. In the eigenbasis
:math:`\Theta/n = Q\Lambda Q^\top`, with :math:`\phi_\lambda(t)` the error profile of one mode
(:math:`e^{-\lambda t}` for gradient flow, the two-root solution for heavy ball, the Bessel
profile for Nesterov; see :func:`inna_jax.dynamics.function_space_closed_form`):

.. math::

    e(t) = Q\,\phi(t)\,Q^\top e_0, \qquad
    w(t) = \tfrac{1}{n} Q\,\frac{\phi(t) - 1}{\Lambda}\,Q^\top e_0.

As :math:`t \to \infty`, :math:`\phi \to 0` on every mode with :math:`\lambda > 0`, which is
kernel regression: :math:`f(x_*) = f(x_*, 0) - K(x_*, X)\,\Theta^{+}(f(X, 0) - y)`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import jax
import numpy as np

from inna_jax._validation import concrete_float
from inna_jax.dynamics._function_space import _hyper, _mode_profile
from inna_jax.gauss_newton._gram import ntk_gram


class NTKPredictions(NamedTuple):
    r"""Outputs of the linearized network along training (see :func:`ntk_predictions`).

    Attributes:
        ts: the times, shape ``(T,)`` (``inf`` for the limit).
        train: :math:`f(X, t)`, shape ``(T, n)`` or ``(T, n, C)``.
        test: :math:`f(x_*, t)`, shape ``(T, m)`` or ``(T, m, C)``; ``None`` without test
            inputs.
        kernel_train: :math:`\Theta = K(X, X)`, ``(nC, nC)``.
        kernel_test_train: :math:`K(x_*, X)`, ``(mC, nC)``, or ``None``.
    """

    ts: np.ndarray
    train: np.ndarray
    test: np.ndarray | None
    kernel_train: np.ndarray
    kernel_test_train: np.ndarray | None


def _profiles(method: str, lam: np.ndarray, ts: np.ndarray, hyper: float) -> np.ndarray:
    """phi(t) per mode, (T, N), with t = inf as the limit (0 on modes with lambda > 0)."""
    finite = np.isfinite(ts)
    phi = np.empty((ts.shape[0], lam.shape[0]))
    if finite.any():
        phi[finite] = _mode_profile(method, lam, ts[finite], hyper)
    phi[~finite] = np.where(lam > 0, 0.0, 1.0)
    return phi


def ntk_predictions(
    predict_fn: Any,
    params: Any,
    x_train: Any,
    y_train: Any,
    ts: Any,
    x_test: Any = None,
    *,
    method: str = "gd",
    friction: float | None = None,
    damping: float | None = None,
    implementation: str = "auto",
) -> NTKPredictions:
    r"""Train and test outputs of the linearized network trained on MSE, at times ``ts``.

    The network is linearized at ``params`` and trained on
    :math:`L = \frac{1}{2n}\sum_i\|f(x_i) - y_i\|^2` by gradient flow (``"gd"``: gradient
    descent with step :math:`\eta` at :math:`t = k\eta`), heavy ball (``"heavy_ball"``,
    friction :math:`a = (1 - b)/\sqrt\eta`, :math:`t = k\sqrt\eta`) or Nesterov
    (``"nesterov"``, damping :math:`r` in :math:`r/t`, :math:`t = k\sqrt s`). The kernels
    :math:`\Theta = K(X, X)` and :math:`K(x_*, X)` come from :func:`inna_jax.ntk_gram` (all
    outputs, no trace), and the solution from the eigendecomposition of :math:`\Theta/n` in
    NumPy float64 (see the module). A time ``inf`` gives the limit, kernel regression
    (``"heavy_ball"`` with zero friction has none).

    Args:
        predict_fn: ``predict_fn(params, x)``, outputs ``(b,)`` or ``(b, C)``.
        params: the parameters at which the network is linearized (its initialisation).
        x_train: the ``n`` training inputs.
        y_train: the targets, of the shape of ``predict_fn(params, x_train)``.
        ts: times :math:`\ge 0`, ``inf`` allowed.
        x_test: other inputs whose outputs to follow, or ``None``.
        method: ``"gd"``, ``"heavy_ball"`` or ``"nesterov"``.
        friction: "heavy_ball" only: :math:`a \ge 0`; ``None`` means 1.
        damping: "nesterov" only: :math:`r > 0`; ``None`` means 3.
        implementation: how :func:`inna_jax.ntk_gram` builds the kernels.

    Returns:
        An :class:`NTKPredictions`.

    Raises:
        ValueError: for an unknown method, a hyperparameter of another method, targets of
            the wrong shape, negative times, or ``inf`` with zero friction.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax.dynamics import ntk_predictions
        >>> predict = lambda w, x: x @ w  # linear: the kernel is X X^T
        >>> x, y = jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([1.0, 1.0])
        >>> x_test = jnp.array([[1.0, 1.0]])
        >>> out = ntk_predictions(predict, jnp.zeros(2), x, y, [0.0, jnp.inf], x_test)
        >>> out.train[-1].round(6).tolist(), out.test[-1].round(6).tolist()  # fits, w = (1, 1/2)
        ([1.0, 1.0], [1.5])

    References:
        Lee, Xiao, Schoenholz, Bahri, Novak, Sohl-Dickstein, Pennington, "Wide Neural Networks
        of Any Depth Evolve as Linear Models Under Gradient Descent", NeurIPS 2019, §2.
        Bu, Xu and Chen, AISTATS 2021, §3 (heavy ball and Nesterov in the NTK regime).
    """
    hyper = cast(float, concrete_float(_hyper(method, friction, damping)))
    times = np.atleast_1d(np.asarray(ts, dtype=np.float64))
    if times.ndim != 1 or not np.all(times >= 0) or np.isnan(times).any():
        raise ValueError(f"ts must be a 1-D array of times >= 0 (inf allowed), got {ts!r}")
    if method == "heavy_ball" and hyper == 0 and np.isinf(times).any():
        raise ValueError("ts=inf needs friction > 0: heavy ball without friction never settles")
    f0 = np.asarray(predict_fn(params, x_train), np.float64)
    y = np.asarray(y_train, np.float64)
    if y.shape != f0.shape:
        raise ValueError(
            f"y_train must have the shape of the outputs {f0.shape}, got shape {y.shape}"
        )
    n = f0.shape[0]
    # one compiled program per kernel: ntk_gram run eagerly dispatches op by op
    gram = jax.jit(lambda p, x: ntk_gram(predict_fn, p, x, implementation=implementation))
    theta = np.asarray(gram(params, x_train), np.float64)
    lam, q = np.linalg.eigh((theta + theta.T) / (2 * n))
    tiny = max(float(lam[-1]), 0.0) * lam.shape[0] * np.finfo(np.float64).eps * 10
    lam = np.where(lam > tiny, lam, 0.0)
    c = q.T @ (f0 - y).reshape(-1)
    phi = _profiles(method, lam, times, hyper)  # (T, N)
    train = y.reshape(-1)[None] + (phi * c[None]) @ q.T
    test = k_test = None
    if x_test is not None:
        f0_test = np.asarray(predict_fn(params, x_test), np.float64)
        cross = jax.jit(
            lambda p, a, b: ntk_gram(predict_fn, p, a, b, implementation=implementation)
        )
        k_test = np.asarray(cross(params, x_test, x_train), np.float64)
        safe = np.where(lam > 0, lam, 1.0)
        gain = np.where(lam[None] > 0, (phi - 1.0) / safe[None], 0.0)  # (T, N)
        w = ((gain * c[None]) @ q.T) / n  # (T, nC)
        test = f0_test.reshape(-1)[None] + w @ k_test.T
        test = test.reshape(times.shape[0], *f0_test.shape)
    return NTKPredictions(
        ts=times,
        train=train.reshape(times.shape[0], *f0.shape),
        test=test,
        kernel_train=theta,
        kernel_test_train=k_test,
    )


__all__ = ["NTKPredictions", "ntk_predictions"]
