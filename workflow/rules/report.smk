# Aggregation: every fragment -> long-form Parquet, the paper's tables, Markdown/HTML (and one
# HTML page per table for the report).
# Outputs flagged with report() land in `snakemake --report` with the captions in workflow/report/.


rule tables_plan:
    output:
        PLAN_FILE,
    log:
        f"{RES}/logs/tables_plan.log",
    localrule: True
    conda:
        ENV
    params:
        plan=PLAN_JSON,  # the params trigger: rewritten exactly when the plan changes
        reference_sha256=REFERENCE_SHA256,  # the published values, by content (common.smk)
        reference=lambda w, input: REFERENCE,
    shell:
        "python -m lsqueeze plan --plan {params.plan:q} --reference {params.reference:q}"
        " --out {output:q} > {log:q} 2>&1"


rule aggregate:
    input:
        plan=PLAN_FILE,
        fragments=LAYOUT.fragments() + list(LAYOUT.analyses()),
    output:
        # The report shows HTML as a page but Parquet only as base64 text: the Parquet files are
        # plain outputs, and their content reaches the report as HTML tables.
        long=f"{RES}/tables/measurements.parquet",
        long_html=report(
            f"{RES}/tables/measurements.html",
            caption="../report/measurements.rst",
            category="Tables",
            labels={"table": "all measurements", "kind": "long form"},
        ),
        md=f"{RES}/tables/tables.md",
        masking=f"{RES}/tables/masking.parquet",
        html=report(
            f"{RES}/tables/tables.html",
            caption="../report/tables.rst",
            category="Tables",
            labels={"table": "all tables", "kind": "measured vs published"},
        ),
        layout=[f"{RES}/tables/table_{t}.parquet" for t in TABLE_IDS],
        compare=[f"{RES}/tables/table_{t}_compare.parquet" for t in TABLE_IDS],
        pages=[
            report(
                f"{RES}/tables/table_{t}.html",
                caption="../report/table.rst",
                category="Tables",
                labels={"table": t, "kind": "measured vs published"},
            )
            for t in TABLE_IDS
        ],
    log:
        f"{RES}/logs/aggregate.log",
    localrule: True
    conda:
        ENV
    params:
        code=CODE["tables"],
        out=lambda w, output: str(Path(output.long).parent),
        reference_sha256=REFERENCE_SHA256,
        reference=lambda w, input: REFERENCE,
    shell:
        "python -m lsqueeze aggregate --plan {input.plan:q} --reference {params.reference:q}"
        " --inputs {input.fragments:q} --out-dir {params.out:q} > {log:q} 2>&1"
