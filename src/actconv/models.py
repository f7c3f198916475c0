"""The study's models: the original MLP and TinyVGG, built fresh per run."""
import math

import torch
from torch import nn

from .activations import make_activation, recommended_init, unknown
from .config import INITS
from .errors import ConfigError

IMAGE_SHAPE = (1, 28, 28)
N_CLASSES = 10


def mlp(activation: str, hidden_units: int = 64, hidden_layers: int = 1,
        activate_logits: bool = False, batchnorm: bool = False) -> nn.Sequential:
    """Flatten -> [Linear -> (BatchNorm) -> act] x hidden_layers -> Linear(., 10) (-> act)."""
    layers, width = [nn.Flatten()], math.prod(IMAGE_SHAPE)
    for _ in range(hidden_layers):
        layers.append(nn.Linear(width, hidden_units))
        if batchnorm:
            layers.append(nn.BatchNorm1d(hidden_units))
        layers.append(make_activation(activation))
        width = hidden_units
    layers.append(nn.Linear(width, N_CLASSES))
    if activate_logits:  # the original study did this; it caps the loss of bounded activations
        layers.append(make_activation(activation))
    return nn.Sequential(*layers)


class TinyVGG(nn.Module):
    """Two blocks of [Conv3x3 -> act -> Conv3x3 -> act -> MaxPool2], then a linear classifier."""

    def __init__(self, activation: str, hidden_units: int = 64):
        super().__init__()

        def block(c_in):
            return nn.Sequential(
                nn.Conv2d(c_in, hidden_units, 3, 1, 1), make_activation(activation),
                nn.Conv2d(hidden_units, hidden_units, 3, 1, 1), make_activation(activation),
                nn.MaxPool2d(2))

        self.block_1, self.block_2 = block(IMAGE_SHAPE[0]), block(hidden_units)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(hidden_units * 7 * 7, N_CLASSES))

    def forward(self, x):
        return self.classifier(self.block_2(self.block_1(x)))


def tinyvgg(activation: str, hidden_units: int = 64, **_) -> TinyVGG:
    """TinyVGG as in the original study (64 hidden units there)."""
    return TinyVGG(activation, hidden_units)


MODELS = {"mlp": mlp, "tinyvgg": tinyvgg}


def build_model(kind: str, activation: str, init: str = "default", **options) -> nn.Module:
    """A fresh model of a registered kind, initialised as asked (global torch RNG)."""
    if kind not in MODELS:
        raise ConfigError(unknown("model kind", kind, MODELS))
    if kind == "tinyvgg":
        options = {k: v for k, v in options.items() if k == "hidden_units"}
    model = MODELS[kind](activation, **options)
    initialise(model, recommended_init(activation) if init == "auto" else init)
    return model


def initialise(model: nn.Module, scheme: str) -> None:
    """Re-initialise every Linear and Conv weight by scheme; biases to zero."""
    if scheme not in INITS:
        raise ConfigError(unknown("init", scheme, INITS))
    if scheme == "default":
        return
    for m in model.modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        fan_in = m.weight[0].numel()
        with torch.no_grad():
            if scheme == "lecun_normal":
                nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(fan_in))
            elif scheme == "kaiming_normal":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif scheme == "xavier_uniform":
                nn.init.xavier_uniform_(m.weight)
            elif scheme == "uniform_fan_in":  # Glorot & Bengio's 'standard' U[-1/sqrt(n), 1/sqrt(n)]
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
