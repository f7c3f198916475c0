"""Seeding a run's process: the global RNGs, deterministic kernels and the thread count.

The per-purpose streams of a seed (subset, init, shuffle, probe, perturb) are a study
concept and live in `study/streams.py`: the data layer draws its subsets from them too."""
import os
import random

import numpy as np
import torch


def set_seed(seed: int) -> None:
    """Seed random, NumPy and torch, and ask torch for deterministic kernels (as the original)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    _deterministic()
    torch.backends.cudnn.benchmark = False


def _deterministic() -> None:
    """torch.use_deterministic_algorithms(True, warn_only=True) without its import of
    torch._inductor (for torch.compile, never used here), which costs every worker ~140 MB."""
    if torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled():
        return
    if hasattr(torch._C, "_set_deterministic_algorithms"):
        torch._C._set_deterministic_algorithms(True, warn_only=True)
    else:  # a torch without the private call: the public one, import and all
        torch.use_deterministic_algorithms(True, warn_only=True)


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads: the count changes rounding, so it is part of a run."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
