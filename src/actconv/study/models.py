"""The study's models: the original MLP and TinyVGG, He et al.'s CIFAR ResNet-20, a user's factory,
or a timm or torchvision network (`zoo`), built fresh per run for the dataset's input shape and
class count."""
import math

import torch
from torch import nn

from ..errors import ConfigError
from . import userimport, zoo
from .activations import make_activation, recommended_init, unknown
from .config import INITS, ModelSpec

IMAGE_SHAPE = (1, 28, 28)  # the original's MNIST: the default where no dataset says otherwise
N_CLASSES = 10
MIN_TINYVGG_SIDE = 4  # two 2x2 poolings must leave at least one pixel


def mlp(activation: str, hidden_units: int = 64, hidden_layers: int = 1,
        activate_logits: bool = False, batchnorm: bool = False,
        input_shape=IMAGE_SHAPE, n_classes: int = N_CLASSES) -> nn.Sequential:
    """Flatten -> [Linear -> (BatchNorm) -> act] x hidden_layers -> Linear(., classes) (-> act)."""
    layers, width = [nn.Flatten()], math.prod(input_shape)
    for _ in range(hidden_layers):
        layers.append(nn.Linear(width, hidden_units))
        if batchnorm:
            layers.append(nn.BatchNorm1d(hidden_units))
        layers.append(make_activation(activation))
        width = hidden_units
    layers.append(nn.Linear(width, n_classes))
    if activate_logits:  # the original study did this; it caps the loss of bounded activations
        layers.append(make_activation(activation))
    return nn.Sequential(*layers)


class TinyVGG(nn.Module):
    """Two blocks of [Conv3x3 -> act -> Conv3x3 -> act -> MaxPool2], then a linear classifier."""

    def __init__(self, activation: str, hidden_units: int = 64, input_shape=IMAGE_SHAPE,
                 n_classes: int = N_CLASSES):
        super().__init__()
        channels, height, width = input_shape
        if min(height, width) < MIN_TINYVGG_SIDE:
            raise ConfigError(f"tinyvgg needs images of at least {MIN_TINYVGG_SIDE}x{MIN_TINYVGG_SIDE} "
                              f"pixels (two 2x2 poolings); these are {height}x{width}: use an MLP")

        def block(c_in):
            return nn.Sequential(
                nn.Conv2d(c_in, hidden_units, 3, 1, 1), make_activation(activation),
                nn.Conv2d(hidden_units, hidden_units, 3, 1, 1), make_activation(activation),
                nn.MaxPool2d(2))

        self.block_1, self.block_2 = block(channels), block(hidden_units)
        left = hidden_units * (height // 4) * (width // 4)  # what two poolings leave
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(left, n_classes))

    def forward(self, x):
        return self.classifier(self.block_2(self.block_1(x)))


def tinyvgg(activation: str, hidden_units: int = 64, input_shape=IMAGE_SHAPE,
            n_classes: int = N_CLASSES, **_) -> TinyVGG:
    """TinyVGG as in the original study (64 hidden units there)."""
    return TinyVGG(activation, hidden_units, input_shape, n_classes)


class BasicBlock(nn.Module):
    """He et al.'s CIFAR block: [Conv3x3 -> BN -> act -> Conv3x3 -> BN] + shortcut -> act. The
    shortcut is their option A, parameter-free: identity, or where the block halves the map,
    every second pixel with the new channels zero-padded."""

    def __init__(self, activation: str, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act2 = make_activation(activation)  # after the sum: its own module, never act1 again
        self.stride, self.pad = stride, c_out - c_in

    def forward(self, x):
        shortcut = x
        if self.stride != 1 or self.pad:
            shortcut = nn.functional.pad(x[:, :, ::self.stride, ::self.stride],
                                         (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))) + shortcut)


