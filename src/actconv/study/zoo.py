"""The field's standard networks with the study's activation: `timm:NAME` built through timm's
`act_layer`, `torchvision:NAME` (a classification builder) with every activation module swapped.

Nothing here imports torch, timm or torchvision at the top: a driver that validates a study of
built-in models never loads them; a zoo kind loads its library where it is validated.
"""
import functools

from ..errors import ConfigError

TIMM, TORCHVISION = "timm:", "torchvision:"
# Keys actconv sets itself (the data decides the classes and channels, the study the activation).
RESERVED = {TIMM: {"num_classes", "in_chans", "act_layer", "pretrained_cfg", "pretrained_cfg_overlay",
                   "checkpoint_path"},
            TORCHVISION: {"num_classes", "weights", "progress"}}
# The activation modules a torchvision network's swap replaces. Gates are kept: Sigmoid and
# Hardsigmoid scale channels in squeeze-excitation blocks, a different role from a layer's activation.
SWAPPED = ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish",
           "Hardswish", "Tanh")


def is_zoo(kind) -> bool:
    """A model kind that names a timm or torchvision network."""
    return isinstance(kind, str) and kind.startswith((TIMM, TORCHVISION)) and ":" not in kind.split(":", 1)[1]


def _split(kind: str) -> tuple[str, str]:
    prefix = TIMM if kind.startswith(TIMM) else TORCHVISION
    return prefix, kind[len(prefix):]


