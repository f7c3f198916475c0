"""Inside the networks: the activation gallery and the per-layer figures from the `diagnostics`
table, and the logit floor of bounded activations."""
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ...analysis import diagnostics
from ...analysis.tables import flag
from ...study import metrics
from ...study.activations import BOUNDED_RANGE, logit_loss_floor
from .common import _figure, FLOORS, _legend, LOSS_LABEL, _MARKERS, _order, _panels, style, STYLES

# --- diagnostics figures ---
# Per-layer training dynamics from the `diagnostics` table (see analysis/diagnostics.py); every
# figure aggregates over seeds unless it names one run.

SATURATED_SHADE = "0.88"  # background where an activation's derivative is below 1% of its maximum


def activation_gallery(activations=None, lo: float = -5.0, hi: float = 5.0, *, table=None) -> Figure:
    """Each activation (its colour) and its derivative (black, dashed) over [lo, hi], grey
    where the derivative is below 1% of its maximum: where the activation saturates
    (`table`: their `diagnostics.activation_table`, computed here when None)."""
    if table is None:
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


def layer_activation_stats(diag: pd.DataFrame | None, runs: pd.DataFrame, *, model: str,
                           n_train: int | None = None, activations=None, summary=None) -> Figure:
    """Glorot & Bengio's figure: per hidden layer, activation mean (line) +/- standard deviation
    (bars) on the probe batch after each epoch, one panel per activation, averaged over seeds.

    Needs the `diagnostics` table and `runs` (run_id, model, activation, seed, n_train).
    Layers go from light (first) to dark (top) in the activation's colour.
    """
    r = runs[runs["model"] == model]
    n_train = _default_n(r, n_train)
    r = r[r["n_train"] == n_train]
    summary = summary or diagnostics.layer_summary(diag, r)  # given: the aggregates of these runs
    mean, std = summary["act_mean"], summary["act_std"]
    acts_ = _order(mean, activations)
    fig, axes = _panels(len(acts_), width=4.0, height=3.0)
    for ax, act in zip(axes, acts_):
        m = mean[mean["activation"] == act]
        s = std[std["activation"] == act]
        layers = diagnostics.hidden_layers(m["layer"])
        if metrics.OUTPUT in set(m["layer"]):
            layers.append(metrics.OUTPUT)  # the activation on the logits
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


def histogram_shade(activations) -> pd.DataFrame:
    """The activations' table over the histograms' range: where `preact_histograms` shades."""
    return diagnostics.activation_table(list(activations), metrics.HIST_EDGES[0], metrics.HIST_EDGES[-1], 641)


def preact_histograms(diag: pd.DataFrame, runs: pd.DataFrame, run_id: str,
                      epochs=None, *, shade=None) -> Figure:
    """One run's pre-activation histograms per layer at a few epochs (light = early, dark =
    late), over the activation's saturated range (grey).

    Needs the `diagnostics` table and `runs` (run_id, model, activation, seed, n_train).
    `epochs` defaults to 0, 1, the middle one and the last; `shade`: the activation's
    `histogram_shade` (computed here when None).
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
    gal = shade if shade is not None else histogram_shade([act])
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
                ax.text(0.98, 0.95 - 0.08 * k, f"{tails:.0%} beyond ±{metrics.HIST_EDGES[-1]:g}",
                        transform=ax.transAxes, ha="right", va="top", fontsize=7, color=colour)
        ax.set_title(layer, fontsize=10)
        ax.set_xlabel("pre-activation")
        ax.set_ylabel("fraction of entries per 0.5 bin")
    axes[0].legend(fontsize=7, frameon=False, loc="upper left")
    fig.suptitle(f"{meta['model']}, {act}, seed {meta['seed']}, {meta['n_train']} images: "
                 f"pre-activation histograms on the probe batch (grey: {act} saturated)")
    return fig


def gradient_norms(diag: pd.DataFrame | None, runs: pd.DataFrame, *, model: str,
                   n_train: int | None = None, activations=None, summary=None) -> Figure:
    """Each weight layer's gradient norm against step (log axis), median over seeds, and the
    first/last layer ratio: gradients that vanish towards the input show in the last panel.

    Needs the `diagnostics` table and `runs` (run_id, model, activation, seed, n_train).
    """
    r = runs[runs["model"] == model]
    n_train = _default_n(r, n_train)
    r = r[r["n_train"] == n_train]
    g = (summary or diagnostics.layer_summary(diag, r))["gradients"]
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
        ratio = layer == metrics.RATIO
        ax.set_title("first / last layer gradient-norm ratio" if ratio else f"{layer}: weight gradient",
                     fontsize=10)
        ax.set_xlabel("batch update")
        ax.set_ylabel("ratio" if ratio else "gradient norm (L2)")
    _legend(fig, acts_)
    n = int(g["n"].max()) if len(g) else 0
    fig.suptitle(f"{model}, {n_train} images: gradient norms per layer, median over {n} seed(s)")
    return fig


def saturation_dead_units(diag: pd.DataFrame | None, runs: pd.DataFrame, *, model: str,
                          n_train: int | None = None, activations=None, summary=None) -> Figure:
    """Saturated entries and dead units per activation, mean over hidden layers and seeds:
    bars after the last epoch, ○ before training, ▲ the worst layer at any epoch.

    Needs the `diagnostics` table and `runs` (run_id, model, activation, seed, n_train).
    """
    r = runs[runs["model"] == model]
    n_train = _default_n(r, n_train)
    f = (summary or diagnostics.layer_summary(diag, r[r["n_train"] == n_train]))["units"]
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
    bounded = [a for a in STYLES if a in BOUNDED_RANGE]
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
            ax.axhline(logit_loss_floor(lo, hi), color="0.35", linestyle=ls, linewidth=1.0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"train {LOSS_LABEL}")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    extra = [Line2D([], [], color="0.35", linestyle=ls,
                    label=f"floor {logit_loss_floor(lo, hi):.2f}: logits in ({lo:g}, {hi:g})")
             for (lo, hi), ls in FLOORS]
    _legend(fig, shown, extra=extra)
    fig.suptitle(f"MLP, {n_train} images: bounded activations' train loss and the least loss their "
                 f"logits allow (mean over seeds)")
    return fig

