"""Figures from the long tables and analysis results; every function returns a Figure, none writes.

Figures are built with `matplotlib.figure.Figure` (no pyplot), so nothing needs a display
and nothing accumulates in a global figure registry. Every activation keeps one colour,
line style and marker in every figure. Dense line art (every batch loss of a run) is
drawn `rasterized`, so a vector copy of a figure stays small and quick to write.
"""
import hashlib
import math

import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from . import analysis, diagnostics
from .tables import flag

# Paul Tol's "muted" qualitative scheme (colour-blind safe) plus black: ten colours.
PALETTE = ["#332288", "#117733", "#882255", "#88CCEE", "#44AA99", "#DDCC77", "#CC6677",
           "#999933", "#AA4499", "#000000"]
# Colour index per activation, chosen so the members of each of the four families all
# get different colours; activations sharing a colour differ in line style and marker.
# Listed in the registry's order, which is also the order of legends.
_COLOUR = {"relu": 4, "relu6": 7, "leaky_relu": 5, "leaky_relu_0.1": 8, "prelu": 0, "elu": 1,
           "celu": 6, "selu": 9, "gelu": 2, "silu": 3, "mish": 8, "hardswish": 4, "softplus": 7,
           "softshrink": 9, "tanhshrink": 5, "sigmoid": 6, "hardsigmoid": 0, "softsign": 1,
           "tanh": 7, "hardtanh": 2, "logsigmoid": 3}
_LINESTYLES = ["-", "--", "-."]
# Filled markers first; the thin ones go to the rarely studied shrink/hard variants.
_MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "h", "p", "<", ">", "d", "1", "2", "8", "3",
            "4", "H", "+", "x"]


def _build_styles() -> dict:
    seen: dict[int, int] = {}
    out = {}
    for i, (name, c) in enumerate(_COLOUR.items()):
        k = seen.get(c, 0)
        seen[c] = k + 1
        out[name] = dict(color=PALETTE[c], linestyle=_LINESTYLES[k], marker=_MARKERS[i])
    return out


STYLES = _build_styles()
LOSS_LABEL = "loss (cross-entropy, nats)"
# A value this many times above the 90th percentile of a panel is a spike: the panel goes
# to a log axis clipped above the other curves, and the spike is drawn on the top edge.
SPIKE_FACTOR = 10.0
_MAX_ANNOTATIONS = 4
# Logit ranges of the bounded activations and how their loss floors are drawn.
FLOORS = [((0.0, 1.0), ":"), ((-1.0, 1.0), "--")]


