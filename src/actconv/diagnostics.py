"""Training dynamics per layer: recorded on a fixed probe batch, analysed as long tables.

Recording (`Recorder`, used by `train.train_run` when `RunSpec.diagnostics` is on): at
epoch 0 and after every epoch, a forward pass over a fixed probe batch (300 images of the
training pool for MLPs, 100 for TinyVGG, the same for every run of a seed) gives, per
hidden layer, the mean and standard deviation of the activations (as Glorot & Bengio 2010
plotted them), the pre-activations' histogram, the fraction of saturated entries, the
fraction of dead units and the weight norm; during training, every `grad_every` steps,
each layer's weight gradient norm and the first-to-last ratio. Nothing here touches the
training numbers: the probe draws from its own generator, runs without gradients and
restores BatchNorm's running statistics, and gradient norms only read `.grad`.

Analysis (pure functions on the `diagnostics` long table joined to `runs`), the mechanism
findings the report states, and the verdicts of the paper presets follow.
"""
import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import activations as acts
from .seeding import generator
from .store import n_classes_of

# Glorot & Bengio's 300 fixed examples for MLPs; 100 for TinyVGG, where each image gives
# 784 positions per channel and a 300-image probe alone cost a fifth of an epoch.
PROBE_SIZE = {"mlp": 300, "tinyvgg": 100}
SAMPLE = 2 ** 16          # saturation and histograms from at most this many entries per layer
SATURATION = 0.01         # saturated: derivative below 1% of the activation's largest derivative
HIST_EDGES = np.linspace(-8.0, 8.0, 33)  # 32 bins of 0.5 plus one below and one above
HIST_METRICS = [f"preact_hist_{i:02d}" for i in range(len(HIST_EDGES) + 1)]
LAYER_METRICS = ["act_mean", "act_std", "unit_mean_median", "preact_mean", "preact_std",
                 "saturated", "dead"]
OUTPUT = "output"         # the last weight layer (the logits)
RATIO = "first/last"      # layer name of the gradient-norm ratio rows
_ACT_TYPES = tuple({type(acts.make_activation(a)) for a in acts.ACTIVATIONS})
_GRID = torch.linspace(-20.0, 20.0, 8001)  # where an activation's largest derivative is looked for


# -- recording ---------------------------------------------------------------------------

def probe_indices(seed: int, pool_size: int, size: int = PROBE_SIZE["mlp"]) -> torch.Tensor:
    """The probe batch: `size` pool images from the seed's own 'probe' stream."""
    return torch.randperm(pool_size, generator=generator(seed, "probe"))[:size]


def layers(model: nn.Module) -> list[tuple[str, nn.Module, nn.Module | None]]:
    """(name, weight layer, its activation or None) in forward order; the last is 'output'."""
    found = []
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            found.append([m, None])
        elif isinstance(m, _ACT_TYPES) and found:
            found[-1][1] = m
    return [(OUTPUT if i == len(found) - 1 else f"layer{i + 1}", w, a) for i, (w, a) in enumerate(found)]


