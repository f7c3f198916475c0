"""Many runs of one configuration trained at once: stacked parameters, one batched step.

Each member is exactly the run the loop engine would train for its seed: `train.prepare`
gives its subset and initial weights, its own generator its batch order, and its
optimizer state is its own slice of the stacked state. Members may differ in lr, momentum
and weight decay too (a cell's search trials and seeds as one unit): SGD and Adam are
elementwise, so each run of members sharing a setting gets the loop's optimizer over its
slices of the stacked tensors, and a member's numbers equal those of its ensemble of one bit
for bit (tests/test_ensemble_mixed.py). The summed loss has each member's own gradient as
its slice, and a member that goes non-finite poisons only its own slice; it is dropped at
the end of that epoch.

Layers run batched by hand rather than through `torch.func.vmap(functional_call)`.
Measured on the 2-core reference CPU, one thread, CPU time of one step of 8 MLP(64)
members, batch 32: vmap 3.9-4.2 ms, `bmm` with weights stored [K, in, out] 1.6 ms, 8
single-model loop steps 4.7 ms. Convolutions run per member (channels_last, as the loop):
one grouped convolution over all members (what vmap does) took 12.8-13.4 ms per member-step
of TinyVGG(16) against 9.0-10.6 for the loop's; per member they round exactly as the
loop's. Rounding elsewhere differs from the loop (batched kernels), which is why the engine
is part of a run's id. A member's numbers do not depend on the other members. With
diagnostics on, `recorder.StackRecorder` records each member's rows as the loop's Recorder would.
"""
import math
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..study import data as datasets
from ..study.activations import ACTIVATIONS
from ..study.config import RunSpec
from ..study.models import TinyVGG
from . import recorder
from .loop import (DTYPES, EVAL_BATCH, RunResult, batch_table, environment, epoch_row, make_optimizer,
                   prepare, scored, shuffle_generator, until_nonfinite, validation_set)

# Containers whose forward is their children in order.
SEQUENTIAL = (nn.Sequential, TinyVGG)
# Parameter-free activations apply elementwise, whatever the layout of the stack.
ELEMENTWISE = tuple({type(make()) for make in ACTIVATIONS.values()} - {nn.PReLU})


def _leaves(module: nn.Module):
    if isinstance(module, SEQUENTIAL):
        for child in module.children():
            yield from _leaves(child)
    else:
        yield module


