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
from lsqueeze.report import figures, summary
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


def test_landscape_puts_every_model_on_one_colour_scale(parquets, monkeypatch, tmp_path):
    """Figure 5 compares models: one set of contour levels (0 to the largest loss of any model)
    and one colour bar, even where one model's losses are ten times another's."""
    from matplotlib.colorbar import Colorbar
    from matplotlib.contour import ContourSet

    steep = pd.read_parquet(parquets["landscape"][1]).assign(loss=lambda f: 10 * f["loss"] + 1)
    frames = [pd.read_parquet(parquets["landscape"][0]), steep]
    drawn = {}
    monkeypatch.setattr(figures, "save", lambda fig, out: drawn.setdefault("fig", fig))
    figures.figure_landscape_random(frames, ["flat", "steep"], "Figure 5", tmp_path / "f.png")
    fig = drawn["fig"]
    sets = fig.findobj(lambda a: isinstance(a, ContourSet))
    assert len(sets) == 2 * 3  # two models, three images each
    assert all(np.array_equal(c.levels, sets[0].levels) for c in sets)
    top = float(steep[steep["plane"] == "random"]["loss"].max())
    assert sets[0].levels[0] == 0 and top <= sets[0].levels[-1] < 1.2 * top
    bars = [a for sub in fig.subfigs for a in sub.axes
            if isinstance(getattr(a, "_colorbar", None), Colorbar)]
    assert len(bars) == 1 and "one scale" in bars[0].get_ylabel()


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


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _title(ax) -> str:
    return ax.get_title().replace("\n", " ")


def _cells(fig):
    """{(panel title, model, attack id): cell} for every grid cell; a not-measured cell's key
    ends in "n/m"."""
    from matplotlib.patches import Rectangle

    return {(_title(ax), *p.get_gid().split("|")): p for ax in _panels(fig)
            for p in ax.patches if isinstance(p, Rectangle) and p.get_gid()}


def _texts(fig):
    return {(_title(ax), *t.get_gid().split("|")[:2]): t.get_text() for ax in _panels(fig)
            for t in ax.texts if t.get_gid()}


def test_summary_labels_models_in_the_papers_words(measurements):
    import matplotlib.pyplot as plt

    fig = summary.draw_summary(measurements)
    panels = _panels(fig)
    labels = [t.get_text() for t in panels[0].get_yticklabels()]
    assert labels == NAMES and not any("mnist/" in n or "-k20k" in n for n in labels)
    assert len(panels) == 3 and len(fig.axes) == 4  # and one colour bar for all of them
    plt.close(fig)
    # the title counts the attacked images, not the whole test split a clean accuracy used
    fig = summary.draw_summary(measurements.assign(n=measurements["n"].fillna(10000)))
    assert fig._suptitle.get_text().endswith("(%; attacks on 1,000 test images)")
    assert all(panels[0].get_shared_y_axes().joined(panels[0], ax) for ax in panels)
    plt.close(fig)


def test_summary_colours_every_cell_on_one_accuracy_scale(measurements):
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    fig = summary.draw_summary(measurements)
    cells, texts = _cells(fig), _texts(fig)
    measured = {k: c for k, c in cells.items() if len(k) == 3}
    cmap = plt.get_cmap(summary.CMAP)
    for key, cell in measured.items():  # the colour is the value's, whatever the panel
        assert to_hex(cell.get_facecolor()) == to_hex(cmap(float(texts[key]) / 100)), key
    assert {a for _, _, a in measured} == {summary.CLEAN, PGD, FGSM}
    panels = {p for p, _, a in measured if a == FGSM}
    assert len(panels) == 2 and any("transferred from natural" in p for p in panels)
    # brighter is more accurate: 0% is the darkest colour, 99% near the brightest
    lum = {v: sum(np.array(cmap(v / 100)[:3]) * [0.2126, 0.7152, 0.0722]) for v in (0, 34, 99)}
    assert lum[0] < lum[34] < lum[99]
    ticks = [t.get_text() for ax in _panels(fig) for t in ax.get_xticklabels()]
    assert "PGD-40 X-ent, ε=0.3, step\n0.01, random start" in ticks and "FGSM CW, ε=0.3" in ticks
    assert fig.axes[-1].get_ylabel() == "accuracy (%)"
    plt.close(fig)


