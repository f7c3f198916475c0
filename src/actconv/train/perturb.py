"""One-bit perturbations of a run (Summers & Dinneen, ICML 2021): torch only, used in training.

`init` flips the lowest mantissa bit of one initial weight, chosen from the run's own
'perturb' stream and replica number; `order` draws the batch order from another stream of
the run's seed (see `train.shuffle_generator`). Everything else stays bitwise the same.
"""
import torch
from torch import nn

from ..study.streams import generator

KINDS = ("init", "order")
_INT = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16,
        torch.bfloat16: torch.int16}


def weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The weights a flip is drawn from: every weight matrix and kernel (not biases or norm
    scales) but the first layer's. An MLP's first-layer weight on one of MNIST's always-black
    border pixels never touches an output or a gradient, so flipping it would change nothing:
    measured, 1 of 2 seeds' siblings came out bitwise equal to their original over 48 steps."""
    found = [(name, p) for name, p in model.named_parameters() if p.ndim >= 2]
    return found[1:] if len(found) > 1 else found


@torch.no_grad()
def flip_init_bit(model: nn.Module, seed: int, replica: int) -> tuple[str, int]:
    """Flip the lowest mantissa bit of one weight entry; returns (parameter name, flat index).

    The entry is drawn uniformly over all weight entries from the seed's 'perturb' stream,
    `replica` draws along it, so each replica of a seed flips its own entry."""
    params = weights(model)
    sizes = torch.tensor([p.numel() for _, p in params])
    g = generator(seed, "perturb")
    pick = torch.randint(int(sizes.sum()), (replica,), generator=g)[-1].item()
    ends = torch.cumsum(sizes, 0)
    i = int(torch.searchsorted(ends, torch.tensor(pick), right=True))
    name, p = params[i]
    flat = pick - (int(ends[i - 1]) if i else 0)
    bits = p.detach().view(-1).view(_INT[p.dtype])  # the same storage, read as integers
    bits[flat] ^= 1
    return name, flat
