"""What training records per layer, torch only: probe-batch statistics and gradient norms.

At epoch 0 and after every epoch, a forward pass over a fixed probe batch (300 images of
the training pool for MLPs, 100 for TinyVGG, the same for every run of a seed) gives, per
hidden layer, the mean and standard deviation of the activations (as Glorot & Bengio 2010
plotted them), the pre-activations' histogram, the fraction of saturated entries, the
fraction of dead units and the weight norm; during training, every `grad_every` steps,
each layer's weight gradient norm and the first-to-last ratio. `Recorder` does it for the
loop's model, `StackRecorder` for each member of the ensemble engine's stacked tensors,
both through the same `layer_stats`. Nothing here touches the training numbers: the
probe draws from its own generator, runs without gradients and restores BatchNorm's
running statistics, and gradient norms only read `.grad`. Training processes import this
module, never the pandas analysis in `analysis/diagnostics.py`.
"""
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..study import activations as acts
from ..study import zoo
from ..study.metrics import (HIST_EDGES, HIST_METRICS, LAYER_METRICS, OUTPUT, PROBE_SIZE, RATIO, SAMPLE,
                             SATURATION, derivative, max_derivative)
from ..study.streams import generator

_ACT_TYPES = tuple({type(acts.make_activation(a)) for a in acts.ACTIVATIONS})


def probe_indices(seed: int, pool_size: int, size: int = PROBE_SIZE["mlp"]) -> torch.Tensor:
    """The probe batch: `size` pool images from the seed's own 'probe' stream."""
    return torch.randperm(pool_size, generator=generator(seed, "probe"))[:size]


def probe_batch(spec, data, device, dtype) -> torch.Tensor:
    """The run's probe images on the device (channels_last for TinyVGG, as it trains)."""
    size = PROBE_SIZE.get(spec.model_spec.kind, PROBE_SIZE["tinyvgg"])  # other networks: convolutional
    x = data.train_x[probe_indices(spec.seed, data.pool_size, size)].to(device, dtype)
    if spec.model_spec.kind == "tinyvgg":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def plan(modules) -> list[tuple[str, int, int | None]]:
    """(name, index of a weight layer, index of its activation or None) among modules in forward order."""
    found = []
    for i, m in enumerate(modules):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            found.append([i, None])
        elif found and found[-1][1] is None and (isinstance(m, _ACT_TYPES) or acts.is_user_module(m)):
            found[-1][1] = i  # the first activation after a weight layer (a user's module too)
    return [(OUTPUT if i == len(found) - 1 else f"layer{i + 1}", w, a) for i, (w, a) in enumerate(found)]


def layers(model: nn.Module, by_path: bool = False) -> list[tuple[str, nn.Module, nn.Module | None]]:
    """(name, weight layer, its activation or None) in forward order; the last is 'output'.
    by_path: hidden layers named by their module path (`layer1.0.conv2`), as a timm or
    torchvision network names them, not by their position."""
    paths, mods = zip(*model.named_modules())
    return [(paths[w] if by_path and name != OUTPUT else name, mods[w], None if a is None else mods[a])
            for name, w, a in plan(mods)]


def layer_stats(z: torch.Tensor, y: torch.Tensor, zs: torch.Tensor, act, dmax: float,
                weight: torch.Tensor) -> torch.Tensor:
    """One layer's probe statistics, LAYER_METRICS + weight_norm + HIST_METRICS in order.

    z and y are the activation's input and output, zs the entries of z that saturation and
    the histogram look at, dmax the activation's largest derivative.
    """
    lo, width, n_bins = HIST_EDGES[0], HIST_EDGES[1] - HIST_EDGES[0], len(HIST_EDGES) + 1
    d = derivative(act, zs).abs()
    others = [i for i in range(y.ndim) if i != 1]  # axis 1 is the unit (or channel)
    unit_means = y.mean(dim=others)
    # Uniform bins by arithmetic (bucketize and bincount are slower); the first and
    # last bins catch the tails, NaN (a diverged run) goes to an extra one, dropped.
    bins = ((zs - lo) / width).floor_().add_(1).clamp_(0, n_bins - 1).nan_to_num_(n_bins)
    ones = torch.ones((), dtype=zs.dtype, device=zs.device).expand(len(zs))
    hist = torch.zeros(n_bins + 1, dtype=zs.dtype, device=zs.device).index_add_(
        0, bins.long(), ones)[:n_bins]
    return torch.cat([
        torch.stack([y.mean(), y.std(correction=0), unit_means.median(), z.mean(),
                     z.std(correction=0), (d < SATURATION * dmax).to(y.dtype).mean(),
                     (y.ne(0).sum(dim=others) == 0).to(y.dtype).mean(),
                     torch.linalg.vector_norm(weight)]),
        hist.to(y.dtype) / zs.numel()])


