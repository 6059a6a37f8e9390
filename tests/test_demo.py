"""``inna-jax demo``: five optimizers from the same weights and batches, table and figure."""

import csv
import json

import pytest

from inna_jax import cli
from inna_jax.reproduce import demo


def test_demo_trains_every_method_and_writes_its_files(tmp_path):
    results = demo.run(out=tmp_path, epochs=1, hidden=(8,), quiet=True)
    names = [r["method"] for r in results]
    assert names == [
        "INNA (alpha=0.5, beta=0.1)", "INNAprop (alpha=0.1, beta=0.9)", "SGD", "Adagrad", "Adam"
    ]  # fmt: skip
    rates = {r["method"]: r["learning_rate"] for r in results}
    assert rates["INNAprop (alpha=0.1, beta=0.9)"] == 1e-3 and rates["Adam"] == 1e-3
    # same initial weights: one epoch-0 loss; then each optimizer goes its own way
    assert len({r["history"][0]["train_loss"] for r in results}) == 1
    assert len({r["train_loss"] for r in results}) == len(results)
    for r in results:
        assert 0 <= r["test_accuracy"] <= 1 and r["train_loss"] < r["history"][0]["train_loss"]
    with open(tmp_path / "results.csv") as f:
        assert [row["method"] for row in csv.DictReader(f)] == names
    assert [r["method"] for r in json.loads((tmp_path / "results.json").read_text())] == names
    assert (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"
    table = demo.format_table(results).splitlines()
    assert len(table) == 2 + len(names) and table[3].startswith("| INNAprop (alpha=0.1")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--innaprop-lr", "0.9"], "innaprop_lr (--innaprop-lr) must be < INNAprop's beta = 0.9"),
        (["--innaprop-lr", "-1"], "argument --innaprop-lr: must be a finite number > 0"),
        (["--batch-size", "5000"], "batch_size (--batch-size) must be at most the 1348"),
    ],
)
def test_demo_usage_errors(argv, message, tmp_path, capsys):
    try:
        status = cli.main(["demo", *argv, "--out", str(tmp_path), "--quiet"])
    except SystemExit as exit_info:
        status = exit_info.code
    err = capsys.readouterr().err
    assert status == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
