"""What the numbers are computed from: the models, the training step, the attacks and the
analyses (landscape, activations)."""