def stats_rows(epoch: int, step: int, names: list[str], stats: list[torch.Tensor]) -> list[tuple]:
    """Rows (epoch, step, layer, metric, value) of one probe: a layer without an activation
    has its weight norm alone."""
    rows = []
    for name, values in zip(names, [v.cpu().double().tolist() for v in stats]):
        metrics = ["weight_norm"] if len(values) == 1 else LAYER_METRICS + ["weight_norm"] + HIST_METRICS
        rows.extend((epoch, step, name, m, v) for m, v in zip(metrics, values))
    return rows


def grad_rows(epoch: int, steps: list[int], names: list[str], norms: np.ndarray) -> list[tuple]:
    """Rows of the gradient norms recorded at `steps` (norms: [steps, layers], float64) and
    the first/last ratio."""
    rows = []
    for step, row in zip(steps, norms):
        rows.extend((epoch, step, n, "grad_norm", float(v)) for n, v in zip(names, row))
        rows.append((epoch, step, RATIO, "grad_ratio", float(row[0] / row[-1]) if row[-1] > 0 else math.nan))
    return rows


class _Entries:
    """All of z's entries, or a fixed random sample of SAMPLE of them (conv layers)."""

    def __init__(self):
        self._sample: dict[int, torch.Tensor] = {}

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        n = z.numel()
        if n <= SAMPLE:
            return z.reshape(-1)
        if n not in self._sample:  # a private generator: the global RNG is left alone
            g = torch.Generator().manual_seed(n)
            self._sample[n] = torch.randint(n, (SAMPLE,), generator=g).to(z.device)
        if z.ndim == 4 and z.is_contiguous(memory_format=torch.channels_last):
            z = z.permute(0, 2, 3, 1)  # memory order: a view, where take would copy
        return z.reshape(-1)[self._sample[n]]


class Recorder:
    """Collects one run's diagnostics rows: construct it after the model, then call
    `after_backward(b)` after each backward pass and `end_epoch(epoch)` after each epoch."""

    def __init__(self, spec, model: nn.Module, data):
        self.model, self.every = model, spec.grad_every
        self.layers = layers(model, by_path=zoo.is_zoo(spec.model_spec.kind))
        self.weights = [w.weight for _, w, _ in self.layers]
        device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
        self.x = probe_batch(spec, data, device, dtype)
        self.steps = math.ceil(spec.n_train / spec.batch_size)
        # Gradient norms stay on the device until the epoch ends: no host sync per step.
        self.buf = torch.zeros(self.steps, len(self.weights), device=device, dtype=dtype)
        self.recorded: list[int] = []
        self.done_steps = 0
        self.rows: list[tuple] = []
        self._entries = _Entries()
        self._dmax: dict[int, float] = {}
        self.probe(0, 0)

    def after_backward(self, b: int) -> None:
        step = self.done_steps + b + 1
        if (step - 1) % self.every:
            return
        norms = [torch.linalg.vector_norm(w.grad) for w in self.weights]
        self.buf[len(self.recorded)] = torch.stack(norms)
        self.recorded.append(step)

    def end_epoch(self, epoch: int) -> None:
        if self.recorded:
            norms = self.buf[:len(self.recorded)].cpu().double().numpy()
            self.rows += grad_rows(epoch, self.recorded, [name for name, _, _ in self.layers], norms)
        self.done_steps += self.steps
        self.recorded = []
        self.probe(epoch, self.done_steps)

    @torch.no_grad()
    def probe(self, epoch: int, step: int) -> None:
        """One forward pass over the probe batch; per-layer statistics as rows."""
        seen = {}
        hooks = [a.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, (i[0], o)))
                 for name, _, a in self.layers if a is not None]
        # BatchNorm in training mode updates running statistics: keep them as they were.
        saved = [b.clone() for b in self.model.buffers()]
        try:
            self.model(self.x)
        finally:
            for h in hooks:
                h.remove()
            for b, s in zip(self.model.buffers(), saved):
                b.copy_(s)
        stats = []
        for name, w, a in self.layers:
            if a is None:
                stats.append(torch.linalg.vector_norm(w.weight).reshape(1))
            else:
                z, y = seen[name]
                stats.append(layer_stats(z, y, self._entries(z), a, self._max_derivative(a), w.weight))
        self.rows += stats_rows(epoch, step, [name for name, _, _ in self.layers], stats)

    def _max_derivative(self, act: nn.Module) -> float:
        """Cached per layer, except for activations that learn (PReLU's slope moves)."""
        if next(act.parameters(), None) is not None:
            return max_derivative(act)
        if id(act) not in self._dmax:
            self._dmax[id(act)] = max_derivative(act)
        return self._dmax[id(act)]


