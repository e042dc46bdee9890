"""Every figure kind renders a PNG from small synthetic analysis frames; figure config -> plan."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lsqueeze.cli import main
from lsqueeze.jobs.analysis import linear_model
from lsqueeze.plan.build import build_plan
from lsqueeze.plan.schema import ConfigError, validate
from lsqueeze.registries.base import load_function
from lsqueeze.registries.figure_kinds import FIGURE_KINDS, READS
from lsqueeze.report import figures
from lsqueeze.science.activations import activation_magnitudes
from lsqueeze.science.landscape import loss_landscape

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


@pytest.mark.parametrize("kind", sorted(FIGURE_KINDS))
def test_every_kind_draws_a_png(kind, parquets, tmp_path):
    source = FIGURE_KINDS[kind].reads
    out = tmp_path / f"{kind}.png"
    figures.draw(kind, parquets[source], ["model A", "model B"], f"test {kind}", out,
                 pixel_scales=[1.0, 1.0], eps=0.1 if kind == "linear" else None)
    blob = out.read_bytes()
    assert blob[:8] == PNG and len(blob) > 10_000
    pdf = out.with_suffix(".pdf").read_bytes()  # the vector copy beside it, date-free
    assert pdf[:5] == b"%PDF-" and b"CreationDate" not in pdf


def test_every_kind_reads_an_analysis_and_names_a_drawing_function():
    """The registry names what each kind reads and draws with, without importing matplotlib."""
    for kind in FIGURE_KINDS.values():
        assert kind.reads in READS, kind.name
        assert callable(load_function(kind.draw)), kind.name


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
    assert {f["kind"] for f in plan.figures} == set(FIGURE_KINDS)
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

    kinds = sorted(FIGURE_KINDS)
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
    assert 0 <= t1["eq_4_pct"].iloc[0] <= 100


# The summary figure (`lsqueeze figure --measurements measurements.parquet`)

def _cell(tag, method="regularized", alpha=0.0, beta=0.0, sigma=0.0, steps=20000, seed=0):
    return {"dataset": "mnist", "method": method, "alpha": alpha, "beta": beta, "sigma": sigma,
            "steps": steps, "seed": seed, "clip_noise": False, "cell_id": f"mnist/{tag}"}


def _attack(aid, threat="white", source_id=None):
    kind, loss = aid.split("-")[:2]
    steps = 40 if kind == "pgd" else 1
    return {"threat": threat, "attack_id": aid, "attack": kind, "loss": loss,
            "attack_steps": steps, "eps": 0.3, "step_size": 0.01 if kind == "pgd" else None,
            "restarts": 1, "random_start": aid.endswith("-rand"), "source_id": source_id}


NAT = _cell("ls0-sq0-gn0-k20k-s0")
SQ0 = _cell("ls0-sq2-gn0.5-k20k-s0", beta=2.0, sigma=0.5)
SQ1 = _cell("ls0-sq2-gn0.5-k20k-s1", beta=2.0, sigma=0.5, seed=1)
LS1 = _cell("ls0.1-sq0-gn0-k20k-s0", alpha=0.1)
LS2 = _cell("ls0.2-sq0-gn0-k20k-s0", alpha=0.2)
ADV = _cell("at40-e0.3-a0.01-rand-k20k-s0", method="adv")
PGD, FGSM = "pgd-xent-n40-e0.3-a0.01-r1-rand", "fgsm-cw-e0.3"


@pytest.fixture
def measurements():
    """Long-form measurements as `lsqueeze aggregate` writes them: clean accuracy for every
    model; PGD for all but the natural one; FGSM white-box for two models (one of them at
    exactly 0) and black-box (from the natural model) for one."""
    clean = {"threat": "none", **{k: None for k in _attack(PGD) if k != "threat"}}
    rows = [{**c, **clean, "metric": "test_accuracy", "value": 0.99, "n": None}
            for c in (NAT, SQ0, SQ1, LS1, LS2, ADV)]
    rows += [{**c, **_attack(PGD), "metric": "accuracy", "value": v, "n": 1000}
             for c, v in ((SQ0, 0.34), (SQ1, 0.36), (LS1, 0.01), (LS2, 0.02), (ADV, 0.9))]
    rows += [{**SQ0, **_attack(FGSM), "metric": "accuracy", "value": 0.68, "n": 1000},
             {**LS2, **_attack(FGSM), "metric": "accuracy", "value": 0.0, "n": 1000},
             {**SQ0, **_attack(FGSM, "black", NAT["cell_id"]), "metric": "accuracy",
              "value": 0.73, "n": 1000},
             {**SQ0, **clean, "metric": "mean_logit_norm", "value": 2.6, "n": None}]
    return pd.DataFrame(rows)


NAMES = ["natural", "logit squeezing + noise (seed 0)", "logit squeezing + noise (seed 1)",
         "label smoothing (α=0.1)", "label smoothing (α=0.2)", "adv. trained (PGD-40, ε=0.3)"]


def _bars(fig):
    """{(panel title, model, attack id): bar} for every bar drawn."""
    from matplotlib.patches import Rectangle

    return {(ax.get_title(), *p.get_gid().split("|")): p for ax in fig.axes
            for p in ax.patches if isinstance(p, Rectangle) and p.get_gid()}


def _texts(fig):
    return {(ax.get_title(), *t.get_gid().split("|")[:2]): t.get_text() for ax in fig.axes
            for t in ax.texts if t.get_gid()}


def test_summary_labels_models_in_the_papers_words(measurements):
    import matplotlib.pyplot as plt

    fig = figures.draw_summary(measurements)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == NAMES and not any("mnist/" in n or "-k20k" in n for n in labels)
    assert len(fig.axes) == 3  # the other panels share its rows
    assert all(fig.axes[0].get_shared_y_axes().joined(fig.axes[0], ax) for ax in fig.axes)
    plt.close(fig)


def test_summary_one_colour_per_attack_in_every_panel(measurements):
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    fig = figures.draw_summary(measurements)
    bars = _bars(fig)
    colour = {}
    for (_, _, attack), bar in bars.items():
        colour.setdefault(attack, set()).add(to_hex(bar.get_facecolor()))
    assert set(colour) == {figures.CLEAN, PGD, FGSM}
    assert all(len(c) == 1 for c in colour.values())  # FGSM: white- and black-box panels alike
    assert len({c for cs in colour.values() for c in cs}) == 3
    panels = {panel for panel, _, a in bars if a == FGSM}
    assert len(panels) == 2 and any("transferred from natural" in p for p in panels)
    legend = {t.get_text(): to_hex(h.get_facecolor())
              for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    assert legend["PGD-40 X-ent, ε=0.3, step 0.01, random start"] == colour[PGD].pop()
    assert legend["FGSM CW, ε=0.3"] == colour[FGSM].pop()
    assert "n/m: not measured" in legend
    plt.close(fig)


def test_summary_draws_not_measured_apart_from_zero(measurements):
    import matplotlib.pyplot as plt

    fig = figures.draw_summary(measurements)
    bars, texts = _bars(fig), _texts(fig)
    white = next(ax.get_title() for ax in fig.axes if ax.get_title().startswith("white"))
    # measured 0: a bar of length 0 with its value written beside it
    zero = (white, "label smoothing (α=0.2)", FGSM)
    assert bars[zero].get_width() == 0 and texts[zero] == "0.0"
    # not measured: no bar at all, the text "n/m" in its place
    for model in ("natural", "label smoothing (α=0.1)", "logit squeezing + noise (seed 1)"):
        assert (white, model, FGSM) not in bars and texts[(white, model, FGSM)] == "n/m"
    assert (white, "natural", PGD) not in bars and texts[(white, "natural", PGD)] == "n/m"
    assert bars[(white, "logit squeezing + noise (seed 0)", FGSM)].get_width() == pytest.approx(68)
    # every model × attack slot of a panel is either a bar or "n/m"
    for ax in fig.axes:
        attacks = {a for p, _, a in bars if p == ax.get_title()}
        for model in NAMES:
            for a in attacks:
                key = (ax.get_title(), model, a)
                assert (key in bars) != (texts.get(key) == "n/m"), key
    plt.close(fig)


def test_summary_cli_writes_png_and_pdf(measurements, tmp_path):
    path = tmp_path / "measurements.parquet"
    measurements.to_parquet(path)
    out = tmp_path / "summary.png"
    assert main(["figure", "--measurements", str(path), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG and out.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


def test_summary_of_a_committed_run_names_its_models():
    import matplotlib.pyplot as plt

    run = REPO / "reproduced/mnist_100k_cpu"
    fig = figures.draw_summary(pd.read_parquet(run / "measurements.parquet"))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        "natural", "Gaussian noise", "logit squeezing + noise"]
    assert [ax.get_title() for ax in fig.axes] == [
        "clean test images", "white-box attacks", "black-box attacks\n(transferred from natural)",
        "worst case over the attacks"]
    plt.close(fig)
