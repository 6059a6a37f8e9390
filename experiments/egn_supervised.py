"""The EGN paper's supervised comparison (Korbit et al. 2024) with its full settings.

EGN (line search, adaptive regularization), SGN (10 CG iterations, damping 1e-3, Armijo),
and SGD and Adam with a learning-rate grid, on an MLP 32-64-32 with 5 seeds. Regression:
diabetes (and California housing when scikit-learn has it on disk); classification: digits
and mnist1d. Several minutes to an hour of CPU. Edit below and run:

    python experiments/egn_supervised.py
"""

from inna_jax.reproduce import egn

if __name__ == "__main__":
    egn.run(
        out="results/egn",
        datasets=("diabetes", "california", "digits", "mnist1d"),
        seeds=5,
        epochs=egn.FULL_EPOCHS,
        batch_size=32,  # the paper uses 32 to 128
        egn_learning_rates=(0.1, 0.3, 1.0),
        egn_regularizer=1.0,
        sgn_learning_rates=(0.1, 0.3, 1.0),
        sgd_grid=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
        adam_grid=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
        quiet=False,
    )
