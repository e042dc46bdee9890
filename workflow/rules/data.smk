def mirror_arg(w):
    mirror = config.get("mirrors", {}).get(w.dataset)
    return f"--mirror {mirror}" if mirror else ""


rule data:
    output:
        train=f"{DATA}/{{dataset}}/train.pt",
        test=f"{DATA}/{{dataset}}/test.pt",
    params:
        code=CODE["data"],
        mirror=mirror_arg,
    log:
        f"{DATA}/logs/{{dataset}}.log",
    shell:
        "{PY} -m lsqueeze data --dataset {wildcards.dataset} --out-dir {DATA}/{wildcards.dataset}"
        " --raw-dir {DATA}/raw/{wildcards.dataset} {params.mirror} > {log} 2>&1"