def validate(kind: str, options: dict, where: str) -> tuple[tuple, str]:
    """(sorted options, fingerprint) of a zoo kind, checked by building it once on the meta device
    (no memory, no weights): an unknown name, pretrained weights or a network that takes no
    act_layer is a ConfigError in one line. The fingerprint is the library's version."""
    prefix, name = _split(kind)
    for key, value in options.items():
        if key in RESERVED[prefix]:
            raise ConfigError(f"{where}: option {key} is set by actconv (the data gives classes and channels, "
                              f"the study the activation, weights are never loaded)")
        if key == "pretrained" and value is not False:
            raise ConfigError(f"{where}: pretrained weights are not a study of activations; "
                              f"{kind} is trained from scratch (drop pretrained)")
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"{where}: option {key} must be a string, number or boolean, got {value!r}")
    options = {k: v for k, v in options.items() if k != "pretrained"}  # false: the default, same runs
    library = _library(prefix)
    known = library.list_models() if prefix == TIMM else library.models.list_models(module=library.models)
    if name not in known:
        close = [m for m in known if m.startswith(name[:4])][:10]
        lister = "timm.list_models()" if prefix == TIMM else "torchvision.models.list_models()"
        raise ConfigError(f"{where}: unknown {prefix[:-1]} model {name!r}"
                          + (f"; similar: {', '.join(close)}" if close else f"; list them with {lister}"))
    probe = _probe_class()
    try:
        model = _create_anywhere(prefix, name, options, lambda *a, **k: probe())
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except TypeError as e:
        if "act_layer" in str(e):
            raise ConfigError(f"{where}: timm model {name!r} does not take act_layer; use "
                              f"torchvision:NAME or a module:attr factory") from None
        raise ConfigError(f"{where}: {kind} refuses the options: {e}") from None
    except Exception as e:  # noqa: BLE001 -- the library's own check of its options
        raise ConfigError(f"{where}: {kind} cannot be built with these options "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if prefix == TIMM and not any(isinstance(m, probe) for m in model.modules()):
        raise ConfigError(f"{where}: timm model {name!r} builds no layer from act_layer; use torchvision:NAME "
                          f"or a module:attr factory")
    if prefix == TORCHVISION and not model.actconv_replaced:
        raise ConfigError(f"{where}: {kind} has no activation module to swap ({', '.join(SWAPPED)})")
    return tuple(sorted(options.items())), f"{prefix[:-1]} {library.__version__}"


def _create_anywhere(prefix: str, name: str, options: dict, make_act):
    """The network built on the meta device (no memory, no time), else, where its constructor
    reads values (torchvision's regnet computes widths from tensors), on the CPU."""
    import torch
    try:
        with torch.device("meta"):
            return _create(prefix, name, options, make_act, (3, 224, 224), 10)
    except (TypeError, ConfigError):
        raise  # the options: the CPU would refuse them just the same
    except Exception:  # noqa: BLE001 -- meta tensors cannot do everything a constructor may ask
        return _create(prefix, name, options, make_act, (3, 224, 224), 10)


def _library(prefix: str):
    try:
        if prefix == TIMM:
            import timm
            return timm
        import torchvision
        import torchvision.models  # noqa: F401 -- the builders' registry
        return torchvision
    except ImportError:
        raise ConfigError(f"{prefix}NAME needs the package {prefix[:-1]}: pip install {prefix[:-1]}") from None


@functools.lru_cache(maxsize=1)
def _probe_class():
    from torch import nn

    class Probe(nn.Identity):
        """Stands in for the activation at validation: where it appears, act_layer was used."""
    return Probe


def _create(prefix: str, name: str, options: dict, make_act, input_shape, n_classes: int):
    """The library's network for this data; torchvision's with its activations swapped."""
    channels = input_shape[0]
    if prefix == TIMM:
        import timm
        model = timm.create_model(name, pretrained=False, num_classes=n_classes, in_chans=channels,
                                  act_layer=make_act, **options)
    else:
        from torchvision import models
        model = models.get_model(name, weights=None, num_classes=n_classes, **options)
        _adapt_input(model, channels, name)
        model.actconv_replaced = swap_activations(model, make_act)
    # In-place layers were paired with the activation they follow (mobilenet's Dropout(inplace)
    # after Hardswish); after a swapped ReLU or tanh, which keep their output for the backward
    # pass, they break it. Out of place computes the same numbers.
    for m in model.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    return model


def build(kind: str, activation: str, options, input_shape, n_classes: int):
    """A fresh network of a zoo kind for data of this shape: a fresh study activation per layer."""
    from .activations import make_activation
    prefix, name = _split(kind)
    # timm calls act_layer(inplace=True) and the like: each call gets a fresh module of the study's
    # activation, with its own settings (in-place or not does not change a number).
    def make_act(*_, **__):
        module = make_activation(activation)
        module.actconv_swapped = True  # what count_activations and _refuse_shared count
        return module
    model = _create(prefix, name, dict(options), make_act, tuple(input_shape), n_classes)
    if prefix == TORCHVISION and next(make_activation(activation).parameters(), None) is not None:
        _refuse_shared(model, kind, activation, input_shape)
    return model


def _refuse_shared(model, kind: str, activation: str, input_shape) -> None:
    """A network that applies one activation module in several places (torchvision's ResNet
    blocks) would share a learned activation's parameters between them: refused, in one line."""
    import torch
    calls = {}
    hooks = [m.register_forward_hook(lambda m, i, o: calls.__setitem__(id(m), calls.get(id(m), 0) + 1))
             for m in model.modules() if getattr(m, "actconv_swapped", False)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    except Exception:  # noqa: BLE001 -- a network that cannot take the data: check_fits says so
        return
    finally:
        for h in hooks:
            h.remove()
        model.train()
    shared = sum(n > 1 for n in calls.values())
    if shared:
        raise ConfigError(f"{kind} applies {shared} of its activation modules in more than one place, so "
                          f"{activation}'s parameters would be shared there; use a parameter-free activation, "
                          f"or timm's network of the same name (a module per place)")


def swap_activations(model, make_act) -> tuple[str, ...]:
    """Replace every activation module (SWAPPED) by make_act(); the replaced class names, sorted,
    each with its count ("ReLU x9")."""
    counts = {}
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            cls = type(child).__name__
            if cls in SWAPPED and type(child).__module__.startswith("torch.nn"):
                setattr(parent, child_name, make_act())
                counts[cls] = counts.get(cls, 0) + 1
    return tuple(f"{cls} x{n}" for cls, n in sorted(counts.items()))


def _adapt_input(model, channels: int, name: str) -> None:
    """The first convolution (in registration order: the stem) made to take `channels` input
    channels, its shape otherwise kept; a fresh layer, as the rest of the untrained network."""
    from torch import nn
    path, conv = next(((p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None:
        raise ConfigError(f"torchvision:{name}: no convolution found to take {channels} channels")
    if conv.in_channels == channels:
        return
    if conv.groups != 1:
        raise ConfigError(f"torchvision:{name}: its first convolution is grouped; it takes "
                          f"{conv.in_channels} channels only")
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr, nn.Conv2d(
        channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, 1,
        conv.bias is not None, conv.padding_mode))
