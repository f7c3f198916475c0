"""Explicit randomness: one seed per run, one generator per purpose."""
import numpy as np
import torch

# Each purpose draws from its own stream, so adding a draw to one (say, a probe batch)
# never shifts another (say, the batch order).
PURPOSES = {"subset": 1, "init": 2, "shuffle": 3, "probe": 4, "perturb": 5}


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