def test_summary_draws_not_measured_apart_from_zero(measurements):
    import matplotlib.pyplot as plt

    fig = summary.draw_summary(measurements)
    cells, texts = _cells(fig), _texts(fig)
    white = next(_title(ax) for ax in _panels(fig) if _title(ax).startswith("white"))
    # measured 0: a cell of the scale's darkest colour reading 0.0
    zero = (white, "label smoothing (α=0.2)", FGSM)
    assert zero in cells and texts[zero] == "0.0"
    # not measured: a hatched cell and no number
    for model in ("natural", "label smoothing (α=0.1)", "logit squeezing + noise (seed 1)"):
        key = (white, model, FGSM)
        assert key not in cells and key not in texts
        assert cells[(*key, "n/m")].get_hatch() == summary.HATCH["hatch"]
    assert (white, "natural", PGD, "n/m") in cells and (white, "natural", PGD) not in texts
    assert texts[(white, "logit squeezing + noise (seed 0)", FGSM)] == "68.0"
    # every model × attack cell of a panel is either measured (with its number) or hatched
    for ax in _panels(fig):
        attacks = {k[2] for k in cells if k[0] == _title(ax)}
        for model in NAMES:
            for a in attacks:
                key = (_title(ax), model, a)
                assert (key in cells and key in texts) != ((*key, "n/m") in cells), key
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["not measured"]
    plt.close(fig)


def test_summary_of_many_models_stays_legible():
    """14 models, 8 attacks: one cell per number, none stacked or overlapping, and the figure
    grows with the models instead of squeezing them."""
    import matplotlib.pyplot as plt

    rows = []
    for i in range(14):
        c = _cell(f"ls0-sq{i}-gn0.5-k20k-s0", beta=float(i), sigma=0.5)
        clean = {"threat": "none", **{k: None for k in _attack(PGD) if k != "threat"}}
        rows.append({**c, **clean, "metric": "test_accuracy", "value": 0.99, "n": None})
        for j in range(7):
            aid = f"pgd-xent-n{10 * (j + 1)}-e0.3-a0.01-r1-rand"
            if (i + j) % 5:
                rows.append({**c, **_attack(aid), "attack_steps": 10 * (j + 1),
                             "metric": "accuracy", "value": (i + j) % 3 / 3, "n": 1000})
    fig = summary.draw_summary(pd.DataFrame(rows))
    fig.canvas.draw()
    boxes = [t.get_window_extent() for ax in _panels(fig) for t in ax.texts]
    assert len(boxes) == 14 + sum(1 for r in rows if r["metric"] == "accuracy")
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert fig.get_size_inches()[1] > 0.3 * 14
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
    fig = summary.draw_summary(pd.read_parquet(run / "measurements.parquet"))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        "natural", "Gaussian noise", "logit squeezing + noise"]
    assert [" ".join(_title(ax).split()) for ax in _panels(fig)] == [
        "clean test images", "white-box attacks", "black-box attacks (transferred from natural)",
        "worst case over the attacks"]
    plt.close(fig)


def test_attack_label_of_an_unbounded_attack():
    """+inf (the long form's unbounded ε) and NaN (runs kept from before) both read ε=∞."""
    row = {**_attack(PGD), "metric": "accuracy", "attack_steps": 100, "step_size": 0.05}
    for eps in (float("inf"), float("nan")):
        assert summary.attack_label({**row, "eps": eps}).startswith("PGD-100 X-ent, ε=∞, step")
    assert summary.attack_label({**row, "eps": 0.3}).startswith("PGD-100 X-ent, ε=0.3, step")
