"""The page's interactive figures: Plotly specs as plain dicts (data and layout), drawn in the
browser by the bundle the page writes beside itself, so hovering a line names it, the legend
hides one, and a drag zooms; the static PNG and SVG of every figure stay in `figures/`.

Each builder takes one of the report's tables and returns an `Interactive` or None; none draws
or writes anything. Plain dicts rather than plotly's figure objects: building them costs no
import and no validation pass, and the browser is what checks them.
"""
import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..analysis.tables import CONFIG_KEYS
from .figures.common import LOSS_LABEL, style

# Matplotlib's line styles in Plotly's words.
_DASH = {"-": "solid", "--": "dash", "-.": "dashdot", ":": "dot"}
PANEL_HEIGHT = 260  # px per row of panels: two rows of curves still fit a laptop screen
BUNDLE = "plotly.min.js"  # written beside index.html by the page


@dataclass(frozen=True)
class Interactive:
    """One interactive figure: the section it backs, its id, caption and Plotly spec."""
    anchor: str
    slug: str
    caption: str
    spec: dict


def epoch_curves(curves: pd.DataFrame, model: str) -> Interactive | None:
    """Test loss and test accuracy against epoch, one row of panels per training-set size."""
    c = curves[(curves["model"] == model) & curves["column"].isin(["test_loss", "test_accuracy"])]
    if c.empty:
        return None
    sizes = sorted(c["n_train"].unique())
    traces, layout = [], _grid(len(sizes), 2)
    c, labels = _labels(c)
    shown = set()
    for i, n in enumerate(sizes):
        for j, (column, what) in enumerate((("test_loss", "test loss"), ("test_accuracy", "test accuracy"))):
            axis = _axis(i * 2 + j)
            layout[f"xaxis{axis}"].update(title={"text": "epoch"} if i == len(sizes) - 1 else {})
            layout[f"yaxis{axis}"].update(title={"text": f"n={n}: {what}"})
            panel = c[(c["n_train"] == n) & (c["column"] == column)]
            for key, g in panel.groupby("label", sort=False):
                g = g.sort_values("epoch")
                traces.append(_line(labels[key], g["epoch"], g, axis, what, f"n_train {n}, epoch",
                                    showlegend=key not in shown))
                shown.add(key)
    layout["title"] = {"text": f"{model}: test loss and accuracy per epoch"}
    return Interactive("ranking", f"{model}-epochs-interactive",
                       f"{model}: test loss and accuracy against epoch, mean over seeds (hover for the "
                       f"95% interval; click a legend entry to hide it, drag to zoom).",
                       {"data": traces, "layout": layout})


def learning_curves(summary: pd.DataFrame, model: str) -> Interactive | None:
    """Final test loss against n_train (log-log), mean over seeds with its 95% interval as bars."""
    s = summary[(summary["model"] == model) & (summary["metric"] == "final_test_loss")]
    if s.empty or s["n_train"].nunique() < 2:
        return None
    s, labels = _labels(s)
    layout = _grid(1, 1)
    layout["xaxis"].update(type="log", title={"text": "training images (n_train)"})
    layout["yaxis"].update(type="log", title={"text": "final test " + LOSS_LABEL})
    traces = []
    for key, g in s.groupby("label", sort=False):
        g = g.sort_values("n_train")
        t = _line(labels[key], g["n_train"], g, "", "final test loss", "n_train")
        t["error_y"] = _bars(g)
        traces.append(t)
    layout["title"] = {"text": f"{model}: learning curves"}
    return Interactive("learning", f"{model}-learning-interactive",
                       f"{model}: final test loss against n_train, mean over seeds with its 95% interval "
                       f"(hover names the activation; click a legend entry to hide it).",
                       {"data": traces, "layout": layout})


def tuned_vs_reference(tuned: pd.DataFrame, reference: pd.DataFrame, axes) -> Interactive | None:
    """Per condition and n: each activation's test loss at its tuned setting (with its interval)
    beside its test loss at the reference setting."""
    if tuned is None or tuned.empty:
        return None
    panels = sorted({(c, int(n)) for c, n in zip(tuned["condition"], tuned["n_train"])})
    layout = _grid(len(panels), 1)
    traces = []
    for i, (cond, n) in enumerate(panels):
        axis = _axis(i)
        t = tuned[(tuned["condition"] == cond) & (tuned["n_train"] == n)].sort_values("test_loss")
        order = list(t["activation"])
        layout[f"yaxis{axis}"].update(title={"text": f"{cond}, n={n}: test loss"})
        layout[f"xaxis{axis}"].update(type="category", categoryorder="array", categoryarray=order)
        chosen = ["; ".join(f"{a} {_value(r[f'best_{a}'])}" for a in axes) for _, r in t.iterrows()]
        traces.append({
            "type": "scatter", "mode": "markers", "name": "tuned per activation", "legendgroup": "tuned",
            "showlegend": i == 0, "x": order, "y": _floats(t["test_loss"]), "xaxis": f"x{axis}",
            "yaxis": f"y{axis}", "marker": {"color": "#117733", "size": 13, "symbol": "circle-open", "line": {"width": 2}}, "error_y": _bars(
                t.rename(columns={"test_loss": "mean", "test_loss_low": "low", "test_loss_high": "high"})),
            "customdata": [[lo, hi, c] for lo, hi, c in zip(_floats(t["test_loss_low"]),
                                                             _floats(t["test_loss_high"]), chosen)],
            "hovertemplate": "<b>%{x}</b>, tuned (%{customdata[2]})<br>test loss %{y:.4g} "
                             "(95% CI %{customdata[0]:.4g} to %{customdata[1]:.4g})<extra></extra>"})
        r = reference[(reference["condition"] == cond) & (reference["n_train"] == n)] if len(reference) else reference
        if len(r):
            r = r.set_index("activation").reindex(order)
            traces.append({
                "type": "scatter", "mode": "markers", "name": "at the reference setting",
                "legendgroup": "reference", "showlegend": i == 0, "x": order, "y": _floats(r["test_loss"]),
                "xaxis": f"x{axis}", "yaxis": f"y{axis}", "marker": {"color": "#882255", "symbol": "x", "size": 8},
                "hovertemplate": "<b>%{x}</b>, at the reference setting<br>test loss %{y:.4g}<extra></extra>"})
    return Interactive("tuning", "tuned-vs-reference-interactive",
                       "Each activation's test loss at its own tuned setting (95% interval) and at the "
                       "reference setting, per condition and training-set size, best tuned first.",
                       {"data": traces, "layout": layout})