class StackRecorder:
    """The Recorder of every member of an ensemble (`ensemble.Stack`): the same rows, per member.

    Construct it after the stack, then call `after_backward(b)` after each backward pass,
    `end_epoch(epoch)` after each epoch (before members are dropped, as the loop probes a
    diverging run's last epoch) and `keep(positions)` when the stack keeps fewer members.
    """

    def __init__(self, unit, stack, data):
        spec = unit[0]
        self.stack, self.every = stack, spec.grad_every
        self.plan = plan([t for t, _, _ in stack.layers])
        self.names = [name for name, _, _ in self.plan]
        w = self._weights()[0]
        self.x = torch.stack([probe_batch(s, data, w.device, w.dtype) for s in unit])
        self.steps = math.ceil(spec.n_train / spec.batch_size)
        self.members = list(range(len(unit)))  # unit position of each stack position
        self.buf = torch.zeros(self.steps, len(self.plan), len(unit), device=w.device, dtype=w.dtype)
        self.recorded: list[int] = []
        self.done_steps = 0
        self.rows: list[list[tuple]] = [[] for _ in unit]
        self._entries = _Entries()
        self._dmax: dict[int, float] = {}
        self.probe(0, 0)

    def _weights(self) -> list[torch.Tensor]:
        return [self.stack.layers[w][1]["weight"] for _, w, _ in self.plan]

    def after_backward(self, b: int) -> None:
        step = self.done_steps + b + 1
        if (step - 1) % self.every:
            return
        norms = [torch.linalg.vector_norm(w.grad, dim=tuple(range(1, w.ndim))) for w in self._weights()]
        self.buf[len(self.recorded), :, :len(self.members)] = torch.stack(norms)
        self.recorded.append(step)

    def end_epoch(self, epoch: int) -> None:
        if self.recorded:
            norms = self.buf[:len(self.recorded)].cpu().double().numpy()
            for j, i in enumerate(self.members):
                self.rows[i] += grad_rows(epoch, self.recorded, self.names, norms[:, :, j])
        self.done_steps += self.steps
        self.recorded = []
        self.probe(epoch, self.done_steps)

    def keep(self, sel: list[int]) -> None:
        """Record only the members at stack positions `sel` from now on."""
        self.members = [self.members[j] for j in sel]
        self.x = self.x[torch.tensor(sel, device=self.x.device)]

    @torch.no_grad()
    def probe(self, epoch: int, step: int) -> None:
        """One forward pass of every member over its own probe batch; per-layer statistics as rows."""
        seen = {}
        buffers = [b for _, _, bufs in self.stack.layers for b in bufs.values()]
        saved = [b.clone() for b in buffers]  # BatchNorm's running statistics, as the loop keeps them
        try:
            self.stack(self.x, training=True, seen=seen)
        finally:
            for b, s in zip(buffers, saved):
                b.copy_(s)
        for j, i in enumerate(self.members):
            stats = []
            for _, w, a in self.plan:
                weight = self.stack.layers[w][1]["weight"][j]
                if a is None:
                    stats.append(torch.linalg.vector_norm(weight).reshape(1))
                    continue
                z, y = (v[j] for v in seen[a])
                act, dmax = self._activation(a, j)
                stats.append(layer_stats(z, y, self._entries(z), act, dmax, weight))
            self.rows[i] += stats_rows(epoch, step, self.names, stats)

    def _activation(self, index: int, j: int):
        """Member j's activation at stack layer `index` and its largest derivative (cached
        unless it learns: a PReLU's slope is the member's own)."""
        template, params, _ = self.stack.layers[index]
        if isinstance(template, nn.PReLU):
            slope = params["weight"][j]
            act = functools.partial(F.prelu, weight=slope)
            return act, max_derivative(act, like=slope)
        if index not in self._dmax:
            self._dmax[index] = max_derivative(template)
        return template, self._dmax[index]
