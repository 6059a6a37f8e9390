"""Reinforcement learning with EGN: LQR policy evaluation with its closed form, fitted TD, DQN.

``inna_jax.rl`` holds the algorithms of the EGN paper's reinforcement-learning experiments
(Korbit et al., arXiv:2405.14402): an LQR policy-evaluation problem with its exact value
(:func:`make_lqr`, :func:`lqr_value`), fitted temporal-difference learning with any optax
optimizer (:func:`td_policy_evaluation`), and a DQN whose whole training loop is one jitted
program (:func:`dqn_init`, :func:`dqn_train`) over vectorised gymnax environments, with a
replay buffer in device arrays (:class:`ReplayBuffer`) and a target network.
"""

from inna_jax.rl._dqn import DQNConfig as DQNConfig
from inna_jax.rl._dqn import DQNMetrics as DQNMetrics
from inna_jax.rl._dqn import DQNState as DQNState
from inna_jax.rl._dqn import chosen_action_value as chosen_action_value
from inna_jax.rl._dqn import dqn_init as dqn_init
from inna_jax.rl._dqn import dqn_inputs as dqn_inputs
from inna_jax.rl._dqn import dqn_train as dqn_train
from inna_jax.rl._lqr import LQRProblem as LQRProblem
from inna_jax.rl._lqr import lqr_value as lqr_value
from inna_jax.rl._lqr import make_lqr as make_lqr
from inna_jax.rl._lqr import quadratic_features as quadratic_features
from inna_jax.rl._lqr import quadratic_matrix as quadratic_matrix
from inna_jax.rl._lqr import sample_lqr_transitions as sample_lqr_transitions
from inna_jax.rl._replay import ReplayBuffer as ReplayBuffer
from inna_jax.rl._replay import replay_add as replay_add
from inna_jax.rl._replay import replay_init as replay_init
from inna_jax.rl._replay import replay_sample as replay_sample
from inna_jax.rl._td import TDState as TDState
from inna_jax.rl._td import td_init as td_init
from inna_jax.rl._td import td_policy_evaluation as td_policy_evaluation

__all__ = [
    "DQNConfig",
    "DQNMetrics",
    "DQNState",
    "LQRProblem",
    "ReplayBuffer",
    "TDState",
    "chosen_action_value",
    "dqn_init",
    "dqn_inputs",
    "dqn_train",
    "lqr_value",
    "make_lqr",
    "quadratic_features",
    "quadratic_matrix",
    "replay_add",
    "replay_init",
    "replay_sample",
    "sample_lqr_transitions",
    "td_init",
    "td_policy_evaluation",
]
