r"""Continuous time: DIN and the ODE limits of GD, heavy ball and Nesterov, on diffrax.

- Vector fields on pytrees, ready for ``diffrax.ODETerm``: :func:`din_vector_field`,
  :func:`din_hessian_form`, :func:`gradient_flow`, :func:`heavy_ball_ode`,
  :func:`nesterov_ode`.
- Solves with defaults that survive nonsmooth losses: :func:`solve_din`,
  :func:`solve_gradient_flow`, :func:`solve_heavy_ball`, :func:`solve_nesterov`, and a whole
  grid of hyperparameters in one compiled call: :func:`solve_grid`.
- Discrete against continuous: :func:`compare`, :func:`convergence_order`, and the discrete
  runners alone: :func:`discrete_path`, :func:`nesterov_scan`.
- NTK function-space dynamics of GD, heavy ball and Nesterov on MSE:
  :func:`solve_function_space`, :func:`function_space_closed_form`, :func:`predicted_rate`,
  :func:`fit_log_slope`, and the infinite-width two-layer ReLU kernel :func:`analytic_relu_ntk`.
- A linearized network's train and test outputs along GD, heavy ball or Nesterov, and kernel
  regression at t = inf: :func:`ntk_predictions`.

One vocabulary, with the same defaults everywhere (solvers, vector fields, :func:`compare`,
:func:`convergence_order`, :func:`discrete_path`, the function-space API and
:func:`inna_jax.inna`):

=================================  =================  =====================
quantity                           name               default
=================================  =================  =====================
INNA/DIN friction α > 0            ``alpha``          0.5
INNA/DIN Newtonian damping β > 0   ``beta``           0.1
INNA/DIN initial speed s ≥ 0       ``initial_speed``  ``None``, i.e. s = β
heavy-ball friction a ≥ 0          ``friction``       1.0
Nesterov damping r > 0 in r/t      ``damping``        3.0
step γ, η (HB) or s (NAG)          ``learning_rate``  required
=================================  =================  =====================

A function that serves several methods takes only the chosen method's hyperparameters and
refuses another's (``compare("nesterov", ..., friction=2.0)`` is a ``ValueError``); unknown
keywords are a ``TypeError``. Old names are deprecated aliases that warn: ``r=`` for
``damping``, ``damping=`` for heavy ball's ``friction`` (in :func:`solve_heavy_ball`,
:func:`heavy_ball_ode`, and with method "heavy_ball" in :func:`compare`,
:func:`convergence_order` and :func:`discrete_path`), ``step=`` for ``learning_rate`` in
:func:`nesterov_scan`.

Time scalings: INNA and GD with steps :math:`\gamma_k` follow their ODEs on
:math:`t_k = \sum_{i<k}\gamma_i`; heavy ball (step :math:`\eta`, momentum
:math:`1 - a\sqrt\eta`) and Nesterov (step :math:`s`, momentum :math:`(k-1)/(k+r-1)`) on
:math:`t = k\sqrt\eta`.
"""

from inna_jax.dynamics._analytic_ntk import analytic_relu_ntk as analytic_relu_ntk
from inna_jax.dynamics._compare import METHODS as METHODS
from inna_jax.dynamics._compare import Comparison as Comparison
from inna_jax.dynamics._compare import DiscretePath as DiscretePath
from inna_jax.dynamics._compare import OrderFit as OrderFit
from inna_jax.dynamics._compare import compare as compare
from inna_jax.dynamics._compare import convergence_order as convergence_order
from inna_jax.dynamics._compare import discrete_path as discrete_path
from inna_jax.dynamics._compare import nesterov_scan as nesterov_scan
from inna_jax.dynamics._fields import din_hessian_form as din_hessian_form
from inna_jax.dynamics._fields import din_vector_field as din_vector_field
from inna_jax.dynamics._fields import gradient_flow as gradient_flow
from inna_jax.dynamics._fields import heavy_ball_ode as heavy_ball_ode
from inna_jax.dynamics._fields import nesterov_ode as nesterov_ode
from inna_jax.dynamics._function_space import FunctionSpaceSolution as FunctionSpaceSolution
from inna_jax.dynamics._function_space import fit_log_slope as fit_log_slope
from inna_jax.dynamics._function_space import (
    function_space_closed_form as function_space_closed_form,
)
from inna_jax.dynamics._function_space import (
    function_space_vector_field as function_space_vector_field,
)
from inna_jax.dynamics._function_space import predicted_rate as predicted_rate
from inna_jax.dynamics._function_space import solve_function_space as solve_function_space
from inna_jax.dynamics._grid import solve_grid as solve_grid
from inna_jax.dynamics._ntk_predictions import NTKPredictions as NTKPredictions
from inna_jax.dynamics._ntk_predictions import ntk_predictions as ntk_predictions
from inna_jax.dynamics._solve import DEFAULT_MAX_STEPS as DEFAULT_MAX_STEPS
from inna_jax.dynamics._solve import DinSolution as DinSolution
from inna_jax.dynamics._solve import FlowSolution as FlowSolution
from inna_jax.dynamics._solve import SecondOrderSolution as SecondOrderSolution
from inna_jax.dynamics._solve import default_controller as default_controller
from inna_jax.dynamics._solve import solve_din as solve_din
from inna_jax.dynamics._solve import solve_gradient_flow as solve_gradient_flow
from inna_jax.dynamics._solve import solve_heavy_ball as solve_heavy_ball
from inna_jax.dynamics._solve import solve_nesterov as solve_nesterov

__all__ = [
    "DEFAULT_MAX_STEPS",
    "METHODS",
    "Comparison",
    "DinSolution",
    "DiscretePath",
    "FlowSolution",
    "FunctionSpaceSolution",
    "NTKPredictions",
    "OrderFit",
    "SecondOrderSolution",
    "analytic_relu_ntk",
    "compare",
    "convergence_order",
    "default_controller",
    "din_hessian_form",
    "din_vector_field",
    "discrete_path",
    "fit_log_slope",
    "function_space_closed_form",
    "function_space_vector_field",
    "gradient_flow",
    "heavy_ball_ode",
    "nesterov_ode",
    "nesterov_scan",
    "ntk_predictions",
    "predicted_rate",
    "solve_din",
    "solve_function_space",
    "solve_gradient_flow",
    "solve_grid",
    "solve_heavy_ball",
    "solve_nesterov",
]
