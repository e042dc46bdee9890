# Run options are not a rule parameter on purpose: changing them must not retrain anything.
TRAIN_OPTIONS = json.dumps(config.get("train", {}), sort_keys=True)


def train_data(w):
    ds = PLAN.cells[cid(w)]["dataset"]
    return {"train": f"{DATA}/{ds}/train.pt", "test": f"{DATA}/{ds}/test.pt"}


rule train:
    input:
        unpack(train_data),
    output:
        model=f"{RES}/models/{{dataset}}/{{tag}}/model.pt",
        metrics=f"{RES}/models/{{dataset}}/{{tag}}/metrics.json",
    params:
        code=CODE["train"],
        spec=lambda w: spec_json(cid(w)),
        out=lambda w: f"{RES}/models/{cid(w)}",
    threads: 2
    resources:
        gpu=1,
    log:
        f"{RES}/logs/train/{{dataset}}/{{tag}}.log",
    shell:
        "OMP_NUM_THREADS={threads} {PY:q} -m lsqueeze train --device {DEVICE} --spec {params.spec:q}"
        " --data-dir \"$(dirname {input.train:q})\" --out-dir {params.out:q} --options {TRAIN_OPTIONS:q}"
        " --no-progress > {log:q} 2>&1"
