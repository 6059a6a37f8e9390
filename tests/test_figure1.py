"""Figure 1: every INNA path and DIN solution ends within 1e-2 of (1, 1); the CLI writes the PNG."""

import json

import numpy as np
import pytest

from inna_jax import cli
from inna_jax.reproduce import figure1


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("figure1")
    code = cli.main(["figure1", "--out", str(out)])
    return code, out


def test_every_path_ends_near_the_minimiser(outputs):
    code, out = outputs
    assert code == 0
    report = json.loads((out / "figure1.json").read_text())
    assert report["settings"]["learning_rate"] == figure1.LEARNING_RATE
    assert report["settings"]["steps"] == figure1.STEPS
    panels = report["panels"]
    assert [(p["alpha"], p["beta"]) for p in panels] == list(figure1.PANELS)
    for panel in panels:
        for key in ("inna_final", "din_final"):
            assert np.linalg.norm(np.asarray(panel[key]) - 1.0) < 1e-2, (key, panel)


def test_png_and_csv_written(outputs):
    _, out = outputs
    png = out / "figure1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
    rows = (out / "figure1.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + len(figure1.PANELS)


def test_loss_and_bad_arguments():
    assert float(figure1.loss(np.array([1.0, 1.0]))) == 0.0
    with pytest.raises(ValueError, match="learning_rate"):
        figure1.run(out=None, learning_rate=0.0)
