"""Reproduction pipeline for Shafahi et al. (2019), label smoothing and logit squeezing."""

__version__ = "0.1.0"


def load_model(model_dir, device="cpu"):
    """A trained model of a model directory (model.pt + metrics.json), checked against the sha256
    its training recorded, in eval mode, NCHW, taking images in [0, 1]:

        import lsqueeze
        model = lsqueeze.load_model("results/store/mnist/<recipe key>/<cell id>")
        logits = model(x)

    See lsqueeze.export.load_model (imported here only when called: `import lsqueeze` stays
    free of torch)."""
    from lsqueeze.export import load_model as load

    return load(model_dir, device)