class Stack:
    """K models of one architecture as one: each parameter stacked on a leading K dimension.

    Activations travel stacked, `[K, B, ...]`, through batched matmuls; around convolutions
    they travel split, one channels_last `[B, C, H, W]` per member, because a per-member
    convolution ran faster on CPU than one grouped convolution over all members and rounds
    exactly as the loop's does.
    """

    def __init__(self, models: list[nn.Module]):
        self.layers = []  # (template module, {name: stacked parameter}, {name: stacked buffer})
        for mods in zip(*[list(_leaves(m)) for m in models]):
            template = mods[0]
            if not isinstance(template, (nn.Linear, nn.Conv2d, nn.PReLU, nn.BatchNorm1d, nn.Flatten,
                                         nn.MaxPool2d, *ELEMENTWISE)) \
                    and not getattr(template, "actconv_elementwise", False):  # a user's, probed
                raise ConfigError(f"the ensemble engine cannot run layer {type(template).__name__}; "
                                  f"use --engine loop")
            params = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in mods])
                      for name, _ in template.named_parameters()}
            if isinstance(template, nn.Linear):  # [K, in, out]: the bmm layout, its gradient contiguous
                params["weight"] = params["weight"].transpose(1, 2)
            params = {k: v.contiguous() for k, v in params.items()}
            if isinstance(template, nn.Conv2d):  # each member's slice strided as the loop's channels_last
                w, ref = params["weight"], template.weight.contiguous(memory_format=torch.channels_last)
                params["weight"] = torch.empty_strided(w.shape, (ref.numel(), *ref.stride()), dtype=w.dtype,
                                                       device=w.device).copy_(w)
            params = {k: v.requires_grad_(True) for k, v in params.items()}
            buffers = {name: torch.stack([dict(m.named_buffers())[name] for m in mods])
                       for name, _ in template.named_buffers()}
            self.layers.append((template, params, buffers))

    def parameters(self) -> list[torch.Tensor]:
        return [p for _, params, _ in self.layers for p in params.values()]

    def keep(self, sel: torch.Tensor, new_params: list[torch.Tensor]) -> None:
        """Keep the members at positions `sel`; `new_params` are the kept parameters, in order."""
        it = iter(new_params)
        self.layers = [(t, {k: next(it) for k in params}, {k: v[sel] for k, v in buffers.items()})
                       for t, params, buffers in self.layers]

    def __call__(self, x: torch.Tensor, training: bool, seen: dict | None = None) -> torch.Tensor:
        """Logits [K, B, classes] of each member on its own inputs x [K, B, C, H, W]; `seen`, if
        given, gets each activation's (input, output) by layer index (what the recorder reads)."""
        k = x.shape[0]
        for i, (t, p, buf) in enumerate(self.layers):
            before = x
            split = isinstance(x, list)
            if isinstance(t, (nn.Conv2d, nn.MaxPool2d)) and not split:
                x, split = [xj.contiguous(memory_format=torch.channels_last) for xj in x.unbind(0)], True
            elif isinstance(t, (nn.Linear, nn.Flatten, nn.BatchNorm1d)) and split:
                x, split = torch.stack(x), False
            if isinstance(t, nn.Linear):
                x = torch.baddbmm(p["bias"].unsqueeze(1), x, p["weight"]) if "bias" in p else torch.bmm(x, p["weight"])
            elif isinstance(t, nn.Conv2d):
                bias = p["bias"].unbind(0) if "bias" in p else [None] * k
                x = [t._conv_forward(xj, w, b) for xj, w, b in zip(x, p["weight"].unbind(0), bias)]
            elif isinstance(t, nn.Flatten):
                x = x.flatten(2)
            elif isinstance(t, nn.PReLU) and split:
                x = [F.prelu(xj, w) for xj, w in zip(x, p["weight"].unbind(0))]
            elif isinstance(t, nn.PReLU):
                x = torch.where(x > 0, x, x * p["weight"].view(k, 1, -1))
            elif isinstance(t, nn.BatchNorm1d):  # per member and feature: the channels of a [B, K*F] view
                b, f = x.shape[1], x.shape[2]
                stats = t.track_running_stats
                y = F.batch_norm(x.transpose(0, 1).reshape(b, k * f),
                                 buf["running_mean"].view(-1) if stats else None,
                                 buf["running_var"].view(-1) if stats else None,
                                 p["weight"].flatten() if "weight" in p else None,
                                 p["bias"].flatten() if "bias" in p else None,
                                 training or not stats, t.momentum, t.eps)
                if training and stats:
                    buf["num_batches_tracked"].add_(1)
                x = y.view(b, k, f).transpose(0, 1)
            elif split:  # max pooling or an elementwise activation: the template module itself
                x = [t(xj) for xj in x]
            else:
                x = t(x)
            if seen is not None and (isinstance(t, (nn.PReLU, *ELEMENTWISE))
                                     or getattr(t, "actconv_elementwise", False)):
                seen[i] = (before, x)
        return torch.stack(x).flatten(2) if isinstance(x, list) else x


# What members of one unit may differ in: the seed and perturbation (their own data order and
# weights), and the optimizer settings that act elementwise on each parameter.
FREE = ("seed", "perturb", "replica", "lr", "momentum", "weight_decay")


def _check_unit(unit: list[RunSpec]) -> None:
    """Members may differ in their seed, perturbation, lr, momentum and weight decay only."""
    same = lambda s: replace(s, **{f: getattr(unit[0], f) for f in FREE})  # noqa: E731
    if any(same(s) != same(unit[0]) for s in unit[1:]):
        raise ConfigError("an ensemble's runs may differ only in their seed, perturbation, lr, momentum "
                          "or weight decay")
    if len({tuple(getattr(s, f) for f in FREE) for s in unit}) != len(unit):
        raise ConfigError("an ensemble's runs must be distinct")


def _setting(spec: RunSpec) -> tuple:
    return spec.lr, spec.momentum, spec.weight_decay


