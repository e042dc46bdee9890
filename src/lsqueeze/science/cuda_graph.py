"""The training step as one CUDA graph: the small-model lever of `lsqueeze train` on a GPU.

A Madry CNN step at batch 50 is a few dozen tiny kernels; launched one by one from Python they
leave an H100 idle most of the time (one process: ~4 ms a step). Captured once as a CUDA graph,
a step is a single launch. The graph records exactly the loop body of `train.train`, which
calls the same `step.step_loss` (batch gather from the uint8 tensor on the device,
augmentation and Gaussian noise from the cell's seeded generator, forward under the run's
autocast, loss, backward, optimizer step), so replaying it computes what the plain loop
computes:

- the batch indices come from the same `Batches` sampler (on the host) and are copied into a
  static index buffer before each replay;
- the generator is registered with the graph, so each replay advances its Philox offset as the
  eager ops would: the random draws are the eager draws;
- the optimizer is switched to its `capturable` form (state on the device), the one numerical
  difference from a plain run on a GPU: the same update written with device tensors, equal
  within float rounding;
- a change of learning rate (a schedule milestone) recaptures the graph;
- NaN/inf is accumulated on the device and read by the plain loop at its sync points.

Only steps that need no host work run as a replay: the training loop runs every step on which it
reads the loss, checkpoints or stops itself, so checkpoints, progress and divergence handling are
the plain loop's. Madry adversarial training (PGD inside the step) keeps the plain loop.

It is opt-in (`train.cuda_graphs: true`) until a GPU run of bench/gpu.sh has shown the same
seed's weights and accuracy equal to the plain loop's: a fast path that has not been compared on
the hardware is not trusted with a paper number. On a CPU it is never used by `train`; the tests
run the same step eagerly (`capture=False`) and check that it gives the plain loop's weights.
"""

from __future__ import annotations

import sys

import torch

from lsqueeze.science.step import step_loss

WARMUP = 3  # eager steps before capture: lazy optimizer state, cuDNN/cuBLAS handles, allocator
ON_DEVICES = ("cuda",)  # where `train` uses it (tests add "cpu": the same step, run eagerly)


def _lrs(opt):
    return tuple(float(g["lr"]) for g in opt.param_groups)


class GraphedStep:
    """One training step on a static index buffer: replayed as a CUDA graph, or run eagerly."""

    def __init__(self, model, fwd, opt, cell, recipe, adv, gen, x_tr, y_tr, autocast_kwargs,
                 opts: dict, capture: bool):
        self.model, self.fwd, self.opt, self.gen = model, fwd, opt, gen
        self.cell, self.recipe, self.adv = cell, recipe, adv
        self.x_tr, self.y_tr = x_tr, y_tr
        self.autocast_kwargs = autocast_kwargs
        self.sync_every, self.checkpoint_every = opts["sync_every"], opts["checkpoint_every"]
        device = x_tr.device
        self.idx = torch.zeros(recipe["batch_size"], dtype=torch.long, device=device)
        self.finite = torch.ones((), dtype=torch.bool, device=device)
        self.capture = capture
        self.graph, self.graph_lrs, self.warm = None, None, 0
        if capture:
            _make_capturable(opt, device)

    def quiet(self, next_step: int, steps: int, stop_requested: bool) -> bool:
        """True when the loop needs no host work after this step (no loss read, checkpoint, stop)."""
        return not (stop_requested or next_step >= steps or next_step % self.sync_every == 0
                    or next_step % self.checkpoint_every == 0)

    def _body(self):
        """The plain loop's step from the batch to the optimizer update, gradients already None."""
        idx = self.idx
        y = self.y_tr[idx]
        # no autocast weight cache: a graph must recompute the casts on every replay
        autocast = torch.autocast(**self.autocast_kwargs, cache_enabled=False)
        loss = step_loss(self.fwd, self.x_tr[idx], y, self.cell, self.recipe, self.adv, self.gen,
                         autocast)
        self.finite &= torch.isfinite(loss)
        loss.backward()
        self.opt.step()

    def _eager(self):
        self.opt.zero_grad(set_to_none=True)
        self._body()

    def _capture(self):
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.gen)
        self.opt.zero_grad(set_to_none=True)  # backward inside the graph allocates the grads
        with torch.cuda.graph(graph):
            self._body()
        self.graph, self.graph_lrs = graph, _lrs(self.opt)

    def __call__(self, idx, finite=None):
        """One step on batch `idx`; returns the device flag 'every loss so far was finite'."""
        self.idx.copy_(idx)
        if finite is not None:  # what the plain steps since the last sync saw
            self.finite &= finite
        if not self.capture:
            self._eager()
        elif self.warm < WARMUP:  # on a side stream, as torch.cuda.graph's documentation asks
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._eager()
            torch.cuda.current_stream().wait_stream(side)
            self.warm += 1
        else:
            if self.graph is None or self.graph_lrs != _lrs(self.opt):
                try:
                    self._capture()
                except Exception as exc:  # noqa: BLE001 - an op that cannot be captured: eager
                    print(f"lsqueeze: CUDA graph capture failed ({exc}); training eagerly",
                          file=sys.stderr, flush=True)
                    self.capture, self.graph = False, None
                    self._eager()
                    return self.finite
            self.graph.replay()
        return self.finite


def _make_capturable(opt, device):
    """Adam keeps its step count on the host unless `capturable`; a graph needs it on the device
    (a resumed plain run's optimizer state is moved there)."""
    if not isinstance(opt, torch.optim.Adam):
        return  # SGD with momentum has no host-side state
    for group in opt.param_groups:
        group["capturable"] = True
    for state in opt.state.values():
        if "step" in state and state["step"].device != device:
            state["step"] = state["step"].to(device=device, dtype=torch.float32)


def graphed_step(opts, device, model, fwd, opt, cell, recipe, adv, gen, x_tr, y_tr, precision):
    """The graphed step `train` replays on quiet steps, or None where the plain loop runs them:
    not switched on (`train.cuda_graphs`), not a GPU, torch.compile on, or an adversary."""
    if not opts.get("cuda_graphs", False) or device.type not in ON_DEVICES or opts["compile"]:
        return None
    if adv is not None:
        return None
    autocast_kwargs = {"device_type": device.type, "dtype": torch.bfloat16,
                       "enabled": precision == "bf16"}
    return GraphedStep(model, fwd, opt, cell, recipe, adv, gen, x_tr, y_tr, autocast_kwargs,
                       opts, capture=device.type == "cuda")
