"""Explicit randomness: one seed per run, one generator per purpose."""
import os
import random

import numpy as np
import torch

# Each purpose draws from its own stream, so adding a draw to one (say, a probe batch)
# never shifts another (say, the batch order).
PURPOSES = {"subset": 1, "init": 2, "shuffle": 3, "probe": 4, "perturb": 5}


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


def derived_seed(seed: int, purpose: str, stream: int = 0) -> int:
    """A 63-bit seed for one purpose, derived from the run's seed (stable across platforms);
    `stream` > 0 gives further independent streams of that purpose (perturbed siblings)."""
    words = [seed % 2**32, seed // 2**32, PURPOSES[purpose]] + ([stream] if stream else [])
    state = np.random.SeedSequence(words)
    low, high = (int(w) for w in state.generate_state(2, dtype=np.uint32))
    return (low | high << 32) % 2**63


def generator(seed: int, purpose: str, stream: int = 0) -> torch.Generator:
    """A CPU generator for one purpose of one run."""
    return torch.Generator().manual_seed(derived_seed(seed, purpose, stream))


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads: the count changes rounding, so it is part of a run."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
