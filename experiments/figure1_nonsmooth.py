"""Figure 1 of the INNA paper (Castera et al., JMLR 2021): INNA and DIN on a nonsmooth toy loss.

J(theta) = 100 (theta2 - |theta1|)^2 + |1 - theta1| from (-1, 1.5), three (alpha, beta)
panels and the loss against time. The paper does not publish its step size or number of
iterations; we use gamma = 1e-3 for 20,000 iterations (t = 20). Edit below and run:

    python experiments/figure1_nonsmooth.py
"""

from inna_jax.reproduce import figure1

if __name__ == "__main__":
    rows = figure1.run(
        out="results/figure1",
        learning_rate=1e-3,
        steps=20_000,
        panels=[(0.5, 0.01), (0.5, 0.1), (1.3, 0.1)],
        initial_speed=None,  # s = beta, the inna_jax.inna default
    )
    for row in rows:
        print(row)
