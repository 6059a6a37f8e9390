"""Figure 2 of the INNA paper with the authors' full protocol: NiN on CIFAR-100.

SGD, Adagrad, Adam and INNA (alpha, beta) in {(0.1, 0.1), (0.5, 0.1), (0.5, 0.5)}; batch 32;
gamma_k = gamma_0 / sqrt(k + 1) for INNA and SGD; gamma_0 by a grid search on the first 15
epochs (JMLR); 200 epochs; 5 seeds sharing initial weights across methods. This is hours of
accelerator time (6 x 6 grid runs of 15 epochs + 30 runs of 200 epochs, 1,562 steps each).
Each method's grid trains as one group of runs (one vmapped program on an accelerator), and
so do its 5 seeds.

    python experiments/figure2_cifar100.py --data-dir /path/to/folder_with_cifar-100-python
    python experiments/figure2_cifar100.py --data-dir DIR --devices 8   # runs over 8 devices
"""

import argparse

from inna_jax.reproduce import figure2

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding cifar-100-python/")
    parser.add_argument(
        "--devices", type=int, default=None, help="spread each group's runs over N devices"
    )
    parser.add_argument("--out", default="results/figure2_cifar100", help="output folder")
    args = parser.parse_args()
    figure2.run(
        dataset="cifar100",
        data_dir=args.data_dir,
        epochs=200,
        seeds=5,
        batch_size=32,
        grid_epochs=15,
        devices=args.devices,
        out=args.out,
        quiet=False,
    )
