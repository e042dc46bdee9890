import shlex


def mirror_arg(w):
    mirror = config.get("mirrors", {}).get(w.dataset)
    return f"--mirror {shlex.quote(mirror)}" if mirror else ""


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
        "{PY:q} -m lsqueeze data --dataset {wildcards.dataset} --out-dir \"$(dirname {output.train:q})\""
        " --raw-dir {DATA:q}/raw/{wildcards.dataset} {params.mirror} > {log:q} 2>&1"
