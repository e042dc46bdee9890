# Black-box sets: crafted once on the source model, stored, reused by every target.


rule craft:
    input:
        model=SOURCE_MODEL,
        test=TEST_SET,
    output:
        ADV_SET,
    log:
        f"{STORE}/logs/craft/{{dataset}}/{{recipe}}/{{source}}/{{subset}}/{{attack}}.log",
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
        spec=lambda w: LAYOUT.spec_json(cid(w, w.source)),
        attack=attack_json,
        n=subset_flag,
        data=data_dir,
    shell:
        'OMP_NUM_THREADS={threads} python -m lsqueeze craft --device "${{LSQUEEZE_DEVICE:-{DEVICE}}}"'
        " --spec {params.spec:q} --model {input.model:q} --data-dir {params.data:q}"
        " --attack {params.attack:q} {params.n} --batch-size {resources.eval_batch} --out {output:q}"
        " > {log:q} 2>&1"
