"""The graphed training step (lsqueeze.science.cuda_graph) computes what the plain loop computes.

On a CPU the step runs eagerly (no capture): the same code the GPU captures, mixed with plain
steps exactly as `train` mixes them, must give the plain loop's weights bit for bit. On a GPU the
captured graph is checked against the plain loop too (within float rounding: the capturable
optimizer); that test skips without one."""

import pytest
import torch

from lsqueeze.jobs.data import prepare
from lsqueeze.jobs.train import train
from lsqueeze.plan import build as C
from lsqueeze.runtime.files import load_torch
from lsqueeze.science import cuda_graph as fast


def spec(dataset, steps, recipe=None, **cell):
    c = C.resolve_cell({}, {"dataset": dataset, "steps": steps, **cell})
    return {"id": C.cell_id(c), "cell": c, "recipe": C._deep_merge(C.RECIPES[dataset], recipe or {})}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = {}
    for name in ("digits28", "digits32"):
        out[name] = tmp_path_factory.mktemp(name)
        prepare(name, out[name])
    return out


def _run(s, data_dir, out, options, monkeypatch, graphed: bool):
    calls = []
    if graphed:
        monkeypatch.setattr(fast, "ON_DEVICES", ("cuda", "cpu"))
        real = fast.GraphedStep.__call__
        monkeypatch.setattr(fast.GraphedStep, "__call__",
                            lambda self, *a: calls.append(1) or real(self, *a))
    m = train(s, data_dir, out, progress=False, log_every=None,
              options={**options, "cuda_graphs": graphed})
    monkeypatch.undo()
    return m, load_torch(out / "model.pt"), len(calls)


CASES = {
    # Madry CNN: Adam, summed CE, label smoothing + squeezing + Gaussian noise (the generator)
    "cnn-smooth-squeeze-noise": ("digits28", 23, {}, {"alpha": 0.2, "beta": 0.5, "sigma": 0.3}),
    # WRN: SGD + momentum + weight decay, crop/flip, batch norm, an lr milestone mid-run
    "wrn-noise-lr-drop": ("digits32", 11, {"lr_boundaries": [0.5]}, {"sigma": 20.0}),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_eager_graph_step_gives_the_plain_loops_weights(data, tmp_path, monkeypatch, one_thread,
                                                        case, precision):
    dataset, steps, recipe, cell = CASES[case]
    s = spec(dataset, steps, recipe, **cell)
    opts = {"precision": precision, "sync_every": 5, "checkpoint_every": 7, "device": "cpu"}
    m_plain, w_plain, n_plain = _run(s, data[dataset], tmp_path / "plain", opts, monkeypatch, False)
    m_fast, w_fast, n_fast = _run(s, data[dataset], tmp_path / "fast", opts, monkeypatch, True)
    # host work (loss read every 5th step, checkpoint every 7th, the last) stays with the loop
    host_steps = len({i for i in range(1, steps + 1) if i % 5 == 0 or i % 7 == 0 or i == steps})
    assert n_plain == 0 and n_fast == steps - host_steps > steps // 2
    assert w_plain.keys() == w_fast.keys()
    for k in w_plain:
        assert torch.equal(w_plain[k], w_fast[k]), k
    for key in ("train_accuracy", "test_accuracy", "final_loss", "mean_logit_norm", "steps_done",
                "diverged"):
        assert m_plain[key] == m_fast[key], key


def test_divergence_is_still_recorded(data, tmp_path, monkeypatch, one_thread):
    s = spec("digits28", 40, {"lr": 1e6}, beta=0.0)
    opts = {"precision": "fp32", "sync_every": 4, "device": "cpu"}
    m, _, n = _run(s, data["digits28"], tmp_path / "fast", opts, monkeypatch, True)
    assert m["diverged"] and n > 0
    assert m["steps_done"] < 40


def test_used_only_where_it_applies(data):
    x, y = torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)
    s = spec("digits28", 10)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.Adam(model.parameters())
    base = {"cuda_graphs": True, "compile": False, "sync_every": 50, "checkpoint_every": 1000}
    args = (model, model, opt, s["cell"], s["recipe"])
    cpu = torch.device("cpu")
    assert fast.graphed_step(base, cpu, *args, None, None, x, y, "fp32") is None  # not a GPU
    cuda = torch.device("cuda")
    assert fast.graphed_step({**base, "cuda_graphs": False}, cuda, *args, None, None, x, y,
                             "fp32") is None
    assert fast.graphed_step({**base, "compile": True}, cuda, *args, None, None, x, y,
                             "fp32") is None
    adv = {"steps": 40, "eps": 0.3}  # Madry training keeps the plain loop
    assert fast.graphed_step(base, cuda, *args, adv, None, x, y, "fp32") is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# Measured on an H200 (torch 2.11, bf16 autocast): after 200 steps the graph step's weights differ
# from the plain loop's by up to ~0.006 (conv1), beyond this tolerance; after 4,000 steps by 0.066,
# with test accuracy 97.62% vs 97.68% (bench/gpu.sh). Whether that is more than the plain loop's
# own run-to-run spread on a GPU is not measured yet, so `cuda_graphs` stays opt-in. strict: the
# day the two agree, this test fails and the option can become the default.
@pytest.mark.xfail(strict=True, reason="CUDA-graph weights differ from the plain loop's on a GPU")
def test_cuda_graph_matches_the_plain_loop_on_a_gpu(data, tmp_path):
    s = spec("digits28", 200, alpha=0.2, sigma=0.3)
    opts = {"sync_every": 50, "checkpoint_every": 1000, "device": "cuda"}
    out = {}
    for graphs in (False, True):
        m = train(s, data["digits28"], tmp_path / str(graphs), progress=False, log_every=None,
                  options={**opts, "cuda_graphs": graphs})
        out[graphs] = (m, load_torch(tmp_path / str(graphs) / "model.pt"))
    (m0, w0), (m1, w1) = out[False], out[True]
    for k in w0:  # the capturable Adam is the same update with device tensors: float rounding
        assert torch.allclose(w0[k].float(), w1[k].float(), rtol=1e-3, atol=1e-4), k
    assert abs(m0["test_accuracy"] - m1["test_accuracy"]) <= 0.01
