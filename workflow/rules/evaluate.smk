rule evaluate_white:
    input:
        model=f"{RES}/models/{{dataset}}/{{tag}}/model.pt",
        test=f"{DATA}/{{dataset}}/test.pt",
    output:
        f"{RES}/eval/{{dataset}}/{{tag}}/white/{{attack}}.json",
    params:
        code=CODE["evaluate"],
        spec=lambda w: spec_json(cid(w)),
        attack=attack_json,
        n=f"--n {EVAL['n_test']}" if EVAL.get("n_test") else "",
        bs=EVAL.get("batch_size", 500),
    threads: 1
    resources:
        gpu=1,
    log:
        f"{RES}/logs/white/{{dataset}}/{{tag}}/{{attack}}.log",
    shell:
        "OMP_NUM_THREADS={threads} {PY:q} -m lsqueeze evaluate --device {DEVICE} --spec {params.spec:q} --model {input.model:q}"
        " --data-dir \"$(dirname {input.test:q})\" --attack {params.attack:q} {params.n}"
        " --batch-size {params.bs} --out {output:q} > {log:q} 2>&1"


rule evaluate_black:
    input:
        model=f"{RES}/models/{{dataset}}/{{tag}}/model.pt",
        adv=f"{RES}/adv/{{dataset}}/{{source}}/{{attack}}.pt",
        source=f"{RES}/models/{{dataset}}/{{source}}/metrics.json",  # the set must match it
    output:
        f"{RES}/eval/{{dataset}}/{{tag}}/black/{{source}}/{{attack}}.json",
    params:
        code=CODE["evaluate"],
        spec=lambda w: spec_json(cid(w)),
        attack=attack_json,
    threads: 1
    log:
        f"{RES}/logs/black/{{dataset}}/{{tag}}/{{source}}/{{attack}}.log",
    shell:
        "OMP_NUM_THREADS={threads} {PY:q} -m lsqueeze transfer --spec {params.spec:q} --model {input.model:q}"
        " --adv-set {input.adv:q} --source-metrics {input.source:q} --attack {params.attack:q}"
        " --out {output:q} > {log:q} 2>&1"