def style(activation: str) -> dict:
    """Colour, line style and marker of an activation, the same in every figure."""
    if activation in STYLES:
        return dict(STYLES[activation])
    # A user's activation (elu(alpha=0.5), an expression, a module): a style from its name,
    # dash-dotted so that it stands apart from the built-in ones, the same in every figure.
    h = int(hashlib.sha256(activation.encode()).hexdigest(), 16)
    return dict(color=PALETTE[h % len(PALETTE)], linestyle="-.", marker=_MARKERS[h // 10 % len(_MARKERS)])


# -- the original's two figures per family ---------------------------------------------------

def family_batch_losses(batches: pd.DataFrame, epochs: pd.DataFrame, activations, *, model: str,
                        seed=None, title: str | None = None, fits: pd.DataFrame | None = None
                        ) -> Figure:
    """Batch loss against batch update with the original's regression line, one panel per n_train.

    One run per activation and panel: `seed` (default: the smallest seed with batches).
    The line is `analysis.batch_fit` (epoch-0 loss at x=0); pass its table as `fits` when
    it is computed already. Needs `batches` and `epochs` of the data contract.
    """
    b = batches[(batches["model"] == model) & batches["activation"].isin(activations)]
    if seed is None and len(b):
        seed = int(b["seed"].min())
    b = b[b["seed"] == seed]
    e = epochs[epochs["run_id"].isin(b["run_id"].unique())]
    sizes = sorted(b["n_train"].unique()) or [None]
    fig, panels = _panels(len(sizes))
    if len(b):
        fits = (analysis.batch_fit(e, b) if fits is None
                else fits[fits["run_id"].isin(b["run_id"].unique())]).set_index("run_id")
    start = e[e["epoch"] == 0].set_index("run_id")["train_loss"]
    present = []
    for ax, n in zip(panels, sizes):
        series, lines = [], []
        for act in activations:
            run = b[(b["n_train"] == n) & (b["activation"] == act)].sort_values("step")
            if run.empty:
                continue
            rid = run["run_id"].iloc[0]
            x = np.r_[0, run["step"].to_numpy(float)]
            y = np.r_[start.get(rid, np.nan), run["loss"].to_numpy(float)]
            st = style(act)
            ax.plot(x, y, color=st["color"], linestyle=st["linestyle"], linewidth=0.8, alpha=0.55,
                    gid="data", label=act, rasterized=True)
            fit = fits.loc[rid]
            if np.isfinite(fit["slope"]):
                lines.append((act, x[-1], fit["slope"], fit["intercept"]))
            series.append((act, x, y))
            present.append(act)
        log = _tame_spikes(ax, series) is not None
        _draw_fits(ax, lines, log)
        ax.set_title(f"n_train = {n}" if n is not None else "no batch losses")
        _step_axis(ax)
        ax.set_ylabel(LOSS_LABEL)
    _legend(fig, present, extra=[Line2D([], [], color="0.3", linewidth=0.8, alpha=0.6,
                                        label="batch loss"),
                                 Line2D([], [], color="0.3", linewidth=2.2,
                                        label="least-squares line")])
    fig.suptitle(title or f"{model}: batch loss and least-squares line, seed {seed}")
    return fig


def family_test_curves(epochs: pd.DataFrame, activations, *, model: str,
                       title: str | None = None, ci: pd.DataFrame | None = None) -> Figure:
    """Test loss and test accuracy against epoch, mean over seeds with a 95% band, per n_train.

    Needs `epochs`: model, activation, n_train, seed, epoch, test_loss, test_accuracy;
    `ci`: `analysis.curve_intervals` of them when computed already.
    """
    e = epochs[(epochs["model"] == model) & epochs["activation"].isin(activations)]
    sizes = sorted(e["n_train"].unique()) or [None]
    # One row per n_train, loss and accuracy side by side: four sizes stay readable.
    fig, axes = _figure(len(sizes), 2, height=3.0)
    ci = _intervals(e, ci, model, ["test_loss", "test_accuracy"])
    present = []
    for j, n in enumerate(sizes):
        for i, (col, label) in enumerate((("test_loss", "test " + LOSS_LABEL),
                                          ("test_accuracy", "test accuracy (%)"))):
            ax = axes[j][i]
            series = _mean_curves(ax, ci, activations, n, col, scale=100 if i else 1)
            if i == 0:
                _tame_spikes(ax, series)
                present += [a for a, _, _ in series]
            ax.set_title(f"n_train = {n}" if n is not None else "no epochs")
            _epoch_axis(ax)
            ax.set_ylabel(label)
    _legend(fig, present, extra=[_band_handle()])
    fig.suptitle(title or f"{model}: test loss and accuracy ({_seeds_text(e)})")
    return fig


# -- curves per model and n_train ----------------------------------------------------------------

def epoch_loss_curves(epochs: pd.DataFrame, *, model: str, n_train=None, activations=None,
                      ci: pd.DataFrame | None = None) -> Figure:
    """Train and test loss against epoch, mean over seeds with a 95% band, one row per n_train.

    `n_train`: one size or a list of them (default: every size of the model).
    Needs `epochs`: model, activation, n_train, seed, epoch, train_loss, test_loss;
    `ci`: `analysis.curve_intervals` of them when computed already.
    """
    return _two_curves(epochs, model, n_train, activations,
                       (("train_loss", "train " + LOSS_LABEL), ("test_loss", "test " + LOSS_LABEL)),
                       1, "loss per epoch", ci)


def accuracy_curves(epochs: pd.DataFrame, *, model: str, n_train=None, activations=None,
                    ci: pd.DataFrame | None = None) -> Figure:
    """Train and test accuracy against epoch, mean over seeds with a 95% band, one row per n_train.

    `n_train`: one size or a list of them (default: every size of the model).
    Needs `epochs`: model, activation, n_train, seed, epoch, train_accuracy, test_accuracy;
    `ci`: `analysis.curve_intervals` of them when computed already.
    """
    return _two_curves(epochs, model, n_train, activations,
                       (("train_accuracy", "train accuracy (%)"),
                        ("test_accuracy", "test accuracy (%)")), 100, "accuracy per epoch", ci)


def _sizes(e: pd.DataFrame, n_train) -> list:
    """The n_train rows of a figure: the one or ones asked for, else every size in `e`."""
    if n_train is None:
        return sorted(e["n_train"].unique()) or [None]
    return list(n_train) if np.ndim(n_train) else [n_train]


def _two_curves(epochs, model, n_train, activations, columns, scale, what, ci) -> Figure:
    e = epochs[epochs["model"] == model]
    sizes = _sizes(e, n_train)
    e = e[e["n_train"].isin(sizes)]
    activations = _order(e, activations)
    e = e[e["activation"].isin(activations)]
    ci = _intervals(e, ci, model, [c for c, _ in columns])
    # One figure, a row per size: a figure per size cost 40% more to draw (1.02 s against 0.73 s).
    fig, axes = _figure(len(sizes), 2, height=3.0)
    for row, n in zip(axes, sizes):
        for ax, (col, label) in zip(row, columns):
            series = _mean_curves(ax, ci, activations, n, col, scale=scale)
            if scale == 1:
                _tame_spikes(ax, series)
            _epoch_axis(ax)
            ax.set_ylabel(label)
            ax.set_title(f"{label.split(' (')[0]}, n_train = {n}")
    _legend(fig, activations, extra=[_band_handle()])
    fig.suptitle(f"{model}: {what} ({_seeds_text(e)})")
    return fig


def epoch_regression(epochs: pd.DataFrame, fits: pd.DataFrame, *, model: str, n_train=None,
                     activations=None) -> Figure:
    """Epoch losses (mean over seeds) with their least-squares lines, train and test, one row
    per n_train (one size or a list of them; default: every size of the model).

    Needs `epochs` (model, activation, n_train, epoch, train_loss, test_loss) and `fits`
    from `analysis.epoch_fits`. All seeds share the epochs, so the line through the mean
    curve is the mean of the per-seed lines: slope and intercept are averaged.
    """
    e = epochs[epochs["model"] == model]
    sizes = _sizes(e, n_train)
    e = e[e["n_train"].isin(sizes)]
    f = fits[(fits["model"] == model) & fits["n_train"].isin(sizes)]
    activations = _order(e, activations)
    means = e.groupby(["n_train", "activation", "epoch"])[["train_loss", "test_loss"]].mean()
    lines = f.groupby(["n_train", "activation", "curve"])[["slope", "intercept"]].mean()
    have = set(means.index.droplevel("epoch"))
    fig, axes = _figure(len(sizes), 2, height=3.0)
    for row, n in zip(axes, sizes):
        for ax, curve in zip(row, ("train_loss", "test_loss")):
            series = []
            for act in activations:
                if (n, act) not in have:
                    continue
                pts = means.loc[(n, act), curve]
                st = style(act)
                ax.plot(pts.index, pts.to_numpy(), linestyle="none", marker=st["marker"],
                        color=st["color"], markersize=4, gid="data")
                line = lines.loc[(n, act, curve)] if (n, act, curve) in lines.index else None
                if line is not None and np.isfinite(line["slope"]):
                    xx = np.array([pts.index.min(), pts.index.max()], dtype=float)
                    ax.plot(xx, line["intercept"] + line["slope"] * xx, color=st["color"],
                            linestyle=st["linestyle"], linewidth=1.5, gid="fit")
                series.append((act, pts.index.to_numpy(float), pts.to_numpy(float)))
            _tame_spikes(ax, series)
            _epoch_axis(ax)
            ax.set_ylabel(curve.replace("_loss", "") + " " + LOSS_LABEL)
            ax.set_title(f"{curve.replace('_', ' ')}, n_train = {n}")
    _legend(fig, activations)
    fig.suptitle(f"{model}: epoch losses and their least-squares lines, slopes in nats/epoch "
                 f"({_seeds_text(e, band=False)})")
    return fig


def batch_dynamics(batches: pd.DataFrame, spikes: pd.DataFrame, *, model: str, n_train: int,
                   seed: int, activations=None) -> Figure:
    """Batch loss of one seed, whole run and first epoch close up, with spikes marked.

    Needs `batches` (model, activation, seed, n_train, epoch, step, loss) and `spikes`
    from `analysis.detect_spikes` (run_id, step, loss).
    """
    b = batches[(batches["model"] == model) & (batches["n_train"] == n_train)
                & (batches["seed"] == seed)]
    activations = _order(b, activations)
    marks = spikes[spikes["run_id"].isin(b["run_id"].unique())] if len(spikes) else spikes
    fig, axes = _figure(1, 2)
    for ax, first in zip(axes[0], (False, True)):
        series = []
        for act in activations:
            run = b[b["activation"] == act].sort_values("step")
            if first:
                run = run[run["epoch"] == run["epoch"].min()]
            if run.empty:
                continue
            st = style(act)
            x, y = run["step"].to_numpy(float), run["loss"].to_numpy(float)
            ax.plot(x, y, color=st["color"], linestyle=st["linestyle"], linewidth=0.9, gid="data",
                    rasterized=True)
            series.append((act, x, y))
        top = _tame_spikes(ax, series)
        shown = marks[marks["step"].isin(np.concatenate([s[1] for s in series]))] if series else marks
        if len(shown):
            y = shown["loss"].to_numpy(float)
            y = np.where(np.isfinite(y) & (y <= top), y, top) if top is not None else y
            ax.plot(shown["step"], y, linestyle="none", marker="x", color="black", markersize=7,
                    markeredgewidth=1.5, clip_on=False, zorder=5, gid="spike")
        _step_axis(ax)
        ax.set_ylabel(LOSS_LABEL)
        ax.set_title("first epoch, close up" if first else "whole run")
    extra = [Line2D([], [], linestyle="none", marker="x", color="black", markersize=7,
                    label="spike (> median + k MAD)")]
    _legend(fig, activations, extra=extra)
    fig.suptitle(f"{model}, n_train = {n_train}, seed {seed}: batch loss, {len(marks)} spike(s)")
    return fig


# -- summaries over configurations ---------------------------------------------------------------

def final_loss_heatmap(per_run: pd.DataFrame, *, model: str, metric: str = "final_test_loss"
                       ) -> Figure:
    """Mean over seeds of a final metric, activation x n_train, best activation on top.

    Needs `per_run` from `analysis.run_metrics`: model, activation, n_train, `metric`.
    """
    pr = per_run[per_run["model"] == model]
    table = pr.pivot_table(index="activation", columns="n_train", values=metric, aggfunc="mean")
    table = table.loc[table.mean(axis=1).sort_values().index]
    fig = Figure(figsize=(1.3 * max(len(table.columns), 1) + 3.5, 0.32 * max(len(table), 1) + 1.6),
                 layout="constrained")
    ax = fig.add_subplot()
    vals = table.to_numpy(float)
    finite = vals[np.isfinite(vals) & (vals > 0)]
    wide = bool(len(finite)) and finite.max() / finite.min() > 20
    if wide:
        norm = LogNorm(finite.min(), finite.max())
    else:
        norm = Normalize(finite.min(), finite.max()) if len(finite) else Normalize(0, 1)
    im = ax.imshow(np.ma.masked_invalid(vals), aspect="auto", cmap="viridis", norm=norm)
    for (i, j), v in np.ndenumerate(vals):
        if np.isfinite(v):
            light = norm(v) < 0.6  # dark cells of viridis take white text
            ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=8,
                    color="white" if light else "black")
        else:
            ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="0.4")
    ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns])
    ax.set_yticks(range(len(table)), table.index)
    ax.set_xlabel("training images (n_train)")
    ax.set_ylabel("activation")
    label = metric.replace("_", " ") + (" (%)" if "accuracy" in metric else " (nats)")
    fig.colorbar(im, ax=ax, label=label + (", log scale" if wide else ""))
    fig.suptitle(f"{model}: {metric.replace('_', ' ')}, mean over seeds")
    return fig


