"""The datasets a preset may name (`dataset: mnist`): one entry each, the single source of its
training recipe (the schema's dataset enum is these names), its image shape and test-set size
(cost projection, model export), Madry's adversarial-training attack for it, and the function
that downloads and converts it.

No torch here: planning, validation and cost read this module. `load` names the converter as
"lsqueeze.<module>:<function>" (lsqueeze.registries.base); the function takes (name, raw directory,
mirror URL or None) and returns {"train": {"x": uint8 N×C×H×W, "y": int64 N}, "test": ...}.
A recipe is part of every model's store address (lsqueeze.plan.build.Plan.recipe_key): editing one
gives its cells a new address, never a silent retrain in place.
"""

from __future__ import annotations

from dataclasses import dataclass

from lsqueeze.registries.base import FieldView

# The Madry recipes the paper reuses (README, "Units and definitions"; FIDELITY.md gives each key's
# source); a preset may override any key. `ce_reduction` sets the CE scale Madry's learning rates
# were tuned for; β means the same under either (lsqueeze.science.step.regularized_loss).
MADRY_WRN = {"name": "madry_wrn", "units": 5, "widen": 10, "base": 16}  # cifar10_challenge "w28-10"


def _madry_cifar(**over) -> dict:
    """cifar10_challenge's recipe (w28-10, SGD with its lr steps, crop + flip), `over` replacing
    keys: one definition for CIFAR-10, CIFAR-100 and their offline stand-in."""
    return {"pixel_scale": 255.0, "arch": dict(MADRY_WRN), "optimizer": "sgd", "lr": 0.1,
            "momentum": 0.9, "weight_decay": 2e-4, "batch_size": 128, "lr_boundaries": [0.5, 0.75],
            "ce_reduction": "mean", "augment": "crop_flip", **over}


@dataclass(frozen=True)
class Dataset:
    name: str
    recipe: dict
    image_shape: tuple      # C, H, W
    test_size: int
    load: str               # "lsqueeze.<module>:<function>"
    adv_training: dict | None = None  # Madry's adversarial training, in the dataset's config units


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("mnist", {
        "num_classes": 10, "pixel_scale": 1.0,
        "arch": {"name": "madry_cnn", "conv1": 32, "conv2": 64, "fc": 1024},
        "optimizer": "adam", "lr": 1e-4, "batch_size": 50, "weight_decay": 0.0,
        "lr_boundaries": [], "ce_reduction": "sum", "augment": "none",
    }, (1, 28, 28), 10_000, "lsqueeze.jobs.data:mnist",
        {"attack": "pgd", "loss": "xent", "steps": 40, "eps": 0.3, "step_size": 0.01,
         "random_start": True}),
    Dataset("cifar10", _madry_cifar(num_classes=10), (3, 32, 32), 10_000, "lsqueeze.jobs.data:cifar",
            {"attack": "pgd", "loss": "xent", "steps": 7, "eps": 8, "step_size": 2,
             "random_start": True}),
    # Table 5's CIFAR-100 baseline is PGD-2 adversarial training, with the CIFAR "weak"
    # adversary's step 5 (footnote 2; Section 6 reuses the CIFAR-10 settings).
    Dataset("cifar100", _madry_cifar(num_classes=100), (3, 32, 32), 10_000, "lsqueeze.jobs.data:cifar",
            {"attack": "pgd", "loss": "xent", "steps": 2, "eps": 8, "step_size": 5,
             "random_start": True}),
    # Real handwritten digits shipped with scikit-learn: the offline stand-ins for MNIST and CIFAR
    # (adversarial training: MNIST's attack unless the preset gives one).
    Dataset("digits28", {
        "num_classes": 10, "pixel_scale": 1.0,
        "arch": {"name": "madry_cnn", "conv1": 8, "conv2": 16, "fc": 64},
        "optimizer": "adam", "lr": 1e-3, "batch_size": 50, "weight_decay": 0.0,
        "lr_boundaries": [], "ce_reduction": "sum", "augment": "none",
    }, (1, 28, 28), 297, "lsqueeze.jobs.data:digits_split"),
    # Madry's design at his "non-wide" widths (16/16/32/64), one unit per stage
    Dataset("digits32", _madry_cifar(num_classes=10, batch_size=64,
                                     arch={"name": "madry_wrn", "units": 1, "widen": 1, "base": 16}),
            (3, 32, 32), 297, "lsqueeze.jobs.data:digits_split"),
)}

RECIPES = FieldView(DATASETS, "recipe")
ADV_TRAINING = FieldView(DATASETS, "adv_training")
IMAGE_SHAPE = FieldView(DATASETS, "image_shape")
TEST_SIZE = FieldView(DATASETS, "test_size")

