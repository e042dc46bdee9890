"""Every figure kind renders a PNG from small synthetic analysis frames; figure config -> plan."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lsqueeze import figures
from lsqueeze.activations import activation_magnitudes
from lsqueeze.analysis import linear_model
from lsqueeze.cli import main
from lsqueeze.config import build_plan
from lsqueeze.landscape import loss_landscape
from lsqueeze.schema import ConfigError, validate

PNG = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]


class Tiny(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.hidden = nn.Linear(16, 12)
        self.head = nn.Linear(12, 4)

    def features(self, x):
        return torch.relu(self.hidden(x.flatten(1)))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def parquets(tmp_path_factory):
    """Per-model analysis Parquets of two small models, as the pipeline writes them."""
    d = tmp_path_factory.mktemp("analysis")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(60, 1, 4, 4, generator=g), torch.randint(0, 4, (60,), generator=g)
    out = {}
    for seed in (0, 1):
        m = Tiny(seed)
        for name, frame in (("linear", linear_model(m, x, y)),
                            ("landscape", loss_landscape(m, x[:3], y[:3], 0.3, 5)),
                            ("activations", activation_magnitudes(m, x))):
            path = d / f"{name}-{seed}.parquet"
            frame.to_parquet(path)
            out.setdefault(name, []).append(str(path))
    return out


@pytest.mark.parametrize("kind", sorted(figures.KINDS))
def test_every_kind_draws_a_png(kind, parquets, tmp_path):
    source = figures.KINDS[kind][1]
    out = tmp_path / f"{kind}.png"
    figures.draw(kind, parquets[source], ["model A", "model B"], f"test {kind}", out,
                 pixel_scales=[1.0, 1.0], eps=0.1 if kind == "linear" else None)
    blob = out.read_bytes()
    assert blob[:8] == PNG and len(blob) > 10_000
    pdf = out.with_suffix(".pdf").read_bytes()  # the vector copy beside it, date-free
    assert pdf[:5] == b"%PDF-" and b"CreationDate" not in pdf


def test_kind_sources_follow_the_naming_the_workflow_relies_on():
    """figures.smk picks a figure's inputs from the kind's prefix without importing matplotlib."""
    for kind, (_, source) in figures.KINDS.items():
        expect = ("landscape" if kind.startswith("landscape") else
                  "activations" if kind.startswith("activations") else "linear")
        assert source == expect, kind


def test_draw_rejects_bad_input(parquets, tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        figures.draw("pie", parquets["linear"], ["a", "b"], "t", tmp_path / "x.png")
    with pytest.raises(ValueError, match="labels"):
        figures.draw("linear", parquets["linear"], ["a"], "t", tmp_path / "x.png")
    with pytest.raises(ValueError, match="pixel scales"):
        figures.draw("linear", parquets["linear"], ["a", "b"], "t", tmp_path / "x.png",
                     pixel_scales=[1.0, 255.0])
    assert not (tmp_path / "x.png").exists()


def test_cli_figure_command(parquets, tmp_path):
    out = tmp_path / "fig.png"
    spec = {"title": "Figure 1", "labels": ["nat", "adv"], "pixel_scales": [255, 255], "eps": 8}
    rc = main(["figure", "--kind", "linear", "--spec", json.dumps(spec),
               "--inputs", *parquets["linear"], "--out", str(out)])
    assert rc == 0 and out.read_bytes()[:8] == PNG


def _config(**fig):
    return {"preset": "t", "results": "r", "tables": [],
            "cells": {"nat": {"dataset": "digits32", "method": "natural", "steps": 10},
                      "sq": {"dataset": "digits32", "beta": 10, "sigma": 30, "steps": 10}},
            "figures": {"figure_5": {"kind": "landscape_random", "cells": ["nat", "sq"], **fig}}}


def test_figures_in_the_plan():
    plan = build_plan(validate(_config(eps=10, title="Figure 5")))
    (fig,) = plan.figures
    assert fig["name"] == "figure_5" and fig["kind"] == "landscape_random" and fig["eps"] == 10
    assert fig["labels"] == ["nat", "sq"]  # default: the cells' names
    assert fig["cells"] == ["digits32/ls0-sq0-gn0-k10-s0", "digits32/ls0-sq10-gn30-k10-s0"]
    assert set(fig["cells"]) <= plan.analyses


@pytest.mark.parametrize("bad, where", [
    ({"kind": "pie"}, "kind"),
    ({"labels": ["only one"]}, "labels"),
    ({"eps": -1}, "eps"),
])
def test_bad_figure_config_fails_naming_the_key(bad, where):
    with pytest.raises(ConfigError, match=where):
        validate(_config(**bad))


def test_demo_preset_draws_every_paper_figure():
    import yaml

    cfg = yaml.safe_load((REPO / "params/demo.yaml").read_text())
    plan = build_plan(validate(cfg))
    names = {f["name"] for f in plan.figures}
    assert {f"figure_{i}" for i in range(1, 12)} <= names
    assert {f["kind"] for f in plan.figures} == set(figures.KINDS)
    for f in plan.figures:
        assert len(f["labels"]) == len(f["cells"])


def test_landscape_frame_has_both_planes(parquets):
    f = pd.read_parquet(parquets["landscape"][0])
    assert set(f.plane) == {"random", "adversarial"}
    assert np.isclose(f.eps1.abs().max(), 0.3)


@pytest.mark.slow
def test_pipeline_draws_every_figure_kind(tmp_path):
    """The Snakemake wiring: per-model analysis jobs, one figure job per configured figure."""
    import yaml

    from conftest import run_snakemake

    kinds = sorted(figures.KINDS)
    cfg = {"preset": "figs", "results": "results/figs", "data_dir": "results/data", "device": "auto",
           "train": {"checkpoint_every": 50}, "eval": {"n_test": 60, "batch_size": 60},
           "analysis": {"n_test": 60, "landscape_images": 2, "landscape_points": 5},
           "cells": {"nat": {"dataset": "digits28", "method": "natural", "steps": 30}},
           "attacks": {"fgsm": {"attack": "fgsm", "loss": "xent", "eps": 0.3}},
           "tables": [{"id": "1", "rows": [{"cell": "nat"}],
                       "columns": [{"name": "Eq. 4", "metric": "predicted_accuracy",
                                    "attack": "fgsm"}]}],
           "figures": {k: {"kind": k, "cells": ["nat"], "eps": 0.3} for k in kinds}}
    path = tmp_path / "figs.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_snakemake(tmp_path, configfile=path)
    out = tmp_path / "results/figs"
    for k in kinds:
        assert (out / f"figures/{k}.png").read_bytes()[:8] == PNG
        assert (out / f"figures/{k}.pdf").read_bytes()[:5] == b"%PDF-"
    land = pd.read_parquet(next(out.glob("analysis/digits28/*/landscape-e0.3.parquet")))
    assert len(land) == 2 * 2 * 5 * 5 and land.eps1.max() == pytest.approx(0.3)
    acts = pd.read_parquet(next(out.glob("analysis/digits28/*/activations.parquet")))
    assert (acts.n_images == 60).all() and set(acts.layer) == {"penultimate", "logits"}
    t1 = pd.read_parquet(out / "tables/table_1.parquet")
    assert 0 <= t1["Eq. 4"].iloc[0] <= 100
