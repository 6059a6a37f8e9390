"""inna-jax innaprop-lm: the causal transformer, the corpus split, a tiny run, flag errors;
and figure2's --num-samples."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from inna_jax import cli
from inna_jax.models import CausalTransformer
from inna_jax.reproduce import innaprop_lm, registry
from inna_jax.reproduce.innaprop_lm_corpus import (
    TRAIN_FILES,
    VALIDATION_FILES,
    load_corpus,
    stdlib_root,
)


def test_cli_registers_innaprop_lm_with_documented_flags():
    parser = cli.build_parser()
    args = parser.parse_args(["innaprop-lm", "--scale", "gpu", "--width", "32", "--seeds", "2"])
    assert args._module is innaprop_lm
    assert (args.scale, args.width, args.seeds, args.depth) == ("gpu", 32, 2, None)
    sub = parser._subparsers._group_actions[0].choices["innaprop-lm"]
    for action in sub._actions:
        if action.dest != "help":
            assert action.help, f"flag {action.option_strings} has no help text"


def test_transformer_is_causal_exactly_and_has_the_right_shapes():
    model = CausalTransformer(256, 12, width=16, depth=1, heads=2, rngs=nnx.Rngs(0))
    apply = nnx.jit(lambda m, x: m(x))  # one program for every call of one shape
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 256, dtype=jnp.int32)
    logits = np.asarray(apply(model, tokens))
    assert logits.shape == (2, 12, 256) and np.isfinite(logits).all()
    assert np.asarray(apply(model, tokens[:, :5])).shape == (2, 5, 256)
    for t in (0, 5, 10):
        changed = tokens.at[:, t + 1 :].set((tokens[:, t + 1 :] + 7) % 256)
        other = np.asarray(apply(model, changed))
        np.testing.assert_array_equal(other[:, : t + 1], logits[:, : t + 1])  # bit for bit
        assert np.abs(other[:, t + 1 :] - logits[:, t + 1 :]).max() > 1e-3  # later ones move
    # and a change at position t moves position t itself (the mask includes the diagonal)
    at_t = np.asarray(apply(model, tokens.at[:, 4].set((tokens[:, 4] + 1) % 256)))
    assert np.abs(at_t[:, 4] - logits[:, 4]).max() > 1e-3
    with pytest.raises(ValueError, match="at most context=12"):
        model(jnp.zeros((1, 13), jnp.int32))
    with pytest.raises(ValueError, match="width must be a multiple of heads"):
        CausalTransformer(256, 12, width=10, depth=1, heads=4, rngs=nnx.Rngs(0))


def test_corpus_split_is_fixed_disjoint_and_read_whole(tmp_path):
    assert not set(TRAIN_FILES) & set(VALIDATION_FILES)
    assert len(set(TRAIN_FILES)) == len(TRAIN_FILES) == 50 and len(VALIDATION_FILES) == 4
    corpus = load_corpus()
    root = stdlib_root()
    expected = b"".join((root / f).read_bytes() + b"\n" for f in VALIDATION_FILES)
    assert corpus.validation.tobytes() == expected
    sizes = sum((root / f).stat().st_size + 1 for f in TRAIN_FILES)
    assert corpus.train.dtype == np.uint8 and corpus.train.size == sizes
    assert corpus.describe()["validation_files"] == list(VALIDATION_FILES)
    (tmp_path / "a.py").write_text("x = 1\n")
    with pytest.raises(FileNotFoundError, match="corpus file 'b.py' is missing") as err:
        load_corpus(["a.py"], ["b.py"], root=tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"\['a.py'\] in both"):
        load_corpus(["a.py"], ["a.py"], root=tmp_path)


def test_tiny_run_writes_curves_table_figure_and_settings(tmp_path):
    summary = innaprop_lm.run(
        out=tmp_path, methods=("adamw", "innaprop-1-1"), seeds=(0, 1), lr=1e-2, depth=1,
        width=16, heads=2, context=16, batch_size=8, steps=6, eval_every=3, eval_windows=8,
        verbose=False,
    )  # fmt: skip
    for name in ("curves.csv", "runs.csv", "table.csv", "table.json", "innaprop_lm.png",
                 "summary.json"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 0, name
    rows = list(csv.DictReader((tmp_path / "curves.csv").open()))
    assert len(rows) == 2 * 2 * 3  # methods x seeds x evaluations (steps 0, 3, 6)
    val = {(r["method"], int(r["seed"]), int(r["step"])): float(r["val_loss"]) for r in rows}
    for seed in (0, 1):  # one start per seed, shared by the methods
        assert val[("AdamW", seed, 0)] == val[("INNAprop (1, 1)", seed, 0)]
        for method in ("AdamW", "INNAprop (1, 1)"):
            assert val[(method, seed, 6)] < val[(method, seed, 0)]
    assert val[("AdamW", 0, 0)] != val[("AdamW", 1, 0)]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["settings"]["steps"] == 6 and saved["settings"]["seeds"] == [0, 1]
    assert saved["settings"]["warmup"] == 1 and saved["settings"]["weight_decay"] == 0.1
    assert saved["corpus"]["validation_files"] == list(VALIDATION_FILES)
    assert saved["seconds"] > 0 and "cpu" in saved["machine"]
    table = {r["method"]: r for r in summary["table"]}
    final = [val[("AdamW", s, 6)] for s in (0, 1)]
    assert table["AdamW"]["val_loss"] == pytest.approx(np.mean(final), rel=1e-12)
    assert table["AdamW"]["val_loss_min"] == min(final)


def _error(capsys, argv: list[str]) -> str:
    try:
        status = cli.main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--width", "30", "--heads", "4"], ["--width 30", "multiple of --heads 4"]),
        (["--steps", "110"], ["--steps 110", "multiple of --eval-every 50"]),
        (["--lr", "0.95"], ["--lr", "(0, 0.9)", "0.95"]),
        (["--warmup", "600"], ["--warmup 600", "below --steps 600"]),
        (["--methods", "sgd"], ["--methods", "'sgd'"]),
        (["--depth", "0"], ["--depth", "'0'", ">= 1"]),
        (["--scale", "tpu"], ["--scale", "'tpu'"]),
    ],
)
def test_bad_flags_are_one_line_with_status_2(capsys, argv, needles):
    err = _error(capsys, ["innaprop-lm", *argv])
    assert err.startswith("inna-jax innaprop-lm: error:")
    for needle in needles:
        assert needle in err, err


def test_run_refuses_bad_settings_by_argument_name(tmp_path):
    with pytest.raises(ValueError, match="width 30 must be a multiple of heads 4"):
        innaprop_lm.run(out=tmp_path, width=30, heads=4, verbose=False)
    with pytest.raises(ValueError, match="unknown size 'layers'"):
        innaprop_lm.run(out=tmp_path, layers=3, verbose=False)


def test_mnist1d_num_samples_through_the_registry_and_figure2(capsys, tmp_path):
    data = registry.load_dataset("mnist1d", num_samples=200)
    assert data.x_train.shape == (160, 40) and data.x_test.shape == (40, 40)
    assert len(registry.load_dataset("mnist1d").x_train) == 4000  # the default is unchanged
    with pytest.raises(ValueError, match="num_samples applies only to the generated"):
        registry.load_dataset("digits", num_samples=200)
    err = _error(capsys, ["figure2", "--dataset", "mnist1d", "--num-samples", "205"])
    assert "--num-samples" in err and "'205'" in err and "multiple of 10" in err
    err = _error(capsys, ["figure2", "--num-samples", "200"])
    assert "--num-samples applies only to --dataset mnist1d, got --dataset digits" in err
    status = cli.main(["figure2", "--dataset", "mnist1d", "--num-samples", "200", "--epochs",
                       "1", "--seeds", "1", "--methods", "SGD", "--grid", "SGD=0.1",
                       "--out", str(tmp_path)])  # fmt: skip
    assert status == 0
    setting = json.loads(Path(tmp_path, "summary.json").read_text())["setting"]
    assert (setting["num_train"], setting["num_test"], setting["num_samples"]) == (160, 40, 200)
    assert "200 generated signals" in setting["label"]
