"""The evaluation after an epoch: loss on the training set, loss and metric on the test set.

Each split is cut into equal chunks of at most ``eval_batch_size`` rows (the last padded and
masked), so that little is computed for padding: 1,348 rows and chunks of at most 512 give 3
chunks of 450. The metric is the accuracy for a classification set and the RMSE for a
regression set.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from inna_jax.train import _parallel
from inna_jax.train._arguments import Settings
from inna_jax.train._group import Runs, round_up


def _eval_chunk(n: int, most: int, multiple: int) -> int:
    """Rows per evaluation chunk: ``n`` rows in as few chunks of at most ``most`` (rounded
    up to ``multiple``) as possible, all of one size."""
    chunks = -(-n // max(int(most), 1))
    return round_up(-(-n // chunks), multiple)


def evaluate(runs: Runs, x: np.ndarray, y: np.ndarray, ebs: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss and metric sum / n on ``(x, y)`` for every run, in chunks of ``ebs``."""
    sums = []  # device values, read in one transfer at the end
    for lo in range(0, len(x), ebs):
        xb, yb = x[lo : lo + ebs], y[lo : lo + ebs]
        valid = len(xb)
        mask = np.zeros(ebs, np.float32)
        mask[:valid] = 1.0
        if valid < ebs:
            xb = np.concatenate([xb, np.zeros((ebs - valid, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros((ebs - valid, *yb.shape[1:]), yb.dtype)])
        xb, yb, mask = runs.put_data(xb), runs.put_data(yb), runs.put_data(mask)
        if runs.batched:
            sums.append(runs.eval_fn(runs.state.params, runs.state.rest, xb, yb, mask))
        else:
            sums += [runs.eval_fn(st.params, st.rest, xb, yb, mask) for st in runs.states]
    loss_sum, metric_sum = np.zeros(runs.count), np.zeros(runs.count)
    per_chunk = 1 if runs.batched else runs.count
    for i, (ls, ms) in enumerate(_parallel.host_arrays(sums)):
        if runs.batched:
            loss_sum += ls[: runs.count]
            metric_sum += ms[: runs.count]
        else:
            loss_sum[i % per_chunk] += ls
            metric_sum[i % per_chunk] += ms
    return loss_sum / len(x), metric_sum / len(x)


class Evaluation:
    """When to evaluate, and the rows an evaluation adds to the runs' histories."""

    def __init__(self, data: Any, settings: Settings, *, classification: bool, data_devices: int):
        self.x_train, self.y_train = np.asarray(data.x_train), np.asarray(data.y_train)
        self.x_test, self.y_test = np.asarray(data.x_test), np.asarray(data.y_test)
        self.classification = classification
        self.metric_key = "test_accuracy" if classification else "test_rmse"
        self.epochs, self.eval_every = settings.epochs, settings.eval_every
        self.eval_test = settings.eval_test
        most = settings.eval_batch_size
        ebs = int(most) if most is not None else max(int(settings.batch_size), 512)
        self.ebs_train = _eval_chunk(len(self.x_train), ebs, data_devices)
        self.ebs_test = _eval_chunk(max(len(self.x_test), 1), ebs, data_devices)

    def due(self, epoch: int) -> bool:
        """Whether the end of ``epoch`` is evaluated (epoch 0: before training)."""
        if self.eval_every is None:
            return epoch == self.epochs
        return epoch % int(self.eval_every) == 0 or epoch == self.epochs

    def train_loss(self, runs: Runs) -> np.ndarray:
        """Every run's mean loss on the training set now."""
        return evaluate(runs, self.x_train, self.y_train, self.ebs_train)[0]

    def rows(self, runs: Runs, epoch: int, step: int, time_s: float) -> list[dict]:
        """One history row per run: the losses and the test metric now."""
        train_loss = self.train_loss(runs)
        if self.eval_test:
            test_loss, test_metric = evaluate(runs, self.x_test, self.y_test, self.ebs_test)
        rows = []
        for r in range(runs.count):
            row = {"epoch": epoch, "step": step, "train_loss": float(train_loss[r])}
            if self.eval_test:
                metric = float(test_metric[r])
                row["test_loss"] = float(test_loss[r])
                row[self.metric_key] = metric if self.classification else math.sqrt(metric)
            row["time_s"] = round(time_s, 4)
            rows.append(row)
        return rows
