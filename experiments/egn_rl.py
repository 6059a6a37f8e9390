"""EGN in reinforcement learning (Korbit et al. 2024, arXiv:2405.14402): LQR policy
evaluation, Acrobot, CartPole and MinAtar Breakout, with 5 seeds.

Which settings are the paper's and which are ours:

* the paper's (or its reference code's): the tasks (LQR policy evaluation, Acrobot, MinAtar
  games), a batch size in its 32-128 range, EGN's regularizer lambda = 1 and a learning rate
  of 0.1 among those tried, Adam at 3e-4 among those tried, and the SGN baseline (10 CG
  iterations, damping 1e-3, Armijo line search);
* ours (we could not read the paper's RL settings): 5 seeds, the LQR system (4 states,
  2 inputs, gamma 0.9, noise 0.1), the fitted-TD schedule (target period tuned over
  10/100/1000 steps with the learning rate), the MLP sizes, every DQN setting (8
  environments, buffer 50k, target every 500 updates, epsilon 1 -> 0.05 over half of
  training, 5000 random transitions first), CartPole as a third environment, the update
  budgets and the learning-rate grids.

Tens of minutes of CPU (MinAtar Breakout is the slow part). Edit below and run:

    python experiments/egn_rl.py
"""

from inna_jax.reproduce import egn_rl

if __name__ == "__main__":
    egn_rl.run(
        out="results/egn_rl",
        seeds=5,
        lqr_steps=5_000,
        lqr_first_order_factor=5,
        lqr_batch_size=64,
        lqr_target_periods=(10, 100, 1000),
        lqr_egn_lr=(0.1, 0.3, 1.0),
        lqr_sgn_lr=(0.1, 0.3, 1.0),
        lqr_sgd_lr=(1e-3, 3e-3, 1e-2, 3e-2),
        lqr_adam_lr=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
        egn_regularizer=1.0,
        envs=("CartPole-v1", "Acrobot-v1", "Breakout-MinAtar"),
        dqn_updates={"CartPole-v1": 10_000, "Acrobot-v1": 10_000, "Breakout-MinAtar": 50_000},
        dqn_egn_lr=(0.03, 0.1, 0.3),
        dqn_adam_lr=(1e-4, 3e-4, 1e-3),
        dqn_batch_size=64,
        dqn_num_envs=8,
        dqn_buffer_size=50_000,
        dqn_target_period=500,
        dqn_learning_starts=5_000,
        quiet=False,
    )