def start_vs_final(per_run: pd.DataFrame, *, model: str, final: str = "final_test_loss",
                   logit_floors: bool = False) -> Figure:
    """Starting (epoch-0) loss against final loss per activation, mean ± sd over seeds.

    Needs `per_run` from `analysis.run_metrics`: model, activation, n_train, start_loss,
    `final`. `logit_floors` draws the least losses bounded logits allow (activated logits).
    """
    pr = per_run[per_run["model"] == model]
    sizes = sorted(pr["n_train"].unique()) or [None]
    activations = _order(pr, None)
    fig, panels = _panels(len(sizes), width=3.8)
    for ax, n in zip(panels, sizes):
        g = pr[pr["n_train"] == n].groupby("activation")[["start_loss", final]].agg(["mean", "std"])
        for act in activations:
            if act not in g.index:
                continue
            r, st = g.loc[act], style(act)
            ax.errorbar(r[("start_loss", "mean")], r[(final, "mean")],
                        xerr=_nan0(r[("start_loss", "std")]), yerr=_nan0(r[(final, "std")]),
                        marker=st["marker"], color=st["color"], linestyle="none", markersize=6,
                        elinewidth=0.8, gid="data")
        ax.set_ylim(bottom=0)
        if logit_floors:
            for (lo, hi), ls in FLOORS:
                ax.axhline(analysis.logit_loss_floor(lo, hi), color="0.5", linewidth=0.7,
                           linestyle=ls)
        ax.set_title(f"n_train = {n}")
        ax.set_xlabel("starting train " + LOSS_LABEL)
        ax.set_ylabel(final.replace("_", " ") + " (nats)")
    extra = [Line2D([], [], color="0.5", linewidth=0.7, linestyle=ls,
                    label=f"{analysis.logit_loss_floor(lo, hi):.2f}: least loss, logits in ({lo:g}, {hi:g})")
             for (lo, hi), ls in FLOORS] if logit_floors else []
    _legend(fig, activations, extra=extra)
    fig.suptitle(f"{model}: starting versus final loss (mean ± sd over seeds)")
    return fig