class ResNet20(nn.Module):
    """He et al. 2016 (arXiv 1512.03385, section 4.2), n = 3: Conv3x3(16) -> BN -> act, three
    stages of three BasicBlocks with 16, 32 and 64 channels (the second and third start with
    stride 2), global average pooling, Linear(64, classes). 0.27M parameters on CIFAR-10."""

    def __init__(self, activation: str, input_shape=IMAGE_SHAPE, n_classes: int = N_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = make_activation(activation)
        blocks, c_in = [], 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(activation, c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, n_classes)

    def forward(self, x):
        x = self.blocks(self.act1(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def resnet20(activation: str, input_shape=IMAGE_SHAPE, n_classes: int = N_CLASSES, **_) -> ResNet20:
    """ResNet-20 for CIFAR-style images (any size: the pooling is global)."""
    return ResNet20(activation, input_shape, n_classes)


MODELS = {"mlp": mlp, "tinyvgg": tinyvgg, "resnet20": resnet20}


def build_model(kind: str, activation: str, init: str = "default", **options) -> nn.Module:
    """A fresh model of a registered kind or a user's `module:attr` factory, initialised as
    asked (global torch RNG). options: the kind's keywords, input_shape and n_classes."""
    if zoo.is_zoo(kind):
        input_shape, n_classes = options.pop("input_shape", IMAGE_SHAPE), options.pop("n_classes", N_CLASSES)
        model = zoo.build(kind, activation, options, input_shape, n_classes)
    elif userimport.is_ref(kind):
        model = _user_model(kind, activation, **options)
    elif kind not in MODELS:
        raise ConfigError(unknown("model kind", kind, [*MODELS, "module:attr", "timm:NAME", "torchvision:NAME"]))
    else:
        if kind in ("tinyvgg", "resnet20"):  # resnet20's width is the paper's
            keep = ("hidden_units", "input_shape", "n_classes") if kind == "tinyvgg" else ("input_shape", "n_classes")
            options = {k: v for k, v in options.items() if k in keep}
        model = MODELS[kind](activation, **options)
    initialise(model, recommended_init(activation) if init == "auto" else init)
    return model


def _user_model(kind: str, activation: str, input_shape=IMAGE_SHAPE, n_classes: int = N_CLASSES,
                **options) -> nn.Module:
    """factory(make_activation, input_shape, n_classes, **options): a fresh activation per call."""
    factory = userimport.resolve(kind, "model kind")
    try:
        model = factory(lambda: make_activation(activation), tuple(input_shape), n_classes, **options)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 -- the user's code: its failure is their input's error
        raise ConfigError(f"model kind {kind!r}: the factory raised {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model kind {kind!r}: the factory returned a {type(model).__name__}, "
                          f"not a torch.nn.Module")
    return model


def build_for(m: ModelSpec, activation: str, input_shape=IMAGE_SHAPE, n_classes: int = N_CLASSES) -> nn.Module:
    """The model a ModelSpec describes, for data of this shape and class count."""
    if userimport.is_ref(m.kind) or zoo.is_zoo(m.kind):
        return build_model(m.kind, activation, m.init, input_shape=input_shape, n_classes=n_classes,
                           **dict(m.options))
    return build_model(m.kind, activation, m.init, hidden_units=m.hidden_units,
                       hidden_layers=m.hidden_layers, activate_logits=m.activate_logits,
                       batchnorm=m.batchnorm, input_shape=input_shape, n_classes=n_classes)


def check_fits(name: str, m: ModelSpec, activation: str, data_name: str,
               input_shape, n_classes: int) -> nn.Module:
    """Build the model once for the data and push two images through it: a model that cannot
    take them fails here, in one line, before anything is stored. Returns the model."""
    import torch
    where = f"model {name} on {data_name} ({'x'.join(map(str, input_shape))}, {n_classes} classes)"
    try:
        model = build_for(m, activation, input_shape, n_classes)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *input_shape))
    except Exception as e:  # noqa: BLE001 -- a user's module that cannot take the data
        raise ConfigError(f"{where}: the forward pass fails ({type(e).__name__}: {e})") from None
    if zoo.is_zoo(m.kind) and tuple(getattr(out, "shape", ())) == (2, n_classes):
        try:  # some networks return extra heads while training (inception's aux_logits)
            out = model.train()(torch.zeros(2, *input_shape))
        except Exception as e:  # noqa: BLE001 -- the library's network on these images
            raise ConfigError(f"{where}: the training-mode forward pass fails ({type(e).__name__}: {e})") from None
        model.eval()
    if tuple(getattr(out, "shape", ())) != (2, n_classes):
        raise ConfigError(f"{where}: gives outputs of shape {tuple(getattr(out, 'shape', ()))} for 2 "
                          f"images; expected (2, {n_classes}), one logit per class")
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


def count_activations(model: nn.Module, activation: str) -> int:
    """The study activation's modules in the network: in a zoo network those actconv put in (a
    timm network may keep activations of its own, mobilenetv3's squeeze-excitation ReLUs),
    elsewhere the modules of its class."""
    if any(getattr(m, "actconv_swapped", False) for m in model.modules()):
        return sum(getattr(m, "actconv_swapped", False) for m in model.modules())
    cls = type(make_activation(activation))
    return sum(type(m) is cls for m in model.modules())


def facts(model: nn.Module, activation: str) -> dict:
    """What the runs table shows of a built network: parameters, activation modules and, for a
    torchvision network, the activation classes the swap replaced."""
    return {"parameters": count_parameters(model), "activation_modules": count_activations(model, activation),
            "replaced_activations": ", ".join(getattr(model, "actconv_replaced", ())) or None}
