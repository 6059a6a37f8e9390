r"""Linear-quadratic policy evaluation: the system, its exact value, sampled transitions.

A linear system :math:`x' = Ax + Bu + w`, :math:`w \sim \mathcal N(0, W)`, run under a fixed
linear policy :math:`u = Kx`, pays :math:`x^\top Q x + u^\top R u` per step, discounted by
:math:`\gamma`. With :math:`A_K = A + BK` and :math:`Q_K = Q + K^\top R K`, the value
:math:`V(x) = \mathbb E\,\sum_t \gamma^t (x_t^\top Q x_t + u_t^\top R u_t)` is quadratic,
:math:`V(x) = x^\top P x + c`, because the Bellman equation

.. math::

    V(x) = x^\top Q_K x + \gamma\,\mathbb E_w V(A_K x + w)
         = x^\top (Q_K + \gamma A_K^\top P A_K) x + \gamma \operatorname{tr}(PW) + \gamma c

holds for every :math:`x` exactly when :math:`P = Q_K + \gamma A_K^\top P A_K` (a discrete
Lyapunov equation, solvable when :math:`\sqrt\gamma A_K` is stable) and
:math:`c = \gamma \operatorname{tr}(PW) / (1 - \gamma)`. A model that is linear in the
quadratic features :math:`(x_i x_j)_{i \le j}` and a constant can represent :math:`V` exactly,
which makes this the test bed with a closed-form answer for fitted temporal-difference
learning (Bradtke and Barto 1996; Tu and Recht 2018).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg


class LQRProblem(NamedTuple):
    """A discounted linear-quadratic system under a fixed linear policy (a pytree of arrays).

    Attributes:
        A: state matrix, ``(n, n)``.
        B: input matrix, ``(n, m)``.
        K: the policy's gain, ``u = K x``, ``(m, n)``.
        Q: state cost, ``(n, n)``, symmetric positive semidefinite.
        R: input cost, ``(m, m)``, symmetric positive semidefinite.
        W: covariance of the process noise ``w``, ``(n, n)``.
        gamma: the discount factor in (0, 1).
    """

    A: jax.Array
    B: jax.Array
    K: jax.Array
    Q: jax.Array
    R: jax.Array
    W: jax.Array
    gamma: jax.Array


def make_lqr(
    seed: int = 0,
    *,
    state_dim: int = 4,
    action_dim: int = 2,
    gamma: float = 0.9,
    noise: float = 0.1,
    open_loop_radius: float = 1.1,
    dtype: jax.typing.DTypeLike | None = None,
) -> LQRProblem:
    r"""A random LQR policy-evaluation problem whose fixed policy stabilises an unstable system.

    :math:`A` is a Gaussian matrix rescaled to spectral radius ``open_loop_radius`` (unstable
    for values above 1), :math:`B` is Gaussian, :math:`Q = I`, :math:`R = 0.1 I`,
    :math:`W = \text{noise}^2 I`, and the policy :math:`K = -(R_d + B^\top X B)^{-1} B^\top X A`
    is the optimal gain for other weights (:math:`Q_d = 2I`, :math:`R_d = I`, :math:`X` from
    the discrete algebraic Riccati equation), so it stabilises the system without being the
    optimal policy of the cost that is evaluated.

    Args:
        seed: NumPy seed of the random matrices.
        state_dim: :math:`n \ge 1`.
        action_dim: :math:`m \ge 1`.
        gamma: the discount factor in (0, 1).
        noise: the standard deviation of each noise coordinate, :math:`\ge 0`.
        open_loop_radius: the spectral radius of :math:`A`, > 0.
        dtype: the arrays' dtype (default: JAX's default float).

    Returns:
        An :class:`LQRProblem`.

    Raises:
        ValueError: for a dimension below 1, a ``gamma`` outside (0, 1), a negative noise or
            a non-positive radius.

    Example:
        >>> import numpy as np
        >>> from inna_jax import rl
        >>> problem = rl.make_lqr(0)
        >>> bool(np.max(np.abs(np.linalg.eigvals(problem.A + problem.B @ problem.K))) < 1)
        True

    References:
        Anderson and Moore, "Optimal Control: Linear Quadratic Methods" (1990), ch. 2.
    """
    for name, value in (("state_dim", state_dim), ("action_dim", action_dim)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
    if not 0 < gamma < 1:
        raise ValueError(f"gamma must be in (0, 1), got gamma={gamma!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be a finite number >= 0, got noise={noise!r}")
    if not open_loop_radius > 0:
        raise ValueError(f"open_loop_radius must be > 0, got open_loop_radius={open_loop_radius!r}")
    rng = np.random.default_rng(seed)
    n, m = int(state_dim), int(action_dim)
    a = rng.standard_normal((n, n))
    a *= open_loop_radius / np.max(np.abs(np.linalg.eigvals(a)))
    b = rng.standard_normal((n, m))
    x = scipy.linalg.solve_discrete_are(a, b, 2.0 * np.eye(n), np.eye(m))
    k = -np.linalg.solve(np.eye(m) + b.T @ x @ b, b.T @ x @ a)
    dtype = dtype or jnp.zeros(()).dtype
    arrays = (a, b, k, np.eye(n), 0.1 * np.eye(m), noise**2 * np.eye(n), gamma)
    return LQRProblem(*(jnp.asarray(v, dtype) for v in arrays))


def lqr_value(problem: LQRProblem) -> tuple[np.ndarray, float]:
    r"""The exact value :math:`V(x) = x^\top P x + c` of the policy, in float64 NumPy.

    :math:`P` solves :math:`P = Q_K + \gamma A_K^\top P A_K`
    (``scipy.linalg.solve_discrete_lyapunov(sqrt(gamma) A_K^T, Q_K)``, whose convention is
    :math:`X - aXa^\top = q`) and :math:`c = \gamma\operatorname{tr}(PW)/(1-\gamma)`; see the
    module docstring for the derivation.

    Args:
        problem: an :class:`LQRProblem`.

    Returns:
        ``(P, c)``: the ``(n, n)`` symmetric matrix and the constant.

    Raises:
        ValueError: when :math:`\sqrt\gamma A_K` is not stable (the value is infinite).

    Example:
        >>> import numpy as np
        >>> from inna_jax import rl
        >>> problem = rl.make_lqr(0)
        >>> p, c = rl.lqr_value(problem)
        >>> a_k = np.asarray(problem.A + problem.B @ problem.K, np.float64)
        >>> q_k = np.asarray(problem.Q + problem.K.T @ problem.R @ problem.K, np.float64)
        >>> bool(np.allclose(p, q_k + 0.9 * a_k.T @ p @ a_k, atol=1e-4))
        True

    References:
        Bradtke and Barto, "Linear least-squares algorithms for temporal difference
        learning", Machine Learning 22 (1996); Tu and Recht, "Least-squares temporal
        difference learning for the linear quadratic regulator", ICML 2018, section 2.
    """
    a, b, k, q, r, w, gamma = (np.asarray(v, np.float64) for v in problem)
    gamma = float(gamma)
    a_k = a + b @ k
    q_k = q + k.T @ r @ k
    radius = float(np.max(np.abs(np.linalg.eigvals(np.sqrt(gamma) * a_k))))
    if radius >= 1:
        raise ValueError(
            f"the policy's discounted closed loop sqrt(gamma)(A + BK) has spectral radius "
            f"{radius:.4g} >= 1: the value is infinite"
        )
    p = scipy.linalg.solve_discrete_lyapunov(np.sqrt(gamma) * a_k.T, q_k)
    p = 0.5 * (p + p.T)
    c = gamma * float(np.trace(p @ w)) / (1.0 - gamma)
    return p, c


def sample_lqr_transitions(
    problem: LQRProblem, key: jax.Array, num: int, *, state_scale: float = 1.0
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""Transitions :math:`(x, \text{cost}, x')` of the policy from states drawn at random.

    :math:`x \sim \mathcal N(0, \text{state\_scale}^2 I)`, :math:`u = Kx`,
    :math:`\text{cost} = x^\top Q x + u^\top R u` and :math:`x' = Ax + Bu + w`,
    :math:`w \sim \mathcal N(0, W)`. Jit- and vmap-safe.

    Args:
        problem: an :class:`LQRProblem`.
        key: a JAX random key.
        num: the number of transitions.
        state_scale: the standard deviation of the sampled states.

    Returns:
        ``(x, cost, x_next)`` of shapes ``(num, n)``, ``(num,)``, ``(num, n)``.

    Example:
        >>> import jax
        >>> from inna_jax import rl
        >>> x, cost, x_next = rl.sample_lqr_transitions(rl.make_lqr(0), jax.random.key(0), 5)
        >>> x.shape, cost.shape, x_next.shape
        ((5, 4), (5,), (5, 4))

    References:
        Tu and Recht, ICML 2018, section 2 (see :func:`lqr_value`).
    """
    n = problem.A.shape[0]
    dtype = problem.A.dtype
    key_x, key_w = jax.random.split(key)
    x = state_scale * jax.random.normal(key_x, (num, n), dtype)
    u = x @ problem.K.T
    cost = jnp.einsum("bi,ij,bj->b", x, problem.Q, x) + jnp.einsum("bi,ij,bj->b", u, problem.R, u)
    # eigh-based sampling accepts a singular (even zero) noise covariance
    w = jax.random.multivariate_normal(key_w, jnp.zeros(n, dtype), problem.W, (num,), method="eigh")
    return x, cost, x @ problem.A.T + u @ problem.B.T + w.astype(dtype)


