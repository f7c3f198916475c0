"""Activation registry: name -> a fresh module per call, its family and recommended init."""
import math

from .errors import ConfigError


def _nn(cls: str, *args):
    """A factory for torch.nn.<cls>(*args), importing torch only when a model is built: a
    driver that only plans and stores runs never holds torch (~300 MB a process)."""
    def make():
        from torch import nn
        return getattr(nn, cls)(*args)
    make.__qualname__ = f"nn.{cls}"
    return make


# Factories, not instances: every layer of every run gets its own module, so a PReLU's
# learned slope can never leak between layers or runs (the original shared one instance).
ACTIVATIONS = {
    "relu": _nn("ReLU"),
    "relu6": _nn("ReLU6"),
    "leaky_relu": _nn("LeakyReLU", 0.01),
    "leaky_relu_0.1": _nn("LeakyReLU", 0.1),
    "prelu": _nn("PReLU"),
    "elu": _nn("ELU"),
    "celu": _nn("CELU"),
    "selu": _nn("SELU"),
    "gelu": _nn("GELU"),
    "silu": _nn("SiLU"),
    "mish": _nn("Mish"),
    "hardswish": _nn("Hardswish"),
    "softplus": _nn("Softplus"),
    "softshrink": _nn("Softshrink"),
    "tanhshrink": _nn("Tanhshrink"),
    "sigmoid": _nn("Sigmoid"),
    "hardsigmoid": _nn("Hardsigmoid"),
    "softsign": _nn("Softsign"),
    "tanh": _nn("Tanh"),
    "hardtanh": _nn("Hardtanh"),
    "logsigmoid": _nn("LogSigmoid"),
}

# The original study's four families, in its order.
FAMILIES = {
    "modern_family": ["mish", "silu", "hardswish", "gelu", "softplus", "softshrink",
                      "tanhshrink", "prelu", "elu", "celu"],
    "sigmoid_tanh_family": ["sigmoid", "hardsigmoid", "softsign", "tanh", "hardtanh",
                            "logsigmoid", "tanhshrink", "hardswish"],
    "relu_family": ["relu", "relu6", "leaky_relu", "leaky_relu_0.1", "prelu", "elu", "celu",
                    "selu", "gelu", "silu"],
    "common_activations": ["relu", "leaky_relu", "prelu", "elu", "selu", "gelu", "silu",
                           "mish", "tanh", "sigmoid"],
}

# What init = "auto" uses: LeCun normal for SELU (self-normalising needs Var(w) = 1/n),
# He for the rectifier family, Xavier for the squashing ones; PyTorch's default otherwise.
RECOMMENDED_INIT = {
    "selu": "lecun_normal",
    **{a: "kaiming_normal" for a in ["relu", "relu6", "leaky_relu", "leaky_relu_0.1", "prelu",
                                     "elu", "celu", "gelu", "silu", "mish", "hardswish"]},
    **{a: "xavier_uniform" for a in ["sigmoid", "hardsigmoid", "softsign", "tanh", "hardtanh",
                                     "logsigmoid", "tanhshrink", "softplus", "softshrink"]},
}

# Range of the activation's output, for the loss floor an activated logit layer imposes.
BOUNDED_RANGE = {
    "sigmoid": (0.0, 1.0), "hardsigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0), "softsign": (-1.0, 1.0), "hardtanh": (-1.0, 1.0),
    "relu6": (0.0, 6.0), "logsigmoid": (float("-inf"), 0.0),
}


def logit_loss_floor(low: float, high: float, n_classes: int = 10) -> float:
    """Least cross-entropy reachable when every logit lies in (low, high)."""
    return math.log1p((n_classes - 1) * math.exp(low - high))


def make_activation(name: str) -> "torch.nn.Module":
    """A fresh activation module for one layer."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(unknown("activation", name, list(ACTIVATIONS) + list(FAMILIES))) from None


def expand(names) -> list[str]:
    """Expand family names into activations, keeping order and dropping repeats."""
    out = []
    for name in names:
        members = FAMILIES.get(name, [name])
        for a in members:
            if a not in ACTIVATIONS:
                raise ConfigError(unknown("activation", a, list(ACTIVATIONS) + list(FAMILIES)))
            if a not in out:
                out.append(a)
    return out


def family_of(name: str) -> list[str]:
    """The families an activation belongs to."""
    return [f for f, members in FAMILIES.items() if name in members]


def unknown(kind: str, name, choices) -> str:
    """One line naming a bad choice and every valid one."""
    return f"unknown {kind} {name!r}; choose from: {', '.join(map(str, choices))}"
