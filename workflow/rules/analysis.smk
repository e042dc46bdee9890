rule analyze:
    input:
        model=f"{RES}/models/{{dataset}}/{{tag}}/model.pt",
        test=f"{DATA}/{{dataset}}/test.pt",
    output:
        f"{RES}/analysis/{{dataset}}/{{tag}}/linear.parquet",
    params:
        code=CODE["analysis"],
        spec=lambda w: spec_json(cid(w)),
        n=lambda w: f"--n {config.get('analysis', {}).get('n_test')}"
        if config.get("analysis", {}).get("n_test")
        else "",
    threads: 1
    resources:
        gpu=1,
    log:
        f"{RES}/logs/analyze/{{dataset}}/{{tag}}.log",
    shell:
        "OMP_NUM_THREADS={threads} {PY:q} -m lsqueeze analyze --device {DEVICE} --spec {params.spec:q} --model {input.model:q}"
        " --data-dir \"$(dirname {input.test:q})\" {params.n} --out {output:q} > {log:q} 2>&1"


ANALYSIS = config.get("analysis", {})


rule landscape:
    input:
        model=f"{RES}/models/{{dataset}}/{{tag}}/model.pt",
        test=f"{DATA}/{{dataset}}/test.pt",
    output:
        f"{RES}/analysis/{{dataset}}/{{tag}}/landscape-e{{eps}}.parquet",
    params:
        code=CODE["analysis"],
        spec=lambda w: spec_json(cid(w)),
        points=ANALYSIS.get("landscape_points", 21),
        images=ANALYSIS.get("landscape_images", 8),
    wildcard_constraints:
        eps="[0-9][0-9.e+\-]*",
    threads: 1
    resources:
        gpu=1,
    log:
        f"{RES}/logs/landscape/{{dataset}}/{{tag}}-e{{eps}}.log",
    shell:
        "OMP_NUM_THREADS={threads} {PY:q} -m lsqueeze landscape --device {DEVICE} --spec {params.spec:q} --model {input.model:q}"
        " --data-dir \"$(dirname {input.test:q})\" --eps {wildcards.eps} --points {params.points}"
        " --images {params.images} --out {output:q} > {log:q} 2>&1"


rule activations:
    input:
        model=f"{RES}/models/{{dataset}}/{{tag}}/model.pt",
        test=f"{DATA}/{{dataset}}/test.pt",
    output:
        f"{RES}/analysis/{{dataset}}/{{tag}}/activations.parquet",
    params:
        code=CODE["analysis"],
        spec=lambda w: spec_json(cid(w)),
        n=f"--n {ANALYSIS['n_test']}" if ANALYSIS.get("n_test") else "",
        tol=ANALYSIS.get("inactive_tol", 0.0),
    threads: 1
    resources:
        gpu=1,
    log:
        f"{RES}/logs/activations/{{dataset}}/{{tag}}.log",
    shell:
        "OMP_NUM_THREADS={threads} {PY:q} -m lsqueeze activations --device {DEVICE} --spec {params.spec:q} --model {input.model:q}"
        " --data-dir \"$(dirname {input.test:q})\" {params.n} --inactive-tol {params.tol} --out {output:q}"
        " > {log:q} 2>&1"