def _optimizers(members: list[RunSpec], params: list[torch.Tensor], old=None) -> list:
    """(start, end, optimizer) per run of stack positions sharing a setting: `make_optimizer` of the
    loop over those members' slices of the stacked parameters, so that each member steps with its
    own scalar lr, momentum and weight decay through torch's own kernels, over as many elements as
    an ensemble of one. `old`, the optimizers before members were dropped, with each kept member's
    (old span, position in it): their state is carried over, sliced."""
    spans, start = [], 0
    for j in range(1, len(members) + 1):
        if j == len(members) or _setting(members[j]) != _setting(members[start]):
            spans.append((start, j))
            start = j
    found = []
    for a, b in spans:
        views = [p.detach()[a:b] for p in params]
        optimizer = make_optimizer(members[a], views)
        if old is not None:
            (oa, ob, previous), local = old[a][0], torch.tensor([old[j][1] for j in range(a, b)])
            for q, v in zip(previous.param_groups[0]["params"], views):  # momentum, Adam moments; the step kept
                optimizer.state[v] = {name: x[local.to(x.device)].clone()
                                      if torch.is_tensor(x) and x.dim() and x.shape[0] == ob - oa else x
                                      for name, x in previous.state[q].items()}
        found.append((a, b, optimizer))
    return found


def _step(optimizers: list, params: list[torch.Tensor]) -> None:
    """Each span's optimizer steps on its slices of the stacked gradients."""
    for a, b, optimizer in optimizers:
        for v, p in zip(optimizer.param_groups[0]["params"], params):
            v.grad = p.grad[a:b]
        optimizer.step()


@torch.inference_mode()
def _evaluate(stack: Stack, x, y, batch: int) -> tuple[list[float], list[float]]:
    """Per-member mean loss and accuracy over whole sets x [K, N, ...] (may be an expanded view)."""
    logits = torch.cat([stack(x[:, i:i + batch], training=False) for i in range(0, x.shape[1], batch)], 1)
    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
    acc = (logits.argmax(-1) == y).float().mean(1)
    return loss.view(y.shape).mean(1).tolist(), acc.tolist()


def _validate(stack: Stack, val, batch: int, k: int) -> list[dict]:
    """Each member's val_loss and val_accuracy on its own seed's split; none without one."""
    if val is None:
        return [{} for _ in range(k)]
    loss, acc = _evaluate(stack, *val, batch)
    return [{"val_loss": lo, "val_accuracy": ac} for lo, ac in zip(loss, acc)]


def train_ensemble(unit: list[RunSpec], data: datasets.Data) -> list[RunResult]:
    """Train runs that differ only in their seed, perturbation or optimizer setting together;
    each result as an ensemble of one would give it, bit for bit.

    Args:
        unit: the runs, all with the same config but for the fields in FREE.
        data: the loaded dataset.
    Returns:
        One RunResult per run, in the unit's order. A member whose loss turns non-finite is
        'diverged' at that step while the others go on. Each wall_s is the unit's time divided
        by its size (the amortised cost of one run).
    """
    _check_unit(unit)
    # Members of one setting sit side by side in the stack: one optimizer per setting, not per member.
    order = sorted(range(len(unit)), key=lambda i: _setting(unit[i]))
    results = _train([unit[i] for i in order], data)
    return [results[order.index(i)] for i in range(len(unit))]


