# Black-box sets: crafted once on the source model, stored, reused by every target.


rule craft:
    input:
        model=SOURCE_MODEL,
        test=TEST_SET,
    output:
        f"{RES}/adv/{{dataset}}/{{source}}/{{attack}}.pt",
    log:
        f"{RES}/logs/craft/{{dataset}}/{{source}}/{{attack}}.log",
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
    params:
        code=CODE["evaluate"],
        spec=lambda w: spec_json(f"{w.dataset}/{w.source}"),
        attack=attack_json,
        n=N_EVAL,
        bs=EVAL.get("batch_size", 500),
        data=data_dir,
    shell:
        'OMP_NUM_THREADS={threads} python -m lsqueeze craft --device "${{LSQUEEZE_DEVICE:-{DEVICE}}}"'
        " --spec {params.spec:q} --model {input.model:q} --data-dir {params.data:q}"
        " --attack {params.attack:q} {params.n} --batch-size {params.bs} --out {output:q}"
        " > {log:q} 2>&1"
