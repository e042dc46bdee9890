# Black-box sets: crafted once on the source model, stored, reused by every target.


rule craft:
    input:
        model=f"{RES}/models/{{dataset}}/{{source}}/model.pt",
        test=f"{DATA}/{{dataset}}/test.pt",
    output:
        f"{RES}/adv/{{dataset}}/{{source}}/{{attack}}.pt",
    params:
        code=CODE["evaluate"],
        spec=lambda w: spec_json(f"{w.dataset}/{w.source}"),
        attack=attack_json,
        n=f"--n {EVAL['n_test']}" if EVAL.get("n_test") else "",
        bs=EVAL.get("batch_size", 500),
    threads: 1
    resources:
        gpu=1,
    log:
        f"{RES}/logs/craft/{{dataset}}/{{source}}/{{attack}}.log",
    shell:
        "OMP_NUM_THREADS={threads} {PY:q} -m lsqueeze craft --device {DEVICE} --spec {params.spec:q} --model {input.model:q}"
        " --data-dir \"$(dirname {input.test:q})\" --attack {params.attack:q} {params.n}"
        " --batch-size {params.bs} --out {output:q} > {log:q} 2>&1"