def spec_json(spec: dict) -> str:
    """The spec as JSON safe inside a <script> element (no '</', no NaN)."""
    return json.dumps(_plain(spec), separators=(",", ":")).replace("</", "<\\/")


# -- pieces -----------------------------------------------------------------------------------

def _labels(table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The table with a 'label' column: the activation, plus any other setting that varies
    (lr 0.1), so that two conditions never share a line; and {label: activation}."""
    varying = [k for k in CONFIG_KEYS if k in table and k not in ("model", "activation", "n_train")
               and table[k].astype(str).nunique() > 1]
    label = table["activation"].astype(str)
    for k in varying:
        label = label + f" {k} " + table[k].astype(str)
    table = table.assign(label=label.to_numpy())
    return table, dict(zip(table["label"], table["activation"]))


def _line(activation, x, g, axis, what, xname, showlegend=True) -> dict:
    st = style(activation)
    name = g["label"].iloc[0]
    return {"type": "scatter", "mode": "lines+markers", "name": name, "legendgroup": name,
            "showlegend": showlegend, "x": _floats(x), "y": _floats(g["mean"]),
            "xaxis": f"x{axis}", "yaxis": f"y{axis}",
            "line": {"color": st["color"], "dash": _DASH.get(st["linestyle"], "solid"), "width": 1.6},
            "marker": {"size": 4},
            "customdata": [[lo, hi, k] for lo, hi, k in zip(_floats(g["low"]), _floats(g["high"]),
                                                             g["n_seeds"].astype(int).tolist())],
            "hovertemplate": f"<b>{_esc(name)}</b><br>{xname} %{{x}}<br>{what} %{{y:.4g}} "
                             f"(95% CI %{{customdata[0]:.4g}} to %{{customdata[1]:.4g}}, "
                             f"%{{customdata[2]}} seeds)<extra></extra>"}


def _bars(g) -> dict:
    mean, low, high = (g[c].to_numpy(float) for c in ("mean", "low", "high"))
    return {"type": "data", "array": _floats(high - mean), "arrayminus": _floats(mean - low),
            "visible": True, "thickness": 1}


def _grid(rows: int, cols: int) -> dict:
    """A layout of rows x cols independent panels with one legend on the right."""
    layout = {"height": 80 + PANEL_HEIGHT * rows, "hovermode": "closest", "margin": {"t": 30, "r": 10},
              "legend": {"itemclick": "toggle", "itemdoubleclick": "toggleothers"},
              "template": {"layout": {"font": {"size": 11}}}}
    if rows * cols > 1:
        layout["grid"] = {"rows": rows, "columns": cols, "pattern": "independent"}
    for k in range(rows * cols):
        layout[f"xaxis{_axis(k)}"] = {}
        layout[f"yaxis{_axis(k)}"] = {}
    return layout


def _axis(k: int) -> str:
    return "" if k == 0 else str(k + 1)


def _floats(values) -> list:
    return [float(v) if v is not None and math.isfinite(float(v)) else None for v in values]


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def _esc(text: str) -> str:
    """Plotly's hover templates are HTML and treat %{...} as fields: a name must be neither."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("%", "&#37;").replace("{", "&#123;"))


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v


def figures_for(t: dict) -> list[Interactive]:
    """Every interactive figure the report's tables allow: epoch curves and learning curves per
    model, and the tuned-vs-reference ranking."""
    out = []
    curves, summary = t.get("curves"), t.get("summary")
    for model in sorted(curves["model"].unique()) if curves is not None and len(curves) else []:
        out.append(epoch_curves(curves, model))
    for model in sorted(summary["model"].unique()) if summary is not None and len(summary) else []:
        out.append(learning_curves(summary, model))
    if t.get("tuned") is not None:
        out.append(tuned_vs_reference(t["tuned"], t.get("reference_ranking", pd.DataFrame()),
                                      t.get("tuning_axes", ["lr"])))
    return [f for f in out if f is not None]


def bundle() -> bytes:
    """Plotly's JavaScript, as the plotly package ships it (the page loads it from beside itself)."""
    from importlib import resources
    return resources.files("plotly").joinpath("package_data/plotly.min.js").read_bytes()
