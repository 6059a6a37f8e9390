"""Bu, Xu and Chen (AISTATS 2021): heavy ball is linear like GD in the NTK regime, Nesterov is not.

The full setting: n = 500 digits (digit value as a real target), widths 256 to 16384, the
method sweep (GD; heavy ball b = 0.2, 0.5, 0.8; Nesterov r = 2, 3, 6, 8) at width 4096 over
2000 steps, and the width sweep over 1000 steps, in float64. About an hour on one CPU core;
``inna-jax dynamics-ntk`` runs a smaller default in a few minutes.
"""

import jax

from inna_jax.reproduce.hb_nag_ntk import FULL_WIDTHS, run

if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    run(
        out="results/hb_nag_ntk_full",
        n=500,
        width=4096,
        widths=FULL_WIDTHS,
        steps=2000,
        sweep_steps=1000,
        learning_rate=0.05,
        momenta=(0.2, 0.5, 0.8),
        dampings=(2.0, 3.0, 6.0, 8.0),
    )