def _train(unit: list[RunSpec], data: datasets.Data) -> list[RunResult]:
    """train_ensemble's work, on a unit ordered by setting."""
    start = time.perf_counter()
    spec, k = unit[0], len(unit)
    prepared = [prepare(s, data) for s in unit]
    xs = torch.stack([p[0] for p in prepared])  # [K, n, C, H, W]: each member's own subset
    ys = torch.stack([p[1] for p in prepared])
    stack = Stack([p[2] for p in prepared])
    built = [environment(s, p[2]) for s, p in zip(unit, prepared)]  # facts of each member's own model
    del prepared
    vals = [validation_set(s, data) for s in unit]  # [K, V, ...]: each member's own split
    val = (torch.stack([v[0] for v in vals]), torch.stack([v[1] for v in vals])) if spec.validation else None
    diag = recorder.StackRecorder(unit, stack, data) if spec.diagnostics else None  # probes epoch 0
    optimizers = _optimizers(unit, stack.parameters())
    test_x = data.test_x.to(spec.device, DTYPES[spec.dtype])
    test_y = data.test_y.to(spec.device)
    eval_batch = EVAL_BATCH.get(spec.model_spec.kind, 64)  # a user's model: as the loop's
    shuffles = [shuffle_generator(s) for s in unit]
    n, bs = spec.n_train, spec.batch_size
    steps = math.ceil(n / bs)  # the last batch is partial, as the loop's

    alive = list(range(k))  # unit positions of the members still training, in stack order
    train0 = _evaluate(stack, xs, ys, eval_batch)
    if scored(spec, 0):
        test0 = _evaluate(stack, test_x.expand(k, *test_x.shape), test_y.expand(k, -1), eval_batch)
        val0 = _validate(stack, val, eval_batch, k)
    else:  # the training subset alone: the start, which a tuning run's score is checked against
        test0, val0 = ([None] * k, [None] * k), [{} for _ in range(k)]
    epochs = [[dict(epoch=0, train_loss=train0[0][i], train_accuracy=train0[1][i],
                    test_loss=test0[0][i], test_accuracy=test0[1][i], **val0[i])] for i in range(k)]
    losses, accs = [[] for _ in range(k)], [[] for _ in range(k)]
    status, diverged_step = ["done"] * k, [None] * k
    for epoch in range(1, spec.epochs + 1):
        m = len(alive)
        orders = torch.stack([torch.randperm(n, generator=shuffles[i]) for i in alive]).to(spec.device)
        orders += torch.arange(m, device=spec.device)[:, None] * n  # rows of xs flattened to [K*n, ...]
        flat_x, flat_y = xs.flatten(0, 1), ys.flatten()
        # Kept on the device and copied out once per epoch: no host sync per step.
        loss_buf = torch.empty(steps, m, device=spec.device)
        acc_buf = torch.empty(steps, m, device=spec.device)
        for b in range(steps):
            idx = orders[:, b * bs:(b + 1) * bs]
            x = flat_x.index_select(0, idx.flatten()).unflatten(0, idx.shape)
            y = flat_y.index_select(0, idx.flatten()).view(idx.shape)
            logits = stack(x, training=True)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)
            for p in stack.parameters():
                p.grad = None
            loss.sum().backward()  # member j's loss depends on slice j only: its own gradient
            if diag:
                diag.after_backward(b)
            _step(optimizers, stack.parameters())
            loss_buf[b] = loss.detach()
            acc_buf[b] = (logits.detach().argmax(-1) == y).float().mean(1)
        epoch_losses, epoch_accs = loss_buf.cpu().numpy(), acc_buf.cpu().numpy()
        if diag:
            diag.end_epoch(epoch)  # before any member is dropped: the loop probes a diverging run's last epoch
        keep = []
        for j, i in enumerate(alive):
            member_losses, member_accs, diverged_step[i] = until_nonfinite(
                epoch_losses[:, j], epoch_accs[:, j], epoch, steps)
            losses[i].append(member_losses)
            accs[i].append(member_accs)
            if diverged_step[i] is not None:
                status[i] = "diverged"
            else:
                keep.append(j)
        if not keep:
            break
        if len(keep) < m:
            xs, ys, optimizers = _drop(stack, optimizers, [unit[alive[j]] for j in keep], keep, xs, ys)
            val = (val[0][keep], val[1][keep]) if val is not None else None
            alive = [alive[j] for j in keep]
            if diag:
                diag.keep(keep)
        if not scored(spec, epoch):
            for i in alive:
                epochs[i].append(epoch_row(epoch, losses[i][-1], accs[i][-1], None, None))
            continue
        test = _evaluate(stack, test_x.expand(len(alive), *test_x.shape), test_y.expand(len(alive), -1),
                         eval_batch)
        scores = _validate(stack, val, eval_batch, len(alive))
        for j, i in enumerate(alive):
            epochs[i].append({**epoch_row(epoch, losses[i][-1], accs[i][-1], test[0][j], test[1][j]),
                              **scores[j]})
    wall = (time.perf_counter() - start) / k
    results = []
    for i, s in enumerate(unit):
        results.append(RunResult(s, status[i], epochs[i], batch_table(losses[i], accs[i], steps),
                                 diagnostics=diag.rows[i] if diag else [], diverged_step=diverged_step[i],
                                 wall_s=wall, env=built[i]))
    return results


def _drop(stack: Stack, optimizers: list, members: list[RunSpec], keep: list[int], xs, ys):
    """Keep only the members at stack positions `keep` (`members` their runs): parameters,
    optimizer state, data."""
    sel = torch.tensor(keep, device=xs.device)
    new = [torch.empty_like(p[:len(keep)]).copy_(p.detach()[sel]).requires_grad_(True) for p in stack.parameters()]
    span_of = {j: (span, j - span[0]) for span in optimizers for j in range(span[0], span[1])}
    fresh = _optimizers(members, new, old=[span_of[j] for j in keep])
    stack.keep(sel, new)
    return xs[sel], ys[sel], fresh