def derivative(act: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The elementwise derivative of an activation at z, by autograd."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        y = act(z)
        (d,) = torch.autograd.grad(y, z, torch.ones_like(y))
    return d


def max_derivative(act: nn.Module) -> float:
    """The activation's largest derivative (on a dense grid over [-20, 20])."""
    p = next(act.parameters(), None)
    grid = _GRID.to(p.device, p.dtype) if p is not None else _GRID
    return float(derivative(act, grid).abs().max())


class Recorder:
    """Collects one run's diagnostics rows: construct it after the model, then call
    `after_backward(b)` after each backward pass and `end_epoch(epoch)` after each epoch."""

    def __init__(self, spec, model: nn.Module, data):
        self.model, self.every = model, spec.grad_every
        self.layers = layers(model)
        self.weights = [w.weight for _, w, _ in self.layers]
        device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
        size = PROBE_SIZE[spec.model_spec.kind]
        x = data.train_x[probe_indices(spec.seed, data.pool_size, size)].to(device, dtype)
        if spec.model_spec.kind == "tinyvgg":
            x = x.contiguous(memory_format=torch.channels_last)
        self.x = x
        self.steps = math.ceil(spec.n_train / spec.batch_size)
        # Gradient norms stay on the device until the epoch ends: no host sync per step.
        self.buf = torch.zeros(self.steps, len(self.weights), device=device, dtype=dtype)
        self.recorded: list[int] = []
        self.done_steps = 0
        self.rows: list[tuple] = []
        self._sample: dict[int, torch.Tensor] = {}
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
            names = [name for name, _, _ in self.layers]
            for step, row in zip(self.recorded, norms):
                self.rows.extend((epoch, step, n, "grad_norm", float(v)) for n, v in zip(names, row))
                self.rows.append((epoch, step, RATIO, "grad_ratio",
                                  float(row[0] / row[-1]) if row[-1] > 0 else math.nan))
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
        names, stats = [], []
        lo, width, n_bins = HIST_EDGES[0], HIST_EDGES[1] - HIST_EDGES[0], len(HIST_EDGES) + 1
        for name, w, a in self.layers:
            names.append(name)
            if a is None:
                stats.append(torch.linalg.vector_norm(w.weight).reshape(1))
                continue
            z, y = seen[name]
            zs = self._entries(z)
            d = derivative(a, zs).abs()
            others = [i for i in range(y.ndim) if i != 1]  # axis 1 is the unit (or channel)
            unit_means = y.mean(dim=others)
            # Uniform bins by arithmetic (bucketize and bincount are slower); the first and
            # last bins catch the tails, NaN (a diverged run) goes to an extra one, dropped.
            bins = ((zs - lo) / width).floor_().add_(1).clamp_(0, n_bins - 1).nan_to_num_(n_bins)
            ones = torch.ones((), dtype=zs.dtype, device=zs.device).expand(len(zs))
            hist = torch.zeros(n_bins + 1, dtype=zs.dtype, device=zs.device).index_add_(
                0, bins.long(), ones)[:n_bins]
            stats.append(torch.cat([
                torch.stack([y.mean(), y.std(correction=0), unit_means.median(), z.mean(),
                             z.std(correction=0),
                             (d < SATURATION * self._max_derivative(a)).to(y.dtype).mean(),
                             (y.ne(0).sum(dim=others) == 0).to(y.dtype).mean(),
                             torch.linalg.vector_norm(w.weight)]),
                hist.to(y.dtype) / zs.numel()]))
        for name, values in zip(names, [v.cpu().double().tolist() for v in stats]):
            metrics = (["weight_norm"] if len(values) == 1
                       else LAYER_METRICS + ["weight_norm"] + HIST_METRICS)
            self.rows.extend((epoch, step, name, m, v) for m, v in zip(metrics, values))

    def _max_derivative(self, act: nn.Module) -> float:
        """Cached per layer, except for activations that learn (PReLU's slope moves)."""
        if next(act.parameters(), None) is not None:
            return max_derivative(act)
        if id(act) not in self._dmax:
            self._dmax[id(act)] = max_derivative(act)
        return self._dmax[id(act)]

    def _entries(self, z: torch.Tensor) -> torch.Tensor:
        """All of z's entries, or a fixed random sample of SAMPLE of them (conv layers)."""
        n = z.numel()
        if n <= SAMPLE:
            return z.reshape(-1)
        if n not in self._sample:  # a private generator: the global RNG is left alone
            g = torch.Generator().manual_seed(n)
            self._sample[n] = torch.randint(n, (SAMPLE,), generator=g).to(z.device)
        if z.ndim == 4 and z.is_contiguous(memory_format=torch.channels_last):
            z = z.permute(0, 2, 3, 1)  # memory order: a view, where take would copy
        return z.reshape(-1)[self._sample[n]]


# -- analysis: pure functions on the diagnostics long table ------------------------------

RUN_KEYS = ["run_id", "model", "activation", "seed", "n_train"]
GROUP = ["model", "activation", "n_train"]


def layer_order(name: str) -> tuple:
    """Sort key: layer1, layer2, ..., layer10, output, then anything else."""
    if name.startswith("layer") and name[5:].isdigit():
        return (0, int(name[5:]))
    return (1, 0) if name == OUTPUT else (2, name)


def hidden_layers(names) -> list[str]:
    """The hidden layers among layer names, in forward order."""
    return sorted((n for n in set(names) if layer_order(n)[0] == 0), key=layer_order)


def is_hidden(layers: pd.Series) -> pd.Series:
    """Boolean mask: which layer names are hidden layers (a bool Series even when empty)."""
    return layers.map(lambda n: layer_order(n)[0] == 0).astype(bool)


def with_runs(diagnostics: pd.DataFrame, runs: pd.DataFrame, extra=()) -> pd.DataFrame:
    """Diagnostics rows with their run's keys. Needs `diagnostics` (run_id, epoch, step,
    layer, metric, value) and `runs` (run_id, model, activation, seed, n_train, + extra)."""
    _need(diagnostics, "diagnostics", ["run_id", "epoch", "step", "layer", "metric", "value"])
    _need(runs, "runs", RUN_KEYS + list(extra))
    keys = runs[RUN_KEYS + list(extra)].drop_duplicates("run_id")
    return diagnostics.merge(keys, on="run_id", how="inner")


def probe_table(diagnostics: pd.DataFrame, runs: pd.DataFrame,
                metrics=tuple(LAYER_METRICS) + ("weight_norm",)) -> pd.DataFrame:
    """One row per run, probe epoch and layer, one column per probe metric.

    Needs `diagnostics` (run_id, epoch, step, layer, metric, value) and `runs` (run_id,
    model, activation, seed, n_train). Layers without a metric (the output layer of a
    model with linear logits has only weight_norm) get NaN there.
    """
    d = with_runs(diagnostics[diagnostics["metric"].isin(metrics)], runs)
    if d.empty:
        return pd.DataFrame(columns=RUN_KEYS + ["epoch", "step", "layer", *metrics])
    wide = d.pivot_table(index=RUN_KEYS + ["epoch", "step", "layer"], columns="metric",
                         values="value", aggfunc="first").reset_index()
    wide.columns.name = None
    wide["_order"] = wide["layer"].map(layer_order)
    return wide.sort_values(["run_id", "epoch", "_order"]).drop(columns="_order").reset_index(drop=True)


def layer_curves(diagnostics: pd.DataFrame, runs: pd.DataFrame,
                 metric: str = "act_mean") -> pd.DataFrame:
    """Across seeds, per (model, activation, n_train, layer, epoch): mean, sd and n of a probe metric.

    Needs `diagnostics` and `runs` as `probe_table`. Columns: model, activation, n_train,
    layer, epoch, mean, sd, n.
    """
    d = with_runs(diagnostics[diagnostics["metric"] == metric], runs)
    out = (d.groupby(GROUP + ["layer", "epoch"])["value"]
           .agg(mean="mean", sd="std", n="count").reset_index())
    out["_order"] = out["layer"].map(layer_order)
    return out.sort_values(GROUP + ["_order", "epoch"]).drop(columns="_order").reset_index(drop=True)


def gradient_curves(diagnostics: pd.DataFrame, runs: pd.DataFrame,
                    metric: str = "grad_norm") -> pd.DataFrame:
    """Across seeds, per (model, activation, n_train, layer, step): median and quartiles.

    Needs `diagnostics` and `runs` as `probe_table`; `metric` is grad_norm (one row per
    weight layer) or grad_ratio (layer 'first/last'). Columns: model, activation,
    n_train, layer, step, median, q25, q75, n.
    """
    d = with_runs(diagnostics[diagnostics["metric"] == metric], runs)
    g = d.groupby(GROUP + ["layer", "step"])["value"]
    out = pd.concat([g.median().rename("median"), g.quantile(0.25).rename("q25"),
                     g.quantile(0.75).rename("q75"), g.count().rename("n")], axis=1).reset_index()
    out["_order"] = out["layer"].map(layer_order)
    return out.sort_values(GROUP + ["_order", "step"]).drop(columns="_order").reset_index(drop=True)


def preact_histogram(diagnostics: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """One run's pre-activation histograms: epoch, layer, left, right, fraction.

    Needs `diagnostics` (run_id, epoch, layer, metric, value). The first and last bins are
    the tails (left -inf, right +inf); fractions of one layer and epoch sum to 1.
    """
    d = diagnostics[(diagnostics["run_id"] == run_id)
                    & diagnostics["metric"].str.startswith("preact_hist_")]
    index = d["metric"].str[len("preact_hist_"):].astype(int)
    bounds = np.concatenate([[-np.inf], HIST_EDGES, [np.inf]])
    out = pd.DataFrame({"epoch": d["epoch"].to_numpy(), "layer": d["layer"].to_numpy(),
                        "left": bounds[index.to_numpy()], "right": bounds[index.to_numpy() + 1],
                        "fraction": d["value"].to_numpy()})
    out["_order"] = out["layer"].map(layer_order)
    return out.sort_values(["_order", "epoch", "left"]).drop(columns="_order").reset_index(drop=True)


def unit_fractions(diagnostics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Saturated and dead fractions of the hidden layers per (model, activation, n_train).

    Needs `diagnostics` and `runs` as `probe_table`. Per run, the mean over hidden layers
    at epoch 0 (`*_start`) and at the last probed epoch (`*_end`), and the largest layer
    value over all epochs (`*_max`); then the mean over seeds, with `n` seeds.
    """
    p = probe_table(diagnostics, runs, metrics=("saturated", "dead"))
    p = p[is_hidden(p["layer"])]
    cols = ["saturated_start", "saturated_end", "saturated_max", "dead_start", "dead_end", "dead_max"]
    if p.empty:
        return pd.DataFrame(columns=GROUP + cols + ["n"])
    rows = []
    for key, g in p.groupby(RUN_KEYS):
        first, last = g[g["epoch"] == g["epoch"].min()], g[g["epoch"] == g["epoch"].max()]
        rows.append(dict(zip(RUN_KEYS, key)) | {
            f"{m}_{w}": v for m in ("saturated", "dead")
            for w, v in (("start", first[m].mean()), ("end", last[m].mean()), ("max", g[m].max()))})
    per_run = pd.DataFrame(rows)
    out = per_run.groupby(GROUP)[cols].mean()
    out["n"] = per_run.groupby(GROUP)["seed"].nunique()
    return out.reset_index()


# Near the SELU fixed point (0, 1): Klambauer et al.'s theorem 1 maps mean in [-0.1, 0.1]
# and variance in [0.8, 1.5] into itself; a looser band, since inputs are images.
MEAN_TOL = 0.2
VAR_BAND = (0.5, 1.5)


def self_normalisation(diagnostics: pd.DataFrame, runs: pd.DataFrame, activation: str = "selu", *,
                       mean_tol: float = MEAN_TOL, var_band=VAR_BAND) -> pd.DataFrame:
    """Per (model, n_train, hidden layer, epoch): activation mean and variance, mean over seeds.

    Needs `diagnostics` and `runs` as `probe_table`. `near` is |mean| <= mean_tol and
    variance within var_band. Columns: model, n_train, layer, epoch, mean, var, n, near.
    """
    p = probe_table(diagnostics, runs[runs["activation"] == activation], metrics=("act_mean", "act_std"))
    p = p[is_hidden(p["layer"])].assign(var=lambda d: d["act_std"] ** 2)
    out = (p.groupby(["model", "n_train", "layer", "epoch"])
           .agg(mean=("act_mean", "mean"), var=("var", "mean"), n=("seed", "nunique")).reset_index())
    out["near"] = (out["mean"].abs() <= mean_tol) & out["var"].between(*var_band)
    out["_order"] = out["layer"].map(layer_order)
    out = out.sort_values(["model", "n_train", "_order", "epoch"]).drop(columns="_order")
    return out.reset_index(drop=True)


def activation_table(names=None, lo: float = -5.0, hi: float = 5.0, points: int = 501) -> pd.DataFrame:
    """Each activation and its derivative (autograd) over [lo, hi]: activation, x, value,
    derivative, saturated (derivative below 1% of the activation's largest)."""
    x = torch.linspace(lo, hi, points, dtype=torch.float64)
    rows = []
    for name in names or list(acts.ACTIVATIONS):
        act = acts.make_activation(name).double()
        with torch.no_grad():
            y = act(x)
        d = derivative(act, x)
        dmax = max_derivative(act)
        rows.append(pd.DataFrame({"activation": name, "x": x.numpy(), "value": y.numpy(),
                                  "derivative": d.numpy(),
                                  "saturated": d.abs().numpy() < SATURATION * dmax}))
    return pd.concat(rows, ignore_index=True)


def loss_roughness(batches: pd.DataFrame, skip_epochs: int = 1) -> pd.DataFrame:
    """Step-to-step variation of each run's batch loss, after its first `skip_epochs`.

    Needs `batches` (run_id, model, activation, seed, n_train, epoch, step, loss). Columns:
    the run keys, `rough` (standard deviation of loss[t] - loss[t-1]), `rough_log` (the
    same for log loss: scale-free, so a lower loss level is not mistaken for smoothness),
    `level` (mean loss), `steps`.
    """
    _need(batches, "batches", RUN_KEYS + ["epoch", "step", "loss"])
    rows = []
    for key, g in batches[batches["epoch"] > skip_epochs].sort_values("step").groupby(RUN_KEYS):
        loss = g["loss"].to_numpy(float)
        loss = loss[np.isfinite(loss)]
        diff = np.diff(loss)
        logd = np.diff(np.log(np.maximum(loss, 1e-12)))
        rows.append(dict(zip(RUN_KEYS, key), rough=diff.std(ddof=1) if len(diff) > 1 else np.nan,
                         rough_log=logd.std(ddof=1) if len(logd) > 1 else np.nan,
                         level=loss.mean() if len(loss) else np.nan, steps=len(loss)))
    return pd.DataFrame(rows, columns=RUN_KEYS + ["rough", "rough_log", "level", "steps"])


# -- mechanism findings --------------------------------------------------------------------

MECHANISMS = {
    "m1": "Sigmoid's flat loss comes from saturated units or vanishing gradients",
    "m2": "Bounded activations on the logits flatten the loss by themselves (the cross-entropy floor)",
    "m3": "SELU self-normalises: every hidden layer keeps activation mean near 0 and variance near 1",
}
FLAT_SHARE = 0.25       # sigmoid falls by less than a quarter of the others' median fall: flat
SATURATED_SHARE = 0.10  # a tenth of a layer's entries with derivative < 1% of its maximum
VANISHING = 0.1         # first/last gradient ratio below a tenth of the others' median
MIN_FLOOR = 0.1         # logit ranges whose floor is below this (relu6: 0.02) do not bound the loss


def mechanism_findings(results) -> pd.DataFrame:
    """The mechanisms behind the original findings, checked with diagnostics.

    Needs `results.runs` (run_id, status, model, activation, seed, n_train, model_kind,
    activate_logits, init), `results.epochs` (run_id, epoch, train_loss) and
    `results.diagnostics` (data contract); only runs with status 'done' count. Columns as
    `analysis.findings`: id, claim, scope, verdict (supported / not supported /
    inconclusive), evidence.
    """
    runs = results.runs
    _need(runs, "runs", RUN_KEYS + ["status", "model_kind", "activate_logits"])
    runs = runs[runs["status"] == "done"]
    falls = _falls(results.epochs[results.epochs["run_id"].isin(runs["run_id"])])
    diag = results.diagnostics[results.diagnostics["run_id"].isin(runs["run_id"])]
    rows = []
    for model in sorted(runs.loc[runs["activation"] == "sigmoid", "model"].unique()):
        rows.append(("m1", model, *_m1(runs[runs["model"] == model], falls, diag)))
    if not rows:
        rows.append(("m1", "all models", "inconclusive", "no finished sigmoid runs"))
    logits = runs[runs["activate_logits"].fillna(0).astype(int) == 1]
    for model in sorted(logits["model"].unique()):
        mine = logits[logits["model"] == model]
        for (lo, hi), members in _bounded_groups(mine["activation"], n_classes_of(mine)):
            rows.append(("m2", f"{model}, logits in ({lo:g}, {hi:g})",
                         *_m2(model, lo, hi, members, runs, falls)))
    if logits.empty:
        rows.append(("m2", "all models", "inconclusive",
                     "no finished model with the activation on the logits (activate_logits = true)"))
    for model in sorted(runs.loc[runs["activation"] == "selu", "model"].unique()):
        rows.append(("m3", model, *_m3(runs[runs["model"] == model], diag)))
    if not runs["activation"].eq("selu").any():
        rows.append(("m3", "all models", "inconclusive", "no finished SELU runs"))
    out = pd.DataFrame(rows, columns=["id", "scope", "verdict", "evidence"])
    out.insert(1, "claim", out["id"].map(MECHANISMS))
    return out


def _falls(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per run: start (epoch-0 train loss), final (last epoch's), fall = start - final."""
    e = epochs.sort_values(["run_id", "epoch"]).groupby("run_id")
    out = pd.DataFrame({"start": e["train_loss"].first(), "final": e["train_loss"].last(),
                        "epochs": e["epoch"].max()})
    return out.assign(fall=out["start"] - out["final"])


def _by_activation(runs: pd.DataFrame, falls: pd.DataFrame, column: str) -> pd.Series:
    """Mean over the runs of each activation of one column of `falls`."""
    j = runs[["run_id", "activation"]].join(falls, on="run_id")
    return j.groupby("activation")[column].mean()


def _m1(runs: pd.DataFrame, falls: pd.DataFrame, diag: pd.DataFrame):
    fall = _by_activation(runs, falls, "fall").dropna()
    if "sigmoid" not in fall.index:
        return "inconclusive", "no finished sigmoid runs with epoch losses"
    others = fall.drop("sigmoid")
    if others.empty:
        return "inconclusive", "sigmoid is the only activation: nothing to compare its loss with"
    share = fall["sigmoid"] / others.median() if others.median() > 0 else np.nan
    flat = bool(share < FLAT_SHARE)
    head = (f"train loss falls {_fmt(fall['sigmoid'])} nats for sigmoid vs a median "
            f"{_fmt(others.median())} for {len(others)} others ({_fmt(share * 100)}% of it: "
            f"{'flat' if flat else 'not flat'}, flat means below {FLAT_SHARE:.0%})")
    d = diag[diag["run_id"].isin(runs["run_id"])]
    sig_ids = runs.loc[runs["activation"] == "sigmoid", "run_id"]
    if not d["run_id"].isin(sig_ids).any():
        return "inconclusive", (head + "; no diagnostics for the sigmoid runs, so saturation and "
                                "gradients were not measured: run the study with --diagnostics")
    p = probe_table(d, runs, metrics=("saturated",))
    p = p[p["epoch"] >= 1]
    hidden = p[is_hidden(p["layer"])]
    sat = hidden.groupby(["activation", "seed", "layer"])["saturated"].mean()  # over epochs
    sat = sat.groupby(["activation", "seed"]).max().groupby("activation").mean()  # worst layer, seeds
    out_sat = p[p["layer"] == OUTPUT].groupby("activation")["saturated"].mean()
    ratio = (with_runs(d[d["metric"] == "grad_ratio"], runs)
             .groupby(["activation", "seed"])["value"].median().groupby("activation").median())
    sig_sat = sat.get("sigmoid", np.nan)
    sig_ratio = ratio.get("sigmoid", np.nan)
    other_ratio = ratio.drop("sigmoid", errors="ignore").median()
    rel = sig_ratio / other_ratio if other_ratio > 0 else np.nan
    saturating, vanishing = bool(sig_sat >= SATURATED_SHARE), bool(rel < VANISHING)
    ev = (head + f"; saturated entries in sigmoid's worst hidden layer (derivative < "
          f"{SATURATION:.0%} of its maximum, mean over epochs 1..end and seeds): {_fmt(sig_sat * 100)}% "
          f"(others: {_list(sat.drop('sigmoid', errors='ignore') * 100, '%')})")
    if "sigmoid" in out_sat.index and np.isfinite(out_sat["sigmoid"]):
        ev += f"; saturated sigmoid outputs on the logits: {_fmt(out_sat['sigmoid'] * 100)}%"
    ev += (f"; first/last layer gradient-norm ratio (median over steps and seeds): sigmoid "
           f"{_fmt(sig_ratio)} vs others' median {_fmt(other_ratio)} ({_fmt(rel)}x; vanishing means "
           f"below {VANISHING:g}x)")
    logits = bool(runs["activate_logits"].fillna(0).astype(int).eq(1).any())
    if not flat:
        return "not supported", ev + (". Sigmoid's loss is not flat here, so there is nothing for "
                                      "saturation to explain")
    if saturating or vanishing:
        why = " and ".join(w for w, on in (("saturated units", saturating),
                                           ("vanishing gradients", vanishing)) if on)
        return "supported", ev + f". The flat loss comes with measured {why}"
    means = probe_table(d, runs[runs["activation"] == "sigmoid"], metrics=("act_mean",))
    means = means.loc[is_hidden(means["layer"]), "act_mean"].mean()
    return "not supported", ev + (
        ". Neither saturation nor vanishing gradients is measured"
        + ("; the sigmoid on the logits bounds the loss instead (m2)" if logits else "")
        + f"; what is measured: sigmoid's hidden activations average {_fmt(means)} (not centred "
        "on 0) and its derivative never exceeds 0.25, which slows SGD without any saturation")


def _bounded_groups(activations: pd.Series, n_classes: int = 10):
    """(range, [activations]) for each logit range with a floor worth the name."""
    groups = {}
    for a in sorted(set(activations)):
        rng = acts.BOUNDED_RANGE.get(a)
        if rng and np.isfinite(rng[0]) and acts.logit_loss_floor(*rng, n_classes) >= MIN_FLOOR:
            groups.setdefault(rng, []).append(a)
    return sorted(groups.items())


def _m2(model: str, lo: float, hi: float, members, runs: pd.DataFrame, falls: pd.DataFrame):
    mine = runs[runs["model"] == model]
    n_classes = n_classes_of(mine)
    floor = acts.logit_loss_floor(lo, hi, n_classes)
    unbounded = [a for a in mine["activation"].unique() if a not in acts.BOUNDED_RANGE]
    others = _by_activation(mine[mine["activation"].isin(unbounded)], falls, "fall").median()
    kind = mine["model_kind"].iloc[0]
    twins = runs[(runs["model_kind"] == kind) & (runs["activate_logits"].fillna(0).astype(int) == 0)
                 & runs["n_train"].isin(mine["n_train"].unique())]
    parts, verdicts = [], []
    for a in members:
        start = _by_activation(mine[mine["activation"] == a], falls, "start").get(a, np.nan)
        final = _by_activation(mine[mine["activation"] == a], falls, "final").get(a, np.nan)
        room = start - floor
        text = (f"{a}: epoch-0 loss {_fmt(start)}, so it can fall at most {_fmt(room)} nats; it ends at "
                f"{_fmt(final)} ({_fmt(final - floor)} above the floor)")
        twin = _by_activation(twins[twins["activation"] == a], falls, "final").get(a, np.nan)
        if np.isfinite(twin):
            text += f"; with linear logits {a} ends at {_fmt(twin)}"
        if final - floor > 0.5 * room:
            text += (f"; still more than half its possible fall above the floor, so within these "
                     f"epochs the floor is not all that holds {a} back (m1 measures the rest)")
        parts.append(text)
        verdicts.append("inconclusive" if not np.isfinite(others) or not np.isfinite(room) else
                        "supported" if room < others else "not supported")
    ev = (f"logits in ({lo:g}, {hi:g}) cannot bring cross-entropy on {n_classes} classes below "
          f"log(1 + {n_classes - 1} e^-{hi - lo:g}) = {floor:.3f} nats; "
          + (f"the {len(unbounded)} unbounded activations of this model fell a median "
             f"{_fmt(others)} nats; "
             if np.isfinite(others) else "no unbounded activation in this model to compare with; ")
          + "; ".join(parts))
    verdict = verdicts[0] if len(set(verdicts)) == 1 else "inconclusive"
    if verdict == "supported":
        ev += (". The floor alone keeps the fall below what the unbounded activations achieve: "
               "a flat line here says nothing about saturation")
    return verdict, ev


def _m3(runs: pd.DataFrame, diag: pd.DataFrame):
    sn = self_normalisation(diag, runs)
    if sn.empty:
        return "inconclusive", ("no diagnostics for the SELU runs, so activation statistics were not "
                                "measured: run the study with --diagnostics")
    init = ", ".join(sorted(runs.loc[runs["activation"] == "selu", "init"].dropna().unique())) \
        if "init" in runs else "?"
    share = sn["near"].mean()
    by_epoch = sn.groupby("epoch")["near"].mean()
    # furthest from (0, 1), each coordinate in units of its tolerance
    half_band = (VAR_BAND[1] - VAR_BAND[0]) / 2
    distance = np.maximum(sn["mean"].abs() / MEAN_TOL, (sn["var"] - 1).abs() / half_band)
    worst = sn.loc[distance.idxmax()]
    ev = (f"{len(sn)} (layer, epoch) cells over {sn['layer'].nunique()} hidden layer(s), epochs "
          f"0..{int(sn['epoch'].max())}, {int(sn['n'].max())} seed(s), init {init}: {share:.0%} near "
          f"(|mean| <= {MEAN_TOL:g}, variance in [{VAR_BAND[0]:g}, {VAR_BAND[1]:g}]; "
          f"{by_epoch.iloc[0]:.0%} at epoch {int(by_epoch.index[0])}, {by_epoch.iloc[-1]:.0%} at "
          f"epoch {int(by_epoch.index[-1])}); means {_fmt(sn['mean'].min())}..{_fmt(sn['mean'].max())}, "
          f"variances {_fmt(sn['var'].min())}..{_fmt(sn['var'].max())}; furthest: {worst['layer']} "
          f"at epoch {int(worst['epoch'])} (mean {_fmt(worst['mean'])}, variance {_fmt(worst['var'])})")
    missing = [need for need, ok in (
        ("LeCun-normal weights (Var(w) = 1/n)", "lecun_normal" in init),
        ("standardised inputs", "normalize" not in runs or runs["normalize"].eq("standard").all()))
        if not ok]
    if missing:
        ev += f"; self-normalisation assumes {' and '.join(missing)}, which this model does not have"
    verdict = "supported" if share >= 0.9 else "not supported" if share < 0.5 else "inconclusive"
    return verdict, ev


def _fmt(x) -> str:
    """A number for evidence text: 3 significant digits, scientific when huge or tiny."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if math.isnan(x):
        return "n/a"
    if not math.isfinite(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.2e}"
    return f"{x:#.3g}".rstrip(".")


def _list(series: pd.Series, unit: str = "") -> str:
    return ", ".join(f"{k} {_fmt(v)}{unit}" for k, v in series.items()) or "none"


# -- paper presets: claims and verdicts ----------------------------------------------------

PAPER_VERDICTS = ("reproduced", "not reproduced", "inconclusive")
WIN_SHARE = 0.8   # "lower" must hold in at least 80% of the paired seeds (4 of 5)
MIN_SEEDS = 3


def paper_verdicts(results, study: str | None = None) -> pd.DataFrame:
    """Verdicts on the published claims for every paper preset in the results.

    Needs `results.runs` (run_id, study, status, model, activation, seed, n_train, lr,
    hidden_layers, batchnorm, init), `results.epochs`, `results.batches` and
    `results.diagnostics` (data contract). `study` picks one preset; by default every
    study in `runs` that is a paper preset. Columns: id (the preset), claim, scope, verdict
    (reproduced / not reproduced / inconclusive), evidence (the numbers).
    """
    _need(results.runs, "runs", RUN_KEYS + ["study", "status"])
    names = [study] if study else [s for s in PAPERS if s in set(results.runs["study"])]
    rows = []
    for name in names:
        if name not in PAPERS:
            raise ValueError(f"no paper claims for study {name!r}; known: {', '.join(PAPERS)}")
        runs = results.runs[(results.runs["study"] == name) & (results.runs["status"] == "done")]
        for claim, scope, verdict, ev in PAPERS[name](runs, results):
            rows.append((name, claim, scope, verdict, ev))
    return pd.DataFrame(rows, columns=["id", "claim", "scope", "verdict", "evidence"])


def _final(runs: pd.DataFrame, epochs: pd.DataFrame, column: str = "train_loss") -> pd.Series:
    """run_id -> the last epoch's value of a column."""
    e = epochs[epochs["run_id"].isin(runs["run_id"])].sort_values(["run_id", "epoch"])
    return e.groupby("run_id")[column].last()


def _lowest(scores: dict, target: str, what: str, highest: bool = False):
    """Is `target` lowest (or highest) by median over seeds, and beyond the runner-up in most
    paired seeds? `scores`: {activation: Series indexed by seed}. Returns (verdict, evidence)."""
    scores = {a: s.dropna() for a, s in scores.items() if len(s.dropna())}
    if target not in scores or len(scores) < 2:
        return "inconclusive", f"{what}: needs {target} and at least one other activation"
    medians = pd.Series({a: s.median() for a, s in scores.items()}).sort_values(ascending=not highest)
    runner_up = medians.drop(target).index[0]
    common = scores[target].index.intersection(scores[runner_up].index)
    mine, theirs = scores[target][common], scores[runner_up][common]
    wins = int((mine > theirs).sum() if highest else (mine < theirs).sum())
    n = len(common)
    ev = (f"{what}, median over seeds: " + ", ".join(f"{a} {_fmt(v)}" for a, v in medians.items())
          + f"; {target} {'above' if highest else 'below'} {runner_up} in {wins}/{n} paired seeds")
    if n < MIN_SEEDS:
        return "inconclusive", ev + f" (fewer than {MIN_SEEDS} paired seeds)"
    if medians.index[0] == target:
        return ("reproduced" if wins >= WIN_SHARE * n else "inconclusive"), ev
    return ("not reproduced" if n - wins >= WIN_SHARE * n else "inconclusive"), ev


def _by_seed(runs: pd.DataFrame, values: pd.Series, activation: str) -> pd.Series:
    r = runs[runs["activation"] == activation]
    by_seed = pd.Series(values.reindex(r["run_id"]).to_numpy(), index=r["seed"].to_numpy())
    return by_seed.groupby(level=0).mean()


def _gelu_paper(runs, results):
    claim = "GELU has the lowest median training loss"
    if runs.empty:
        return [(claim, "all runs", "inconclusive", "no finished runs")]
    final = _final(runs, results.epochs)
    # The paper reports each activation at its best learning rate (lowest median final loss).
    best = {}
    for (a, lr), g in runs.groupby(["activation", "lr"]):
        med = final.reindex(g["run_id"]).median()
        if a not in best or med < best[a][1]:
            best[a] = (lr, med)
    chosen = runs[[best[a][0] == lr for a, lr in zip(runs["activation"], runs["lr"])]]
    scores = {a: _by_seed(chosen, final, a) for a in sorted(best)}
    verdict, ev = _lowest(scores, "gelu", "final-epoch training loss")
    ev = ("best learning rate per activation: "
          + ", ".join(f"{a} {lr:g}" for a, (lr, _) in sorted(best.items())) + "; " + ev)
    # The paper plots whole curves: how often is GELU's median lowest along the way?
    e = results.epochs[results.epochs["run_id"].isin(chosen["run_id"]) & (results.epochs["epoch"] >= 1)]
    e = e.merge(chosen[["run_id"]], on="run_id")
    curve = e.groupby(["epoch", "activation"])["train_loss"].median().unstack()
    if "gelu" in curve and len(curve):
        share = (curve.idxmin(axis=1) == "gelu").mean()
        ev += f"; GELU's median is the lowest at {share:.0%} of the {len(curve)} epochs"
    rows = [(claim, f"{runs['model'].iloc[0]}, n_train {runs['n_train'].max()}, best lr", verdict, ev)]
    for lr, g in runs.groupby("lr"):
        v, text = _lowest({a: _by_seed(g, final, a) for a in sorted(g["activation"].unique())}, "gelu",
                          "final-epoch training loss")
        rows.append((claim, f"lr {lr:g} only", v, text))
    return rows


def _elu_paper(runs, results):
    out = []
    claim = "ELU's training loss falls fastest"
    e = results.epochs[results.epochs["run_id"].isin(runs["run_id"]) & (results.epochs["epoch"] >= 1)]
    mean_loss = e.groupby("run_id")["train_loss"].mean()  # area under the curve: lower = faster
    acts_ = sorted(runs["activation"].unique())
    v, ev = _lowest({a: _by_seed(runs, mean_loss, a) for a in acts_}, "elu",
                    "training loss averaged over all epochs (the area under the curve)")
    first = e[e["epoch"] == 1].set_index("run_id")["train_loss"]
    ev += "; after epoch 1, median: " + ", ".join(
        f"{a} {_fmt(_by_seed(runs, first, a).median())}" for a in acts_)
    out.append((claim, "all seeds", v, ev))
    claim = "ELU's mean activations stay nearest zero"
    p = probe_table(results.diagnostics, runs, metrics=("unit_mean_median",))
    p = p[(p["epoch"] >= 1) & is_hidden(p["layer"])]
    if p.empty:
        out.append((claim, "all seeds", "inconclusive",
                    "no diagnostics: run the preset with --diagnostics"))
        return out
    # The paper's figure: the median over units of each unit's average activation, per layer.
    dist = p.assign(a=p["unit_mean_median"].abs()).groupby("run_id")["a"].mean()
    v, ev = _lowest({a: _by_seed(runs, dist, a) for a in acts_}, "elu",
                    "|median unit activation|, averaged over hidden layers and epochs 1..end")
    out.append((claim, "all seeds", v, ev))
    return out


def _glorot_sigmoid(runs, results):
    out = []
    claim = "The sigmoid network's top hidden layer is driven towards 0 early in training"
    p = probe_table(results.diagnostics, runs, metrics=("act_mean", "act_std"))
    p = p[is_hidden(p["layer"])]
    sig = p[p["activation"] == "sigmoid"]
    if sig.empty:
        out.append((claim, "sigmoid", "inconclusive",
                    "no diagnostics for sigmoid runs: run with --diagnostics"))
    else:
        top = hidden_layers(sig["layer"])[-1]
        last_epoch = int(sig["epoch"].max())
        early = max(1, math.ceil(last_epoch / 5))  # the first fifth of training
        hits, parts = 0, []
        for seed, g in sig.groupby("seed"):
            t = g[g["layer"] == top].set_index("epoch")["act_mean"]
            lower = g[g["layer"] != top].groupby("epoch")["act_mean"].mean()
            low_early = t[(t.index >= 1) & (t.index <= early)].min()
            ok = low_early <= 0.5 * t.get(0, np.nan) and lower.get(early, np.nan) >= 2 * low_early
            hits += bool(ok)
            parts.append((t.get(0, np.nan), low_early, t.iloc[-1], lower.get(early, np.nan),
                          int(t.idxmin())))
        n = len(parts)
        m = np.nanmean(np.array(parts, float), axis=0)
        ev = (f"{top} (top) mean activation, mean over {n} seeds: {_fmt(m[0])} at epoch 0, {_fmt(m[1])} "
              f"by epoch {early} (the first fifth of training), {_fmt(m[2])} at epoch {last_epoch}, "
              f"lowest at epoch {m[4]:.0f}; lower hidden layers' mean at epoch {early}: "
              f"{_fmt(m[3])}; halved towards 0 by epoch {early} while the lower layers stay at least "
              f"twice as high in {hits}/{n} seeds")
        tanh = p[(p["activation"] == "tanh") & (p["layer"] == top)]
        if len(tanh):
            end = tanh["epoch"] == tanh["epoch"].max()
            ev += (f"; tanh's {top} for comparison: mean {_fmt(tanh['act_mean'].mean())}, standard "
                   f"deviation {_fmt(tanh.loc[tanh['epoch'] == 0, 'act_std'].mean())} at epoch 0 and "
                   f"{_fmt(tanh.loc[end, 'act_std'].mean())} at the end")
        if m[2] > 0.5 * m[0]:
            ev += "; it has escaped again by the last epoch"
        elif n:
            ev += ("; it has not escaped by the last epoch (the paper saw a slow escape after about "
                   "100 epochs)")
        verdict = ("inconclusive" if n < MIN_SEEDS else "reproduced" if hits >= WIN_SHARE * n
                   else "not reproduced" if n - hits >= WIN_SHARE * n else "inconclusive")
        out.append((claim, "sigmoid", verdict, ev))
    claim = "Sigmoid has the worst test error"
    err = 1 - _final(runs, results.epochs, "test_accuracy")
    v, ev = _lowest({a: _by_seed(runs, err, a) for a in sorted(runs["activation"].unique())},
                    "sigmoid", "final test error", highest=True)
    out.append((claim, "all seeds", v, ev))
    return out


def roughness_by_level(batches: pd.DataFrame, *, window: int = 25, min_steps: int = 20,
                       edges=tuple(np.geomspace(0.01, 10.0, 13))) -> pd.DataFrame:
    """Step-to-step variation of the batch loss relative to its local level, per loss band.

    A lower loss has smaller batch-to-batch changes in nats and larger ones relative to
    itself, so two curves are compared only where their levels match. Needs `batches`
    (run_id, model, activation, seed, n_train, step, loss). Per run: the trend is the
    centred running median over `window` steps; each step's change is divided by the
    trend; steps are grouped into bands of the trend (`edges`, log-spaced); bands with at
    least `min_steps` steps give `rough` (standard deviation of the relative change).
    Columns: the run keys, band_low, band_high, rough, steps.
    """
    _need(batches, "batches", RUN_KEYS + ["step", "loss"])
    edges = np.asarray(edges)
    rows = []
    for key, g in batches.sort_values("step").groupby(RUN_KEYS):
        loss = g["loss"].to_numpy(float)
        loss = loss[np.isfinite(loss)]
        if len(loss) < 2:
            continue
        trend = pd.Series(loss).rolling(window, center=True, min_periods=1).median().to_numpy()
        rel, level = np.diff(loss) / trend[1:], trend[1:]
        band = np.digitize(level, edges)
        for b in np.unique(band):
            if 0 < b < len(edges) and (band == b).sum() >= min_steps:
                rows.append(dict(zip(RUN_KEYS, key), band_low=edges[b - 1], band_high=edges[b],
                                 rough=rel[band == b].std(ddof=1), steps=int((band == b).sum())))
    return pd.DataFrame(rows, columns=RUN_KEYS + ["band_low", "band_high", "rough", "steps"])


def _snn_paper(runs, results):
    out = []
    claim = "SELU's loss curve is smoother than ReLU with BatchNorm's"
    selu = runs[(runs["activation"] == "selu") & (runs["batchnorm"].fillna(0).astype(int) == 0)]
    bn = runs[(runs["activation"] == "relu") & (runs["batchnorm"].fillna(0).astype(int) == 1)]
    b = results.batches[results.batches["run_id"].isin(pd.concat([selu, bn])["run_id"])]
    whole = loss_roughness(b).set_index("run_id")
    banded = roughness_by_level(b)
    method = ("step-to-step change of the batch loss relative to its running median, compared where "
              "both curves are at the same loss level (log-spaced bands, 20+ steps each)")
    depths = sorted(set(selu["hidden_layers"]) & set(bn["hidden_layers"]))
    if not depths:
        out.append((claim, "all depths", "inconclusive", "needs SELU runs without BatchNorm and ReLU "
                    "runs with BatchNorm at the same depth"))
    for depth in depths:
        s_ids = selu[selu["hidden_layers"] == depth].set_index("seed")["run_id"]
        b_ids = bn[bn["hidden_layers"] == depth].set_index("seed")["run_id"]
        seeds = s_ids.index.intersection(b_ids.index)
        wins = total = 0
        for seed in seeds:
            s = banded[banded["run_id"] == s_ids[seed]].set_index("band_low")["rough"]
            r = banded[banded["run_id"] == b_ids[seed]].set_index("band_low")["rough"]
            common = s.index.intersection(r.index)
            wins += int((s[common] < r[common]).sum())
            total += len(common)
        ws, wb = whole.reindex(s_ids[seeds]), whole.reindex(b_ids[seeds])
        ev = (f"{method}: SELU smoother in {wins}/{total} matched (seed, loss band) pairs over "
              f"{len(seeds)} seeds; whole run after epoch 1, median over seeds: std of step-to-step "
              f"change SELU {_fmt(ws['rough'].median())} vs BatchNorm {_fmt(wb['rough'].median())} "
              f"nats, of log loss {_fmt(ws['rough_log'].median())} vs "
              f"{_fmt(wb['rough_log'].median())}, at mean loss {_fmt(ws['level'].median())} vs "
              f"{_fmt(wb['level'].median())} (a lower loss moves less in nats and more in log)")
        verdict = ("inconclusive" if total < MIN_SEEDS else "reproduced" if wins >= WIN_SHARE * total
                   else "not reproduced" if total - wins >= WIN_SHARE * total else "inconclusive")
        if total < MIN_SEEDS:
            ev += (f"; fewer than {MIN_SEEDS} matched pairs: the curves never share a loss level "
                   "long enough")
        out.append((claim, f"{depth} hidden layers", verdict, ev))
    claim = "SELU keeps each layer's activations near mean 0 and variance 1"
    for model, g in selu.groupby("model"):
        verdict, ev = _m3(g, results.diagnostics[results.diagnostics["run_id"].isin(g["run_id"])])
        out.append((claim, model, {"supported": "reproduced", "not supported": "not reproduced"}
                    .get(verdict, verdict), ev))
    return out


PAPERS = {"gelu-paper": _gelu_paper, "elu-paper": _elu_paper, "glorot-sigmoid": _glorot_sigmoid,
          "snn-paper": _snn_paper}


def _need(df: pd.DataFrame, name: str, columns) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {', '.join(missing)}; it has: "
                         f"{', '.join(map(str, df.columns))}")