def quadratic_features(x: jax.Array) -> jax.Array:
    r"""The features :math:`(x_i x_j)_{i \le j}` and a constant 1, shape ``(b, n(n+1)/2 + 1)``.

    With weights :math:`\theta`, :math:`\theta^\top\phi(x) = x^\top P x + c` for the matrix
    and constant of :func:`quadratic_matrix`.

    Args:
        x: states of shape ``(b, n)``.

    Returns:
        The features, upper triangle row by row, then the constant.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax import rl
        >>> rl.quadratic_features(jnp.array([[1.0, 2.0]]))
        Array([[1., 2., 4., 1.]], dtype=float32)

    References:
        Bradtke and Barto (1996), section 6 (see :func:`lqr_value`).
    """
    n = x.shape[-1]
    rows, cols = np.triu_indices(n)
    quad = x[:, rows] * x[:, cols]
    return jnp.concatenate([quad, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)


def quadratic_matrix(theta: jax.Array, state_dim: int) -> tuple[jax.Array, jax.Array]:
    r"""The symmetric :math:`P` and the constant :math:`c` of weights on :func:`quadratic_features`.

    :math:`P_{ii} = \theta_{ii}` and :math:`P_{ij} = P_{ji} = \theta_{ij}/2` for
    :math:`i < j`, so that :math:`x^\top P x + c = \theta^\top \phi(x)`.

    Args:
        theta: weights of shape ``(n(n+1)/2 + 1,)``.
        state_dim: :math:`n`.

    Returns:
        ``(P, c)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from inna_jax import rl
        >>> p, c = rl.quadratic_matrix(jnp.array([1.0, 2.0, 3.0, 4.0]), 2)
        >>> p
        Array([[1., 1.],
               [1., 3.]], dtype=float32)

    References:
        Bradtke and Barto (1996), section 6 (see :func:`lqr_value`).
    """
    n = int(state_dim)
    rows, cols = np.triu_indices(n)
    upper = jnp.zeros((n, n), theta.dtype).at[rows, cols].set(theta[: rows.size])
    return 0.5 * (upper + upper.T), theta[rows.size]
