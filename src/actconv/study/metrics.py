"""The diagnostics table's vocabulary: its layer and metric names, the probe's size, the
saturation threshold and the histogram's bins, with the derivative that defines `saturated`.

One definition for the recorder that writes the rows (train) and the analysis that reads
them, so that neither imports the other: training never loads pandas, the report never
loads the training loop, nor torch (~480 MB a process): the derivative imports it when asked."""
from __future__ import annotations

import functools

import numpy as np

# Glorot & Bengio's 300 fixed examples for MLPs; 100 for TinyVGG, where each image gives
# 784 positions per channel and a 300-image probe alone cost a fifth of an epoch.
PROBE_SIZE = {"mlp": 300, "tinyvgg": 100}
SAMPLE = 2 ** 16          # saturation and histograms from at most this many entries per layer
SATURATION = 0.01         # saturated: derivative below 1% of the activation's largest derivative
HIST_EDGES = np.linspace(-8.0, 8.0, 33)  # 32 bins of 0.5 plus one below and one above
HIST_METRICS = [f"preact_hist_{i:02d}" for i in range(len(HIST_EDGES) + 1)]
LAYER_METRICS = ["act_mean", "act_std", "unit_mean_median", "preact_mean", "preact_std",
                 "saturated", "dead"]
OUTPUT = "output"         # the last weight layer (the logits)
RATIO = "first/last"      # layer name of the gradient-norm ratio rows


@functools.cache
def _grid() -> torch.Tensor:
    """Where an activation's largest derivative is looked for."""
    import torch
    return torch.linspace(-20.0, 20.0, 8001)


def derivative(act, z: torch.Tensor) -> torch.Tensor:
    """The elementwise derivative of an activation (a module or function) at z, by autograd."""
    import torch
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        y = act(z)
        (d,) = torch.autograd.grad(y, z, torch.ones_like(y))
    return d


def max_derivative(act, like: torch.Tensor | None = None) -> float:
    """The activation's largest derivative (on a dense grid over [-20, 20]), in the dtype and
    on the device of its parameter (or of `like`, the parameter of a function)."""
    import torch
    p = like if like is not None else next(act.parameters(), None) if isinstance(act, torch.nn.Module) else None
    grid = _grid().to(p.device, p.dtype) if p is not None else _grid()
    return float(derivative(act, grid).abs().max())
