# The paper's figures: one job per configured figure (`figures:` in the preset), reading the
# per-model analysis Parquets of its cells in the figure's order.
import json
import re

from lsqueeze.config import num

FIGS = {f["name"]: f for f in PLAN.figures}
LANDSCAPE_EPS = 10.0  # the paper's −10 ≤ ε1, ε2 ≤ 10 (Figures 5, 9)


def figure_inputs(w):
    """landscape_* kinds read landscape-e<eps>.parquet, activations_* activations.parquet, the
    rest the linear-model analysis (lsqueeze.figures.KINDS says the same; not imported here so
    that parsing the workflow does not load matplotlib)."""
    fig = FIGS[w.figure]
    if fig["kind"].startswith("landscape"):
        name = f"landscape-e{num(fig['eps'] or LANDSCAPE_EPS)}.parquet"
    elif fig["kind"].startswith("activations"):
        name = "activations.parquet"
    else:
        name = "linear.parquet"
    return [f"{RES}/analysis/{c}/{name}" for c in fig["cells"]]


def figure_spec(w):
    fig = FIGS[w.figure]
    scales = [PLAN.recipe(PLAN.cells[c]["dataset"])["pixel_scale"] for c in fig["cells"]]
    spec = {"title": fig["title"], "labels": fig["labels"], "pixel_scales": scales,
            "eps": fig["eps"]}
    return json.dumps(spec, sort_keys=True)


if FIGS:

    rule figure:
        input:
            figure_inputs,
        output:
            png=report(f"{RES}/figures/{{figure}}.png", caption="../report/figure.rst",
                       category="Figures", subcategory="{figure}"),
            pdf=f"{RES}/figures/{{figure}}.pdf",  # drawn beside the PNG by the same call
        params:
            code=CODE["figures"],
            kind=lambda w: FIGS[w.figure]["kind"],
            spec=figure_spec,
        wildcard_constraints:
            figure="|".join(map(re.escape, FIGS)),
        log:
            f"{RES}/logs/figures/{{figure}}.log",
        localrule: True
        shell:
            "MPLBACKEND=Agg {PY:q} -m lsqueeze figure --kind {params.kind:q} --spec {params.spec:q}"
            " --inputs {input:q} --out {output.png:q} > {log:q} 2>&1"
