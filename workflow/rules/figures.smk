# The paper's figures: one job per configured figure (`figures:` in the preset; FIGS in
# common.smk), reading the per-model analysis Parquets of its cells in the figure's order; and the
# summary of every measurement, drawn for every preset.


rule figure_summary:
    input:
        f"{RES}/tables/measurements.parquet",
    output:
        png=report(
            f"{RES}/figures/summary.png",
            caption="../report/summary.rst",
            category="Figures",
            subcategory="summary",
        ),
        pdf=f"{RES}/figures/summary.pdf",
    log:
        f"{RES}/logs/figure_summary.log",
    localrule: True
    conda:
        ENV
    params:
        code=CODE["summary"],
    shell:
        "python -m lsqueeze figure --measurements {input:q} --out {output.png:q} > {log:q} 2>&1"


if FIGS:

    rule figure:
        input:
            figure_inputs,
        output:
            png=report(
                f"{RES}/figures/{{figure}}.png",
                caption="../report/figure.rst",
                category="Figures",
                subcategory="{figure}",
            ),
            pdf=f"{RES}/figures/{{figure}}.pdf",  # drawn beside the PNG by the same call
        log:
            f"{RES}/logs/figures/{{figure}}.log",
        wildcard_constraints:
            figure=FIGURE_NAMES,
        localrule: True
        conda:
            ENV
        params:
            code=CODE["figures"],
            kind=lambda w: FIGS[w.figure]["kind"],
            spec=figure_spec,
        shell:
            "MPLBACKEND=Agg python -m lsqueeze figure --kind {params.kind:q} --spec {params.spec:q}"
            " --inputs {input:q} --out {output.png:q} > {log:q} 2>&1"
