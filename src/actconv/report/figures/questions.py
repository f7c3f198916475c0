"""The questions' figures: sensitivity to the tuned setting, and learning curves in n."""
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ...analysis import stats as analysis
from .common import _legend, LOSS_LABEL, _order, _panels, style


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
