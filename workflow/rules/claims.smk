# Claims: the paper's headline claims (src/lsqueeze/data/claims.yaml) checked against the aggregated tables,
# one verdict per claim (lsqueeze.report.claims). Reads only what aggregate wrote; no model is loaded.


rule claims:
    input:
        plan=PLAN_FILE,
        long=f"{RES}/tables/measurements.parquet",
        masking=f"{RES}/tables/masking.parquet",
        compare=[f"{RES}/tables/table_{t}_compare.parquet" for t in TABLE_IDS],
    output:
        md=f"{RES}/tables/claims.md",
        parquet=f"{RES}/tables/claims.parquet",
        html=report(
            f"{RES}/tables/claims.html",
            caption="../report/claims.rst",
            category="Claims",
            labels={"table": "claims", "kind": "verdicts"},
        ),
    log:
        f"{RES}/logs/claims.log",
    localrule: True
    conda:
        ENV
    params:
        code=CODE["claims_report"],
        tables=lambda w, input: str(Path(input.long).parent),
        preset=config.get("preset", ""),
        note=config.get("claims", {}).get("note", ""),
        claims_sha256=CLAIMS_SHA256,  # the claims file, by content (common.smk)
        claims=lambda w, input: CLAIMS_FILE,
    # --preset=, --note=: Snakemake's :q leaves '' unquoted, i.e. gone, after a space
    shell:
        "python -m lsqueeze claims --plan {input.plan:q} --claims {params.claims:q}"
        " --tables {params.tables:q} --out-dir {params.tables:q} --preset={params.preset:q}"
        " --note={params.note:q} > {log:q} 2>&1"
