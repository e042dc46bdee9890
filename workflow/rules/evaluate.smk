rule evaluate_white:
    input:
        model=MODEL,
        test=TEST_SET,
    output:
        f"{CELL}/eval-{{subset}}/white/{{attack}}.json",
    log:
        f"{STORE}/logs/white/{{dataset}}/{{recipe}}/{{tag}}/{{subset}}/{{attack}}.log",
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        # a resource, not a param: params are a rerun trigger, and the batch changes no number
        # (AutoAttack runs in its own fixed batch)
        eval_batch=EVAL.get("batch_size", 500),
    params:
        code=CODE["evaluate"],
        spec=cell_spec,
        attack=attack_json,
        n=subset_flag,
        data=data_dir,
    shell:
        'OMP_NUM_THREADS={threads} python -m lsqueeze evaluate --device "${{LSQUEEZE_DEVICE:-{DEVICE}}}"'
        " --spec {params.spec:q} --model {input.model:q} --data-dir {params.data:q}"
        " --attack {params.attack:q} {params.n} --batch-size {resources.eval_batch} --out {output:q}"
        " > {log:q} 2>&1"


rule evaluate_black:
    input:
        model=MODEL,
        adv=ADV_SET,
        source=SOURCE_METRICS,  # the set must match it
    output:
        f"{CELL}/eval-{{subset}}/black/{{source}}/{{attack}}.json",
    log:
        f"{STORE}/logs/black/{{dataset}}/{{recipe}}/{{tag}}/{{subset}}/{{source}}/{{attack}}.log",
    conda:
        ENV
    threads: 1
    params:
        code=CODE["evaluate"],
        spec=cell_spec,
        attack=attack_json,
    shell:
        "OMP_NUM_THREADS={threads} python -m lsqueeze transfer --spec {params.spec:q}"
        " --model {input.model:q} --adv-set {input.adv:q} --source-metrics {input.source:q}"
        " --attack {params.attack:q} --out {output:q} > {log:q} 2>&1"
