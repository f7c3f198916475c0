"""What every figure shares: one colour, line style and marker per activation, the panel
grid, legends outside the axes, 95% bands, spike-taming log axes and fit lines.

Figures are built with `matplotlib.figure.Figure` (no pyplot), so nothing needs a display
and nothing accumulates in a global figure registry. Dense line art (every batch loss of a
run) is drawn `rasterized`, so a vector copy of a figure stays small and quick to write.
"""
import hashlib
import math

import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ...analysis import stats as analysis

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

