rule aggregate:
    input:
        plan=PLAN_FILE,
        reference=f"{workflow.basedir}/params/paper_tables.csv",
        fragments=METRICS + WHITE + BLACK + list(ANALYSES),
    output:
        TABLES,
    params:
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
    log:
        f"{RES}/logs/figure_summary.log",
    localrule: True
    shell:
        "{PY} -m lsqueeze figure --measurements {input} --out {output} > {log} 2>&1"