# -- helpers ---------------------------------------------------------------------------------------

def _panels(n: int, width: float = 4.2, height: float = 3.4):
    """n panels, at most two a row (wider rows shrink the text on a page)."""
    ncols = min(2, max(n, 1))
    fig, axes = _figure(math.ceil(max(n, 1) / ncols), ncols, width, height)
    flat = list(axes.flat)
    for ax in flat[max(n, 1):]:
        ax.remove()
    return fig, flat[:max(n, 1)]


def _figure(nrows: int, ncols: int, width: float = 4.2, height: float = 3.4):
    fig = Figure(figsize=(width * ncols + 2.6, height * nrows + 0.7), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.grid(True, color="0.8", linewidth=0.5)
    return fig, axes


def _legend(fig: Figure, activations, extra=()):
    handles = []
    for act in dict.fromkeys(activations):
        st = style(act)
        handles.append(Line2D([], [], color=st["color"], linestyle=st["linestyle"],
                              marker=st["marker"], markersize=5, label=act))
    handles += list(extra)
    if handles:
        # Outside the axes, right of them: a legend never covers data.
        fig.legend(handles=handles, loc="outside right", fontsize=8, frameon=False)


def _band_handle():
    from matplotlib.patches import Patch
    return Patch(facecolor="0.5", alpha=0.2, label="95% interval over seeds")


def _intervals(e: pd.DataFrame, ci, model: str, columns) -> pd.DataFrame | None:
    """The curve intervals of one model's `e`: cut from `ci` when given, else computed."""
    if e.empty:
        return None
    if ci is None:
        return analysis.curve_intervals(e, columns)
    return ci[(ci["model"] == model) & ci["column"].isin(columns)]


def _mean_curves(ax, ci, activations, n_train, column, scale=1):
    """Mean line and 95% band per activation; returns (activation, x, y) drawn."""
    series = []
    if ci is None:
        return series
    sub = ci[(ci["column"] == column) & (ci["n_train"] == n_train)] if n_train is not None else ci[:0]
    by_activation = dict(list(sub.groupby("activation", sort=False)))  # one pass, not one per activation
    bands, colours = [], []
    for act in activations:
        c = by_activation.get(act)
        if c is None:
            continue
        c = c.sort_values("epoch")
        st = style(act)
        x = c["epoch"].to_numpy(float)
        y = c["mean"].to_numpy(float) * scale
        ax.plot(x, y, color=st["color"], linestyle=st["linestyle"], marker=st["marker"],
                markersize=3.5, linewidth=1.2, gid="data")
        low, high = c["low"].to_numpy(float) * scale, c["high"].to_numpy(float) * scale
        for polygon in _band_polygons(x, low, high):
            bands.append(polygon)
            colours.append(st["color"])
        series.append((act, x, y))
    _add_bands(ax, bands, colours)
    return series


def _band_polygons(x, low, high) -> list:
    """The polygons of a band between `low` and `high`, one per stretch where both are finite
    (as fill_between draws them)."""
    ok = np.isfinite(x) & np.isfinite(low) & np.isfinite(high)
    edges = np.flatnonzero(np.diff(np.r_[0, ok.astype(int), 0]))
    return [np.column_stack([np.r_[x[a:b], x[a:b][::-1]], np.r_[high[a:b], low[a:b][::-1]]])
            for a, b in zip(edges[::2], edges[1::2])]


def _add_bands(ax, polygons, colours, alpha=0.15):
    """Every band of an axes as one collection, drawn (under the lines) as fill_between's one
    per band were: those took an eighth of the time spent building the report's figures."""
    if polygons:
        ax.add_collection(PolyCollection(polygons, facecolors=colours, alpha=alpha, linewidths=0,
                                         gid="band"))


def _tame_spikes(ax, series):
    """Keep a spike from flattening the other curves: log axis clipped above them, spike on the edge.

    Returns the top of the clipped axis, or None when nothing needed clipping.
    """
    values = np.concatenate([s[2] for s in series]) if series else np.empty(0)
    finite = values[np.isfinite(values) & (values > 0)]
    if len(finite) == 0:
        return None
    ref = np.percentile(finite, 90)
    big = ~np.isfinite(values) | (values > SPIKE_FACTOR * ref)
    big &= ~np.isnan(values)
    if not big.any():
        return None
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label))
    calm = finite[finite <= SPIKE_FACTOR * ref]
    top = calm.max() * 2
    ax.set_ylim(calm.min() / 1.5, top)
    outliers = [(y, act, x) for act, xs, ys in series for x, y in zip(xs, ys)
                if not np.isnan(y) and (not np.isfinite(y) or y > top)]
    outliers.sort(key=lambda t: -t[0])
    for k, (y, act, x) in enumerate(outliers):
        st = style(act)
        ax.plot([x], [top], marker="^", color=st["color"], markersize=8, clip_on=False, zorder=6,
                gid="spike")
        if k < _MAX_ANNOTATIONS:
            text = "inf" if not np.isfinite(y) else f"{y:.2g}"
            ax.annotate(f"{act}: {text}", (x, top), xytext=(4, -12 - 11 * k),
                        textcoords="offset points", fontsize=7, color=st["color"],
                        arrowprops=dict(arrowstyle="-", color=st["color"], linewidth=0.5))
    ax.text(0.01, 0.01, f"log axis clipped at {top:.2g}: {len(outliers)} point(s) above, "
            "marked ▲ on the top edge", transform=ax.transAxes, fontsize=7, color="0.3",
            va="bottom")
    return top


