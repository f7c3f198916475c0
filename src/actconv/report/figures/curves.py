"""Loss and accuracy curves: the original's two figures per family, the curves per model and
training-set size, the regression lines, batch-loss dynamics and the summaries over configurations."""
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ...analysis import stats as analysis
from ...study.activations import logit_loss_floor
from .common import (_band_handle, _draw_fits, _epoch_axis, _figure, FLOORS, _intervals, _legend, LOSS_LABEL,
                     _mean_curves, _nan0, _order, _panels, _seeds_text, _step_axis, style, _tame_spikes)


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
    return _curve_grid(epochs, model, None, activations,
                       (("test_loss", "test " + LOSS_LABEL, 1), ("test_accuracy", "test accuracy (%)", 100)),
                       "test loss and accuracy", ci, title)


# -- curves per model and n_train ----------------------------------------------------------------

def epoch_loss_curves(epochs: pd.DataFrame, *, model: str, n_train=None, activations=None,
                      ci: pd.DataFrame | None = None) -> Figure:
    """Train and test loss against epoch, mean over seeds with a 95% band, one row per n_train.

    `n_train`: one size or a list of them (default: every size of the model).
    Needs `epochs`: model, activation, n_train, seed, epoch, train_loss, test_loss;
    `ci`: `analysis.curve_intervals` of them when computed already.
    """
    return _curve_grid(epochs, model, n_train, activations,
                       (("train_loss", "train " + LOSS_LABEL, 1), ("test_loss", "test " + LOSS_LABEL, 1)),
                       "loss per epoch", ci)


def accuracy_curves(epochs: pd.DataFrame, *, model: str, n_train=None, activations=None,
                    ci: pd.DataFrame | None = None) -> Figure:
    """Train and test accuracy against epoch, mean over seeds with a 95% band, one row per n_train.

    `n_train`: one size or a list of them (default: every size of the model).
    Needs `epochs`: model, activation, n_train, seed, epoch, train_accuracy, test_accuracy;
    `ci`: `analysis.curve_intervals` of them when computed already.
    """
    return _curve_grid(epochs, model, n_train, activations,
                       (("train_accuracy", "train accuracy (%)", 100), ("test_accuracy", "test accuracy (%)", 100)),
                       "accuracy per epoch", ci)


def _sizes(e: pd.DataFrame, n_train) -> list:
    """The n_train rows of a figure: the one or ones asked for, else every size in `e`."""
    if n_train is None:
        return sorted(e["n_train"].unique()) or [None]
    return list(n_train) if np.ndim(n_train) else [n_train]


def _curve_grid(epochs, model, n_train, activations, columns, what, ci, title=None) -> Figure:
    """Mean curves with 95% bands, a row per n_train and a panel per (column, label, scale)."""
    e = epochs[epochs["model"] == model]
    sizes = _sizes(e, n_train)
    e = e[e["n_train"].isin(sizes)]
    activations = _order(e, activations)
    e = e[e["activation"].isin(activations)]
    ci = _intervals(e, ci, model, [c for c, _, _ in columns])
    # One figure, a row per size: a figure per size cost 40% more to draw (1.02 s against 0.73 s).
    fig, axes = _figure(len(sizes), len(columns), height=3.0)
    for row, n in zip(axes, sizes):
        for ax, (col, label, scale) in zip(row, columns):
            series = _mean_curves(ax, ci, activations, n, col, scale=scale)
            if scale == 1:  # losses: a spike would flatten the rest; accuracies are bounded
                _tame_spikes(ax, series)
            _epoch_axis(ax)
            ax.set_ylabel(label)
            ax.set_title(f"{label.split(' (')[0]}, n_train = {n}")
    _legend(fig, activations, extra=[_band_handle()])
    fig.suptitle(title or f"{model}: {what} ({_seeds_text(e)})")
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
                ax.axhline(logit_loss_floor(lo, hi), color="0.5", linewidth=0.7,
                           linestyle=ls)
        ax.set_title(f"n_train = {n}")
        ax.set_xlabel("starting train " + LOSS_LABEL)
        ax.set_ylabel(final.replace("_", " ") + " (nats)")
    extra = [Line2D([], [], color="0.5", linewidth=0.7, linestyle=ls,
                    label=f"{logit_loss_floor(lo, hi):.2f}: least loss, logits in ({lo:g}, {hi:g})")
             for (lo, hi), ls in FLOORS] if logit_floors else []
    _legend(fig, activations, extra=extra)
    fig.suptitle(f"{model}: starting versus final loss (mean ± sd over seeds)")
    return fig

