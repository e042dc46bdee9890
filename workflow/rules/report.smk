# Aggregation: every fragment -> long-form Parquet, the paper's tables, Markdown/HTML.
# Outputs flagged with report() land in `snakemake --report` with the captions in workflow/report/.
TABLE_IDS = [t["id"] for t in PLAN.tables]


rule aggregate:
    input:
        plan=PLAN_FILE,
        reference=f"{workflow.basedir}/params/paper_tables.csv",
        fragments=METRICS + WHITE + BLACK + list(ANALYSES),
    output:
        long=report(f"{RES}/tables/measurements.parquet", caption="../report/measurements.rst",
                    category="Tables", labels={"table": "all measurements", "kind": "long-form"}),
        md=report(f"{RES}/tables/tables.md", caption="../report/tables.rst", category="Tables",
                  labels={"table": "all tables", "kind": "Markdown"}),
        masking=f"{RES}/tables/masking.parquet",
        html=report(f"{RES}/tables/tables.html", caption="../report/tables.rst", category="Tables",
                    labels={"table": "all tables", "kind": "HTML"}),
        layout=[report(f"{RES}/tables/table_{t}.parquet", caption="../report/table.rst",
                       category="Tables", labels={"table": t, "kind": "paper layout"})
                for t in TABLE_IDS],
        compare=[report(f"{RES}/tables/table_{t}_compare.parquet", caption="../report/compare.rst",
                        category="Tables", labels={"table": t, "kind": "measured vs published"})
                 for t in TABLE_IDS],
    params:
        code=CODE["tables"],
        out=f"{RES}/tables",
    log:
        f"{RES}/logs/aggregate.log",
    localrule: True
    shell:
        "{PY} -m lsqueeze aggregate --plan {input.plan} --reference {input.reference}"
        " --inputs {input.fragments} --out-dir {params.out} > {log} 2>&1"


rule figure_summary:
    input:
        f"{RES}/tables/measurements.parquet",
    output:
        f"{RES}/figures/summary.png",
    params:
        code=CODE["figures"],
    log:
        f"{RES}/logs/figure_summary.log",
    localrule: True
    shell:
        "{PY} -m lsqueeze figure --measurements {input} --out {output} > {log} 2>&1"
