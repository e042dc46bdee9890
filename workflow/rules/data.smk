rule data:
    output:
        train=f"{DATA}/{{dataset}}/train.pt",
        test=f"{DATA}/{{dataset}}/test.pt",
    log:
        f"{DATA}/logs/{{dataset}}.log",
    conda:
        ENV
    params:
        code=CODE["data"],
        mirror=mirror_arg,
        raw=raw_dir,
        out=lambda w, output: str(Path(output.train).parent),
    shell:
        "python -m lsqueeze data --dataset {wildcards.dataset} --out-dir {params.out:q}"
        " --raw-dir {params.raw:q} {params.mirror} > {log:q} 2>&1"
