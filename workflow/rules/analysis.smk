rule analyze:
    input:
        model=model_of,
        test=TEST_SET,
    output:
        f"{RES}/analysis/{{dataset}}/{{tag}}/linear.parquet",
    log:
        f"{RES}/logs/analyze/{{dataset}}/{{tag}}.log",
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
    params:
        code=CODE["analysis"],
        spec=cell_spec,
        n=N_ANALYSIS,
        data=data_dir,
    shell:
        'OMP_NUM_THREADS={threads} python -m lsqueeze analyze --device "${{LSQUEEZE_DEVICE:-{DEVICE}}}"'
        " --spec {params.spec:q} --model {input.model:q} --data-dir {params.data:q} {params.n}"
        " --out {output:q} > {log:q} 2>&1"


rule landscape:
    input:
        model=model_of,
        test=TEST_SET,
    output:
        f"{RES}/analysis/{{dataset}}/{{tag}}/landscape-e{{eps}}.parquet",
    log:
        f"{RES}/logs/landscape/{{dataset}}/{{tag}}-e{{eps}}.log",
    wildcard_constraints:
        eps=r"[0-9][0-9.e+\-]*",
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
    params:
        code=CODE["analysis"],
        spec=cell_spec,
        points=ANALYSIS.get("landscape_points", 21),
        images=ANALYSIS.get("landscape_images", 8),
        data=data_dir,
    shell:
        'OMP_NUM_THREADS={threads} python -m lsqueeze landscape --device "${{LSQUEEZE_DEVICE:-{DEVICE}}}"'
        " --spec {params.spec:q} --model {input.model:q} --data-dir {params.data:q}"
        " --eps {wildcards.eps} --points {params.points} --images {params.images}"
        " --out {output:q} > {log:q} 2>&1"


rule activations:
    input:
        model=model_of,
        test=TEST_SET,
    output:
        f"{RES}/analysis/{{dataset}}/{{tag}}/activations.parquet",
    log:
        f"{RES}/logs/activations/{{dataset}}/{{tag}}.log",
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
    params:
        code=CODE["analysis"],
        spec=cell_spec,
        n=N_ANALYSIS,
        tol=ANALYSIS.get("inactive_tol", 0.0),
        data=data_dir,
    shell:
        'OMP_NUM_THREADS={threads} python -m lsqueeze activations --device "${{LSQUEEZE_DEVICE:-{DEVICE}}}"'
        " --spec {params.spec:q} --model {input.model:q} --data-dir {params.data:q} {params.n}"
        " --inactive-tol {params.tol} --out {output:q} > {log:q} 2>&1"