def _minor_log_label(v, _pos) -> str:
    """Label 2x and 5x ticks of a log axis in plain numbers; a bare decade is hard to read."""
    if v <= 0:
        return ""
    mantissa = v / 10 ** math.floor(math.log10(v))
    return f"{v:g}" if round(mantissa, 6) in (2.0, 5.0) else ""


def _draw_fits(ax, lines, log: bool):
    """Fit lines over the data; on a log axis sampled densely, and named when out of view."""
    low, high = ax.get_ylim()
    gone = []
    for act, x_end, slope, intercept in lines:
        st = style(act)
        # Two points make a straight segment, which a log axis would misdraw: sample instead.
        xx = np.linspace(0, x_end, 200) if log else np.array([0.0, x_end])
        yy = intercept + slope * xx
        if log:
            yy = np.where(yy > 0, yy, np.nan)
        seen = yy[np.isfinite(yy)]
        if len(seen) == 0 or np.all(seen > high) or np.all(seen < low):
            gone.append(act)
            continue
        ax.plot(xx, yy, color=st["color"], linestyle=st["linestyle"], linewidth=2.2, gid="fit")
    if gone:
        ax.text(0.01, 0.06, "fit line out of view (pulled by spikes): " + ", ".join(gone),
                transform=ax.transAxes, va="bottom", fontsize=7, color="0.3")
    ax.set_ylim(low, high)


