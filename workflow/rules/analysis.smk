rule analyze:
    input:
        model=f"{RES}/models/{{dataset}}/{{tag}}/model.pt",
        test=f"{DATA}/{{dataset}}/test.pt",
    output:
        f"{RES}/analysis/{{dataset}}/{{tag}}/linear.parquet",
    params:
        spec=lambda w: spec_json(cid(w)),
        n=lambda w: f"--n {config.get('analysis', {}).get('n_test')}"
        if config.get("analysis", {}).get("n_test")
        else "",
    threads: 1
    log:
        f"{RES}/logs/analyze/{{dataset}}/{{tag}}.log",
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m lsqueeze analyze --spec '{params.spec}' --model {input.model}"
        " --data-dir $(dirname {input.test}) {params.n} --out {output} > {log} 2>&1"
