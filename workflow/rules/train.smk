# Run options (`train:` in the preset) reach the job as LSQUEEZE_TRAIN_OPTIONS (common.smk), not
# as a rule parameter: changing them must not retrain anything.


rule train:
    input:
        unpack(train_data),
    output:
        model=MODEL,
        metrics=f"{CELL}/metrics.json",
    log:
        f"{STORE}/logs/train/{{dataset}}/{{recipe}}/{{tag}}.log",
    conda:
        ENV
    # One thread per training: on a small CPU two cells then train side by side, which beats one
    # cell on two threads (small convolutions scale poorly across threads).
    threads: 1
    resources:
        gpu=1,
    params:
        code=CODE["train"],
        spec=cell_spec,
        out=lambda w, output: str(Path(output.model).parent),
        data=data_dir,
    shell:
        'OMP_NUM_THREADS={threads} python -m lsqueeze train --device "${{LSQUEEZE_DEVICE:-{DEVICE}}}"'
        " --spec {params.spec:q} --data-dir {params.data:q} --out-dir {params.out:q}"
        ' --options "${{LSQUEEZE_TRAIN_OPTIONS:-{TRAIN_OPTIONS}}}" --no-progress > {log:q} 2>&1'