def _step_axis(ax):
    ax.set_xlabel("batch update (step)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _epoch_axis(ax):
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _order(df: pd.DataFrame, activations) -> list:
    """Activations to draw: the given ones, else those present in registry order."""
    if activations is not None:
        return list(activations)
    present = set(df["activation"]) if len(df) else set()
    return [a for a in STYLES if a in present] + sorted(present - set(STYLES))


def _seeds_text(df: pd.DataFrame, band: bool = True) -> str:
    n = df["seed"].nunique() if len(df) else 0
    return (f"mean of {n} seeds" + (", band: 95% interval" if band else "") if n > 1 else
            "one seed, no interval" if n == 1 else "no data")


def _nan0(x) -> float:
    return 0.0 if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


# --- diagnostics figures ---
# Per-layer training dynamics from the `diagnostics` table (see diagnostics.py); every
# figure aggregates over seeds unless it names one run.

SATURATED_SHADE = "0.88"  # background where an activation's derivative is below 1% of its maximum


def activation_gallery(activations=None, lo: float = -5.0, hi: float = 5.0) -> Figure:
    """Each activation (its colour) and its derivative (black, dashed) over [lo, hi], grey
    where the derivative is below 1% of its maximum: where the activation saturates."""
    table = diagnostics.activation_table(activations, lo, hi)
    names = list(dict.fromkeys(table["activation"]))
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(3.0 * ncols + 0.4, 2.3 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    for ax, name in zip(axes.flat, names):
        t = table[table["activation"] == name]
        x, sat = t["x"].to_numpy(), t["saturated"].to_numpy()
        _shade_runs(ax, x, sat)
        ax.axhline(0, color="0.6", linewidth=0.5)
        ax.plot(x, t["value"], color=style(name)["color"], linewidth=1.8, gid="data")
        ax.plot(x, t["derivative"], color="black", linestyle="--", linewidth=1.0)
        ax.set_title(f"{name}  (max f′ {t['derivative'].abs().max():.2g})", fontsize=9)
        ax.set_xlim(lo, hi)
        ax.grid(True, color="0.8", linewidth=0.5)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.remove()
    for ax in axes[-1]:
        ax.set_xlabel("pre-activation x", fontsize=8)
    from matplotlib.patches import Patch
    fig.legend(handles=[Line2D([], [], color="0.3", linewidth=1.8, label="f(x) (activation's colour)"),
                        Line2D([], [], color="black", linestyle="--", label="f′(x)"),
                        Patch(facecolor=SATURATED_SHADE, label="saturated: f′ < 1% of its maximum")],
               loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle("Activation functions and their derivatives")
    return fig


def _shade_runs(ax, x, mask):
    """Grey spans over the x ranges where mask holds."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    step = (x[1] - x[0]) / 2 if len(x) > 1 else 0
    for a, b in zip(edges[::2], edges[1::2]):
        ax.axvspan(x[a] - step, x[b - 1] + step, color=SATURATED_SHADE, linewidth=0, zorder=0)


def _default_n(table: pd.DataFrame, n_train):
    if n_train is not None or table.empty:
        return n_train
    return int(table["n_train"].max())


def layer_activation_stats(diag: pd.DataFrame, runs: pd.DataFrame, *, model: str,
                           n_train: int | None = None, activations=None) -> Figure:
    """Glorot & Bengio's figure: per hidden layer, activation mean (line) +/- standard deviation
    (bars) on the probe batch after each epoch, one panel per activation, averaged over seeds.

    Needs the `diagnostics` table and `runs` (run_id, model, activation, seed, n_train).
    Layers go from light (first) to dark (top) in the activation's colour.
    """
    r = runs[runs["model"] == model]
    n_train = _default_n(r, n_train)
    r = r[r["n_train"] == n_train]
    mean = diagnostics.layer_curves(diag, r, "act_mean")
    std = diagnostics.layer_curves(diag, r, "act_std")
    acts_ = _order(mean, activations)
    fig, axes = _panels(len(acts_), width=4.0, height=3.0)
    for ax, act in zip(axes, acts_):
        m = mean[mean["activation"] == act]
        s = std[std["activation"] == act]
        layers = diagnostics.hidden_layers(m["layer"])
        if diagnostics.OUTPUT in set(m["layer"]):
            layers.append(diagnostics.OUTPUT)  # the activation on the logits
        shades = _shades(style(act)["color"], len(layers))
        for k, (layer, colour) in enumerate(zip(layers, shades)):
            a = m[m["layer"] == layer].sort_values("epoch")
            b = s[s["layer"] == layer].set_index("epoch")["mean"].reindex(a["epoch"])
            offset = (k - (len(layers) - 1) / 2) * 0.06  # keep the bars of layers apart
            ax.errorbar(a["epoch"] + offset, a["mean"], yerr=b.to_numpy(), color=colour,
                        marker=_MARKERS[k % len(_MARKERS)], markersize=3.5, linewidth=1.2,
                        elinewidth=0.7, capsize=1.5, label=layer, gid="data")
        n = int(m["n"].max()) if len(m) else 0
        ax.set_title(f"{act} ({n} seed{'s' if n != 1 else ''})", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("activation value on the probe batch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(layers) <= 10:
            ax.legend(fontsize=7, ncols=2 if len(layers) > 4 else 1, frameon=False)
    fig.suptitle(f"{model}, {n_train} images: per-layer activation mean ± standard deviation "
                 f"(Glorot & Bengio 2010, figure 2)")
    return fig


def _shades(colour: str, n: int) -> list:
    """n shades of one colour, from light to the full colour."""
    from matplotlib.colors import to_rgb
    base = np.array(to_rgb(colour))
    return [tuple(1 - (1 - base) * w) for w in np.linspace(0.35, 1.0, max(n, 1))][:n]


def preact_histograms(diag: pd.DataFrame, runs: pd.DataFrame, run_id: str,
                      epochs=None) -> Figure:
    """One run's pre-activation histograms per layer at a few epochs (light = early, dark =
    late), over the activation's saturated range (grey).

    Needs the `diagnostics` table and `runs` (run_id, model, activation, seed, n_train).
    `epochs` defaults to 0, 1, the middle one and the last.
    """
    meta = runs.set_index("run_id").loc[run_id]
    hist = diagnostics.preact_histogram(diag, run_id)
    layers = list(dict.fromkeys(hist["layer"]))
    all_epochs = sorted(hist["epoch"].unique())
    if epochs is None and all_epochs:
        epochs = sorted({all_epochs[0], all_epochs[min(1, len(all_epochs) - 1)],
                         all_epochs[len(all_epochs) // 2], all_epochs[-1]})
    epochs = list(epochs or [])
    act = meta["activation"]
    gal = diagnostics.activation_table([act], diagnostics.HIST_EDGES[0], diagnostics.HIST_EDGES[-1], 641)
    fig, axes = _panels(len(layers), width=3.8, height=2.8)
    import matplotlib
    cmap = matplotlib.colormaps["viridis_r"]
    for ax, layer in zip(axes, layers):
        _shade_runs(ax, gal["x"].to_numpy(), gal["saturated"].to_numpy())
        for k, ep in enumerate(epochs):
            h = hist[(hist["layer"] == layer) & (hist["epoch"] == ep)]
            inner = h[np.isfinite(h["left"]) & np.isfinite(h["right"])]
            colour = cmap(0.15 + 0.8 * k / max(len(epochs) - 1, 1))
            ax.stairs(inner["fraction"].to_numpy(), np.append(inner["left"].to_numpy(),
                      inner["right"].to_numpy()[-1:]), color=colour, linewidth=1.3,
                      label=f"epoch {ep}", gid="data")
            tails = h[~np.isfinite(h["left"]) | ~np.isfinite(h["right"])]["fraction"].sum()
            if tails > 0.005:
                ax.text(0.98, 0.95 - 0.08 * k, f"{tails:.0%} beyond ±{diagnostics.HIST_EDGES[-1]:g}",
                        transform=ax.transAxes, ha="right", va="top", fontsize=7, color=colour)
        ax.set_title(layer, fontsize=10)
        ax.set_xlabel("pre-activation")
        ax.set_ylabel("fraction of entries per 0.5 bin")
    axes[0].legend(fontsize=7, frameon=False, loc="upper left")
    fig.suptitle(f"{meta['model']}, {act}, seed {meta['seed']}, {meta['n_train']} images: "
                 f"pre-activation histograms on the probe batch (grey: {act} saturated)")
    return fig


def gradient_norms(diag: pd.DataFrame, runs: pd.DataFrame, *, model: str,
                   n_train: int | None = None, activations=None) -> Figure:
    """Each weight layer's gradient norm against step (log axis), median over seeds, and the
    first/last layer ratio: gradients that vanish towards the input show in the last panel.

    Needs the `diagnostics` table and `runs` (run_id, model, activation, seed, n_train).
    """
    r = runs[runs["model"] == model]
    n_train = _default_n(r, n_train)
    r = r[r["n_train"] == n_train]
    g = pd.concat([diagnostics.gradient_curves(diag, r, "grad_norm"),
                   diagnostics.gradient_curves(diag, r, "grad_ratio")])
    layers = sorted(g["layer"].unique(), key=diagnostics.layer_order) if len(g) else []
    acts_ = _order(g, activations)
    fig, axes = _panels(len(layers), width=4.0, height=2.8)
    for ax, layer in zip(axes, layers):
        for act in acts_:
            c = g[(g["layer"] == layer) & (g["activation"] == act)]
            c = c[c["median"] > 0]
            if c.empty:
                continue
            st = style(act)
            ax.plot(c["step"], c["median"], color=st["color"], linestyle=st["linestyle"],
                    linewidth=1.0, marker=st["marker"], markersize=3, markevery=max(len(c) // 6, 1),
                    gid="data")
        ax.set_yscale("log")
        ratio = layer == diagnostics.RATIO
        ax.set_title("first / last layer gradient-norm ratio" if ratio else f"{layer}: weight gradient",
                     fontsize=10)
        ax.set_xlabel("batch update")
        ax.set_ylabel("ratio" if ratio else "gradient norm (L2)")
    _legend(fig, acts_)
    n = int(g["n"].max()) if len(g) else 0
    fig.suptitle(f"{model}, {n_train} images: gradient norms per layer, median over {n} seed(s)")
    return fig


def saturation_dead_units(diag: pd.DataFrame, runs: pd.DataFrame, *, model: str,
                   n_train: int | None = None, activations=None) -> Figure:
    """Saturated entries and dead units per activation, mean over hidden layers and seeds:
    bars after the last epoch, ○ before training, ▲ the worst layer at any epoch.

    Needs the `diagnostics` table and `runs` (run_id, model, activation, seed, n_train).
    """
    r = runs[runs["model"] == model]
    n_train = _default_n(r, n_train)
    f = diagnostics.unit_fractions(diag, r[r["n_train"] == n_train])
    acts_ = [a for a in _order(f, activations) if a in set(f["activation"])]
    fig, axes = _figure(1, 2, width=max(4.0, 0.45 * len(acts_) + 1.5), height=3.2)
    for ax, what, label in ((axes[0, 0], "saturated", "saturated entries (f′ < 1% of max)"),
                            (axes[0, 1], "dead", "dead units (zero on every probe image)")):
        for i, act in enumerate(acts_):
            row = f[f["activation"] == act].iloc[0]
            colour = style(act)["color"]
            ax.bar(i, row[f"{what}_end"] * 100, color=colour, alpha=0.85, gid="data")
            ax.plot(i, row[f"{what}_start"] * 100, marker="o", markerfacecolor="white",
                    markeredgecolor="black", markersize=5, linestyle="none")
            ax.plot(i, row[f"{what}_max"] * 100, marker="^", color="black", markersize=4,
                    linestyle="none")
        ax.set_xticks(range(len(acts_)), acts_, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(f"{label}, %")
        ax.set_ylim(0, max(5.0, ax.get_ylim()[1]))
    extra = [Line2D([], [], marker="o", markerfacecolor="white", markeredgecolor="black",
                    linestyle="none", label="before training"),
             Line2D([], [], marker="^", color="black", linestyle="none", label="worst layer, any epoch")]
    fig.legend(handles=extra, loc="outside right", fontsize=8, frameon=False)
    fig.suptitle(f"{model}, {n_train} images: saturation and dead units after the last epoch "
                 f"(mean over hidden layers and seeds)")
    return fig


def logit_floor_curves(epochs: pd.DataFrame, runs: pd.DataFrame, *,
                       n_train: int | None = None) -> Figure:
    """Train loss per epoch of the bounded activations with the activation on the logits (left)
    and with linear logits (right), mean over seeds, with the cross-entropy floors that
    logits in (0, 1) and (-1, 1) impose: the squashed logits flatten the curve by themselves.

    Needs `epochs` (run_id, epoch, train_loss) and `runs` (run_id, model, model_kind,
    activation, seed, n_train, activate_logits).
    """
    bounded = [a for a in STYLES if a in analysis.BOUNDED_RANGE]
    r = runs[runs["model_kind"] == "mlp"]
    n_train = _default_n(r, n_train)
    r = r[r["n_train"] == n_train]
    on = flag(r, "activate_logits")
    fig, axes = _figure(1, 2, width=4.4, height=3.4)
    shown = []
    panels = ((axes[0, 0], on, "activation on the logits"),
              (axes[0, 1], ~on, "linear logits (the floors do not apply)"))
    for ax, sel, title in panels:
        e = epochs.merge(r[sel][["run_id", "activation"]], on="run_id", suffixes=("_e", ""))
        e = e.groupby(["activation", "epoch"])["train_loss"].mean().reset_index()
        for act in bounded:
            c = e[e["activation"] == act]
            if c.empty:
                continue
            st = style(act)
            ax.plot(c["epoch"], c["train_loss"], color=st["color"], linestyle=st["linestyle"],
                    marker=st["marker"], markersize=3.5, linewidth=1.2, gid="data")
            shown.append(act)
        for (lo, hi), ls in FLOORS:
            ax.axhline(analysis.logit_loss_floor(lo, hi), color="0.35", linestyle=ls, linewidth=1.0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"train {LOSS_LABEL}")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    extra = [Line2D([], [], color="0.35", linestyle=ls,
                    label=f"floor {analysis.logit_loss_floor(lo, hi):.2f}: logits in ({lo:g}, {hi:g})")
             for (lo, hi), ls in FLOORS]
    _legend(fig, shown, extra=extra)
    fig.suptitle(f"MLP, {n_train} images: bounded activations' train loss and the least loss their "
                 f"logits allow (mean over seeds)")
    return fig


# -- fairness and sample size ------------------------------------------------------------

def lr_sensitivity(candidates: pd.DataFrame, *, condition: str, axis: str = "lr",
                   select: str = "val_loss", activations=None) -> Figure:
    """Final validation score against the tuned axis (log), one panel per n_train, one line
    per activation, its choice ringed. Needs `tuning.candidates` output."""
    c = candidates[candidates["condition"] == condition]
    sizes = sorted(c["n_train"].unique())
    fig, axes = _panels(len(sizes))
    acts = _order(c, activations)
    for ax, n in zip(axes, sizes):
        g = c[c["n_train"] == n]
        for act in acts:
            h = g[g["activation"] == act].sort_values(axis)
            if h.empty:
                continue
            st = style(act)
            ax.plot(h[axis].astype(float), h[select], color=st["color"], linestyle=st["linestyle"],
                    marker=st["marker"], markersize=4, linewidth=1.2)
            pick = h[h["chosen"]]
            ax.plot(pick[axis].astype(float), pick[select], "o", markersize=10, markerfacecolor="none",
                    markeredgecolor=st["color"], markeredgewidth=1.5)
        ax.set_xscale("log")
        values = sorted(g[axis].astype(float).unique())
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()
        ax.set_title(f"{condition}, n_train {n}")
        ax.set_xlabel(axis)
        ax.set_ylabel(select.replace("_", " ") + (" (nats)" if "loss" in select else ""))
    _legend(fig, acts, extra=[Line2D([], [], marker="o", markersize=10, markerfacecolor="none",
                                     markeredgecolor="0.3", linestyle="none",
                                     label="chosen on validation")])
    return fig


def learning_curve_fits(per_run: pd.DataFrame, fits: pd.DataFrame, *, model: str,
                        metric: str = "final_test_loss", activations=None) -> Figure:
    """Final test loss against n_train on log-log axes: per-seed points, the across-seed
    mean with its interval, and each activation's power-law fit."""
    p = per_run[per_run["model"] == model]
    f = fits[fits["model"] == model].set_index("activation")
    fig, axes = _panels(1, width=6.5, height=4.6)
    ax = axes[0]
    acts = [a for a in _order(p, activations) if a in f.index]
    for act in acts:
        st = style(act)
        g = p[p["activation"] == act]
        ax.scatter(g["n_train"], g[metric], s=8, color=st["color"], alpha=0.35, linewidths=0)
        stats_ = analysis.aggregate(g.assign(model=model), [metric], by=["n_train"])
        ax.fill_between(stats_["n_train"], stats_["low"], stats_["high"], color=st["color"],
                        alpha=0.12, linewidth=0)
        ax.plot(stats_["n_train"], stats_["mean"], color=st["color"], marker=st["marker"],
                linestyle="none", markersize=4)
        row = f.loc[act]
        if np.isfinite(row["b"]):
            grid = np.geomspace(row["n_min"], row["n_max"], 60)
            ax.plot(grid, row["a"] * grid ** -row["b"] + row["c"], color=st["color"],
                    linestyle=st["linestyle"], linewidth=1.2,
                    label=f"{act}: b={row['b']:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training images (n_train)")
    ax.set_ylabel("final test " + LOSS_LABEL)
    ax.set_title(f"{model}: learning curves, fit a*n^-b(+c)")
    ax.legend(fontsize=7, ncol=2)
    return fig
