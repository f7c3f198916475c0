"""The only writer of report files: a self-contained HTML report, its figures, CSV tables, exports."""
import base64
import datetime
import html
import io
import multiprocessing
import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import analysis, diagnostics, plots
from .activations import FAMILIES
from .errors import ActconvError

EXPORT_FORMATS = ("csv", "parquet")
TABLES = ("runs", "epochs", "batches", "diagnostics")
STATUSES = ("done", "diverged", "failed", "running", "pending")
# What the summary aggregates across seeds, in the order a reader wants them.
SUMMARY_METRICS = ["start_loss", "final_train_loss", "final_test_loss", "final_train_accuracy",
                   "final_test_accuracy", "gap", "auc_train_loss", "auc_test_loss",
                   "steps_to_threshold", "reached"]


def write_report(out_dir, results=None, *, spike_k: float = 10.0, spike_window: int = 50,
                 threshold: float = 0.5, dpi: int = 100, jobs: int | None = None) -> Path:
    """Write OUT/report/index.html, figures/*.png and *.svg, summary.csv and the analysis tables.

    Figures are drawn and saved in parallel processes (one per core this process may use).

    Args:
        out_dir: the study's output directory (holds the results store; the report goes
            into its `report/` folder).
        results: the long tables (`actconv.load_results(out_dir)` when None).
        spike_k, spike_window: a spike is a batch loss above median + k x MAD of the
            previous `spike_window` losses.
        threshold: loss for steps-to-threshold.
        dpi: resolution of the PNG figures (and of the line art rasterised in the SVGs).
        jobs: processes that draw the figures (default: the cores this process may use).
    Returns:
        The path of index.html. Works on a study that is still running or partly failed.
    """
    out_dir = Path(out_dir)
    if results is None:
        from .store import load_results
        results = load_results(out_dir)
    results = analysis.separate_engines(results)
    dest = out_dir / "report"
    figdir = dest / "figures"
    try:
        figdir.mkdir(parents=True, exist_ok=True)
        for old in figdir.glob("*"):  # figures of an earlier report may no longer apply
            if old.suffix in (".png", ".svg"):
                old.unlink()
    except OSError as e:
        raise ActconvError(f"cannot write the report into {dest}: {e.strerror}") from None

    t = _analyse(results, spike_k, spike_window, threshold)
    figures = _figures(results, t)
    written = _write_figures(figures, figdir, dpi, jobs or _cores())
    _write_tables(t, dest)
    page = _html(out_dir, results, t, written, spike_k, spike_window, threshold)
    index = dest / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def export(out_dir, fmt: str = "csv", dest=None, results=None) -> Path:
    """Write the long tables (runs, epochs, batches, diagnostics) as CSV or Parquet; return the folder."""
    if fmt not in EXPORT_FORMATS:
        raise ActconvError(f"unknown export format {fmt!r}; choose from: {', '.join(EXPORT_FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ActconvError("Parquet export needs pyarrow: pip install 'actconv[parquet]'") from None
    if results is None:
        from .store import load_results
        results = load_results(out_dir)
    dest = Path(dest) if dest is not None else Path(out_dir) / "export"
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            df = getattr(results, name)
            path = dest / f"{name}.{fmt}"
            if fmt == "csv":
                df.to_csv(path, index=False)
            else:
                df.to_parquet(path, index=False)
    except OSError as e:
        raise ActconvError(f"cannot write the export into {dest}: {e.strerror}") from None
    return dest


# -- analysis ------------------------------------------------------------------------------------

def _analyse(results, spike_k, spike_window, threshold) -> dict:
    """Every table the report shows, from the finished runs."""
    runs = results.runs
    status = runs.set_index("run_id")["status"] if len(runs) else pd.Series(dtype=str)
    done = status.index[status == "done"]
    finished = status.index[status.isin(["done", "diverged"])]
    epochs = results.epochs[results.epochs["run_id"].isin(done)]
    batches = results.batches[results.batches["run_id"].isin(done)]
    # Batch figures also show diverged runs: their explosion is what a reader looks for.
    spiky = results.batches[results.batches["run_id"].isin(finished)]
    t = {"epochs": epochs, "batches": batches, "finished_batches": spiky}
    if len(spiky):  # once for the batch figures (diverged runs too) and the done runs' table
        t["finished_fits"] = analysis.batch_fit(results.epochs, spiky)
    if len(epochs):
        t["per_run"] = analysis.run_metrics(epochs, batches if len(batches) else None,
                                            threshold=threshold)
        metrics = [m for m in SUMMARY_METRICS if m in t["per_run"].columns]
        t["summary"] = analysis.aggregate(t["per_run"], metrics)
        t["ranking"] = analysis.rank_activations(t["per_run"], "final_test_loss")
        t["paired"] = analysis.paired_comparisons(t["per_run"], "final_test_loss")
        t["fits"] = analysis.epoch_fits(epochs)
        t["curves"] = analysis.curve_intervals(epochs, ["train_loss", "test_loss", "train_accuracy",
                                                        "test_accuracy"])
    if len(batches):
        fits = t["finished_fits"]
        t["batch_fits"] = fits[fits["run_id"].isin(done)].reset_index(drop=True)
    t["spikes"] = (analysis.detect_spikes(spiky, results.epochs, k=spike_k, window=spike_window)
                   if len(spiky) else pd.DataFrame(columns=analysis.SPIKE_COLUMNS))
    t["findings"] = analysis.findings(results, spike_k=spike_k, spike_window=spike_window)
    t["mechanisms"] = diagnostics.mechanism_findings(results)
    t["papers"] = diagnostics.paper_verdicts(results)
    return t


# -- figures --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FigureJob:
    """One figure of the page: where it goes, what it says, and how to draw it."""
    section: str
    slug: str
    caption: str
    draw: Callable  # () -> Figure; called in a worker process, so only its picture travels back


def _figures(results, t) -> list:
    """A FigureJob for everything the data allows."""
    out = []
    epochs, batches = t["epochs"], t["finished_batches"]
    start = (results.epochs[results.epochs["run_id"].isin(batches["run_id"].unique())]
             if len(batches) else epochs)
    if epochs.empty and batches.empty:
        return out
    models = sorted(epochs["model"].unique())
    logits = _activated_logits(results.runs)
    ci = t.get("curves")
    for model in sorted(set(epochs["model"]) | set(batches["model"])):
        e = epochs[epochs["model"] == model]
        b = batches[batches["model"] == model]
        in_e, in_b = set(e["activation"].unique()), set(b["activation"].unique())
        for family, members in FAMILIES.items():
            present = [a for a in members if a in in_e]
            in_batches = [a for a in members if a in in_b]
            name = family.replace("_", " ")
            if in_batches:
                out.append(FigureJob("The original's figures, per activation family", f"{model}-{family}-batch",
                                     f"{model}, {name}: batch loss against batch update with the "
                                     f"least-squares line through it (epoch-0 loss at update 0), as the "
                                     f"original drew it; one seed, diverged runs included.",
                                     partial(plots.family_batch_losses, b, start, in_batches, model=model,
                                             fits=t["finished_fits"])))
            if not present:
                continue
            out.append(FigureJob("The original's figures, per activation family", f"{model}-{family}-test",
                                 f"{model}, {name}: test loss and accuracy against epoch, mean over seeds "
                                 f"with a 95% band.",
                                 partial(plots.family_test_curves, e, present, model=model, ci=ci)))
    for model in models:
        e = epochs[epochs["model"] == model]
        for n in sorted(e["n_train"].unique()):
            out.append(FigureJob("Loss and accuracy per model and training-set size", f"{model}-{n}-loss",
                                 f"{model}, {n} images: train and test loss per epoch.",
                                 partial(plots.epoch_loss_curves, e, model=model, n_train=n, ci=ci)))
            out.append(FigureJob("Loss and accuracy per model and training-set size", f"{model}-{n}-accuracy",
                                 f"{model}, {n} images: train and test accuracy per epoch.",
                                 partial(plots.accuracy_curves, e, model=model, n_train=n, ci=ci)))
            out.append(FigureJob("Regression lines over the epoch losses", f"{model}-{n}-regression",
                                 f"{model}, {n} images: epoch losses and their least-squares lines "
                                 f"(slopes in the fits table).",
                                 partial(plots.epoch_regression, e, t["fits"], model=model, n_train=n)))
    if len(batches):
        for model in sorted(batches["model"].unique()):
            n, seed, note = _dynamics_run(batches, t["spikes"], model)
            out.append(FigureJob("Batch-loss dynamics and spikes", f"{model}-dynamics",
                                 f"{model}: batch loss of {note}, whole run and first epoch; spikes marked.",
                                 partial(plots.batch_dynamics, batches[batches["model"] == model],
                                         t["spikes"], model=model, n_train=n, seed=seed)))
    for model in models:
        out.append(FigureJob("Final and starting losses", f"{model}-heatmap",
                             f"{model}: final test loss, mean over seeds, per activation and training-set "
                             f"size (best on top).", partial(plots.final_loss_heatmap, t["per_run"], model=model)))
        out.append(FigureJob("Final and starting losses", f"{model}-start-final",
                             f"{model}: starting (epoch-0) train loss against final test loss.",
                             partial(plots.start_vs_final, t["per_run"], model=model,
                                     logit_floors=model in logits)))
    return out + _diagnostics_figures(results, epochs)


GALLERY = "Activation functions and where they saturate"
DYNAMICS = "Inside the networks: per-layer diagnostics"


def _diagnostics_figures(results, epochs) -> list:
    """The activation gallery (shown at the top), the logit floor, and per-layer figures."""
    runs = results.runs[results.runs["run_id"].isin(epochs["run_id"].unique())]
    present = [a for a in plots.STYLES if a in set(runs["activation"])]
    out = [FigureJob(GALLERY, "activation-gallery", "Each activation of this study (colour) and its "
                     "derivative (black, dashed) over [-5, 5]; grey where the derivative is below 1% of "
                     "its maximum, which is what the saturation figures count.",
                     partial(plots.activation_gallery, present))]
    bounded = runs["activation"].isin(list(analysis.BOUNDED_RANGE))
    on_logits = runs["activate_logits"].fillna(0).astype(int) == 1
    if (bounded & on_logits & (runs["model_kind"] == "mlp")).any():
        out.append(FigureJob(DYNAMICS, "logit-floor", "Bounded activations on the logits (left) cannot go "
                             "below the floor their logit range allows; with linear logits (right) they can.",
                             partial(plots.logit_floor_curves, epochs, runs)))
    diag = results.diagnostics[results.diagnostics["run_id"].isin(runs["run_id"])]
    for model in sorted(runs.loc[runs["run_id"].isin(diag["run_id"].unique()), "model"].unique()):
        r = runs[(runs["model"] == model) & runs["run_id"].isin(diag["run_id"].unique())]
        n = int(r["n_train"].max())
        # Each worker gets the rows of its own figure: one model and size, or one run.
        d = diag[diag["run_id"].isin(r.loc[r["n_train"] == n, "run_id"])]
        out.append(FigureJob(DYNAMICS, f"{model}-layer-stats", f"{model}, {n} images: activation mean ± "
                             f"standard deviation per hidden layer on the 300-image probe batch (100 for "
                             f"TinyVGG) after each epoch, averaged over seeds, as Glorot & Bengio plotted "
                             f"them.", partial(plots.layer_activation_stats, d, r, model=model, n_train=n)))
        out.append(FigureJob(DYNAMICS, f"{model}-gradients", f"{model}, {n} images: weight-gradient norm "
                             f"per layer (log axis) and the first/last layer ratio, median over seeds.",
                             partial(plots.gradient_norms, d, r, model=model, n_train=n)))
        out.append(FigureJob(DYNAMICS, f"{model}-saturation", f"{model}, {n} images: saturated entries and "
                             f"dead units per activation.",
                             partial(plots.saturation_dead_units, d, r, model=model, n_train=n)))
        pick = r[r["n_train"] == n].sort_values("seed")
        pick = pick[pick["activation"] == "sigmoid"] if pick["activation"].eq("sigmoid").any() else pick
        run = pick.iloc[0]
        out.append(FigureJob(DYNAMICS, f"{model}-histograms", f"{model}: pre-activation histograms of one "
                             f"run ({run['activation']}, seed {run['seed']}, {n} images) over training.",
                             partial(plots.preact_histograms, diag[diag["run_id"] == run["run_id"]], r,
                                     run["run_id"])))
    return out


def _activated_logits(runs: pd.DataFrame) -> set:
    if "activate_logits" not in runs.columns:
        return set()
    return set(runs.loc[runs["activate_logits"].fillna(0).astype(int) == 1, "model"])


def _dynamics_run(batches, spikes, model):
    """The run to show: the (n_train, seed) with the highest spike, else the smallest and first."""
    s = spikes[spikes["model"] == model] if len(spikes) else spikes
    s = s[s["run_id"].isin(batches["run_id"])] if len(s) else s
    if len(s):
        top = s.sort_values("loss", ascending=False).iloc[0]
        return int(top["n_train"]), int(top["seed"]), (f"n_train {int(top['n_train'])}, seed "
                                                       f"{int(top['seed'])} (the highest spike)")
    b = batches[batches["model"] == model]
    n, seed = int(b["n_train"].min()), int(b["seed"].min())
    return n, seed, f"n_train {n}, seed {seed} (no spikes in this model)"


# The figures a forked worker draws: inherited from the parent at fork, so only an index
# goes to the worker and only the picture comes back (no DataFrame is pickled).
_JOBS: list = []


def _write_figures(figures, figdir: Path, dpi: int, jobs: int) -> list:
    """Draw and save each figure as PNG and SVG in parallel; returns (section, stem, caption, PNG)."""
    used = set()
    stems = [_slug(f.slug, used) for f in figures]
    _JOBS[:] = [(f.draw, figdir / stem, dpi) for f, stem in zip(figures, stems)]
    try:
        workers = min(jobs, len(_JOBS))
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                pngs = pool.map(_render_job, range(len(_JOBS)), chunksize=1)
        else:
            pngs = [_render_job(i) for i in range(len(_JOBS))]
    finally:
        _JOBS.clear()
    return [(f.section, stem, f.caption, png) for f, stem, png in zip(figures, stems, pngs)]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def _render_job(i: int) -> bytes:
    draw, path, dpi = _JOBS[i]
    return _render(draw(), path, dpi)


def _render(fig, path: Path, dpi: int) -> bytes:
    """Save `fig` as path.png and path.svg; return the PNG's bytes."""
    png = _png(fig, dpi)
    (path.parent / f"{path.name}.png").write_bytes(png)  # a user's model name may hold a dot
    # The layout is solved for the PNG already; solving it again for the SVG would cost a
    # third of the figure's time and give the same positions.
    fig.set_layout_engine("none")
    fig.savefig(path.parent / f"{path.name}.svg", format="svg", dpi=dpi)  # dpi: of the rasterised line art
    return png


def _png(fig, dpi: int) -> bytes:
    """The figure as a PNG of at most 256 colours: a quarter of the bytes of a full-colour one.

    Line art has few colours, so a palette loses nothing visible; median cut (not the faster
    octree) keeps the faint grid lines. Drawn once straight into a palette PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(physical=True), canvas.buffer_rgba())
    buf = io.BytesIO()
    image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT,
                                  dither=Image.Dither.NONE).save(buf, format="png", optimize=True)
    return buf.getvalue()


def _slug(text: str, used: set) -> str:
    """A file name from a label a user chose: only safe characters, never a repeat."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "figure"
    stem, k = base, 2
    while stem in used:
        stem, k = f"{base}-{k}", k + 1
    used.add(stem)
    return stem


def _write_tables(t, dest: Path) -> None:
    empty = pd.DataFrame(columns=analysis.CONFIG_KEYS + ["metric", "n_seeds", "mean", "sd", "low",
                                                         "high", "method", "note"])
    t.get("summary", empty).to_csv(dest / "summary.csv", index=False)
    for name in ("per_run", "fits", "batch_fits", "ranking", "paired", "spikes", "findings",
                 "mechanisms", "papers"):
        if name in t:
            t[name].to_csv(dest / f"{name}.csv", index=False)


# -- HTML -----------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;
padding:1rem 2rem;color:#222;line-height:1.45}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;vertical-align:top;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-weight:600;white-space:nowrap;padding:.1rem .4rem;border-radius:3px}
.supported{background:#d9f0e3;color:#0b5a2c} .not-supported{background:#f8dcdc;color:#7a1010}
.inconclusive{background:#eee;color:#444}
.reproduced{background:#d9f0e3;color:#0b5a2c} .not-reproduced{background:#f8dcdc;color:#7a1010}
figure{margin:1.2rem 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9rem;color:#444} .meta{color:#555;font-size:.9rem}
details{margin:.6rem 0} summary{cursor:pointer;font-weight:600}
.scroll{max-height:28rem;overflow:auto}
code{background:#f5f5f5;padding:0 .2rem;overflow-wrap:anywhere} .wide{overflow-x:auto}
"""


def _html(out_dir, results, t, figures, spike_k, spike_window, threshold) -> str:
    runs = results.runs
    studies = sorted(map(str, runs["study"].dropna().unique())) if "study" in runs.columns else []
    title = "actconv report: " + (", ".join(studies) if studies else "unnamed study")
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             f"<p class='meta'>Results in <code>{_e(Path(out_dir).resolve())}</code>; written "
             f"{_e(now)}. Figures and tables are also in <code>figures/</code> and the CSV files "
             f"next to this page.</p>"]
    top = [_figure_html(*f[1:]) for f in figures if f[0] == GALLERY]  # where each one saturates
    parts += [f"<h2 id='gallery'>{_e(GALLERY)}</h2>"] + top if top else []
    figures = [f for f in figures if f[0] != GALLERY]
    parts += _status_section(runs)
    parts += _config_section(runs)
    parts += _verdict_table("papers", "Published claims, checked", PAPERS_INTRO, t.get("papers"))
    parts += _verdict_table("findings", "The original findings, checked", FINDINGS_INTRO, t["findings"])
    parts += _verdict_table("mechanisms", "Mechanisms, measured", MECHANISMS_INTRO, t.get("mechanisms"))
    parts += _ranking_section(t)
    section = None
    for sec, stem, caption, png in figures:
        if sec != section:
            parts.append(f"<h2>{_e(sec)}</h2>")
            section = sec
        parts.append(_figure_html(stem, caption, png))
    if not figures:
        parts.append("<h2>Figures</h2><p>No finished runs yet: nothing to draw.</p>")
    parts += _tables_section(t, threshold)
    parts += _method_section(spike_k, spike_window, threshold)
    parts.append("</body></html>")
    return "\n".join(parts)


def _status_section(runs: pd.DataFrame) -> list:
    counts = runs["status"].value_counts() if len(runs) else pd.Series(dtype=int)
    total = int(counts.sum())
    done = int(counts.get("done", 0))
    missing = int(counts.get("pending", 0) + counts.get("running", 0))
    out = ["<h2 id='status'>Runs</h2>",
           f"<p>{total} runs registered: " + ", ".join(
               f"{int(counts.get(s, 0))} {s}" for s in STATUSES) + ".</p>"]
    if total == 0:
        out.append("<p>No runs in this store.</p>")
        return out
    if missing:
        out.append(f"<p><strong>{missing} runs are not finished</strong> (pending or running): the "
                   f"statistics below use the {done} finished runs only and will change.</p>")
    others = sorted(set(counts.index) - set(STATUSES))
    if others:
        out.append(f"<p>Unknown statuses: {_e(', '.join(map(str, others)))}.</p>")
    by_model = runs.pivot_table(index="model", columns="status", values="run_id", aggfunc="count",
                                fill_value=0)
    by_model = by_model.reindex(columns=[s for s in STATUSES if s in by_model.columns] + others)
    out.append(_table(by_model.reset_index()))
    cols = ["run_id", "model", "activation", "seed", "n_train"]
    failed = runs[runs["status"] == "failed"]
    if len(failed):
        out.append(f"<details open><summary>{len(failed)} failed run(s)</summary>"
                   + _table(failed[cols + ["error"]].head(200)) + "</details>")
    diverged = runs[runs["status"] == "diverged"]
    if len(diverged):
        out.append(f"<details open><summary>{len(diverged)} diverged run(s) (a non-finite loss "
                   f"stopped them)</summary>" + _table(diverged[cols + ["diverged_step"]].head(200))
                   + "</details>")
    pending = runs[runs["status"].isin(["pending", "running"])]
    if len(pending):
        out.append(f"<details><summary>{len(pending)} missing run(s)</summary>"
                   + _table(pending[cols + ["status"]].head(200)) + "</details>")
    return out


def _config_section(runs: pd.DataFrame) -> list:
    if runs.empty:
        return []
    rows = []  # one column per model, one row per setting: narrow enough for any page
    for model, g in runs.groupby("model", sort=True):
        row = {"model": model}
        for col in ("model_kind", "activate_logits", "hidden_units", "hidden_layers", "dataset",
                    "epochs", "batch_size", "optimizer", "lr", "engine", "torch_version",
                    "device", "threads", "dtype"):
            if col in g.columns:
                row[col] = ", ".join(str(v) for v in sorted(g[col].dropna().unique(), key=str))
        row["activations"] = g["activation"].nunique()
        row["seeds"] = ", ".join(str(s) for s in sorted(g["seed"].unique()))
        row["n_train"] = ", ".join(str(n) for n in sorted(g["n_train"].unique()))
        rows.append(row)
    table = pd.DataFrame(rows).set_index("model").T.rename_axis("setting").reset_index()
    return ["<h2 id='config'>Configuration</h2>", _table(table)]


FINDINGS_INTRO = ("Each claim of the original notebook, judged from this study's finished runs. "
                  "<em>Inconclusive</em> means the data cannot decide (an activation or model missing, "
                  "one seed, or an interval that straddles the threshold); the numbers say why.")


PAPERS_INTRO = ("This study is a paper preset: each published claim, judged from its finished runs "
                "(<em>reproduced</em> needs the claim to hold in at least 80% of the paired seeds).")
MECHANISMS_INTRO = ("The explanations the original offered, measured with <code>--diagnostics</code> "
                    "(per-layer statistics on a fixed probe batch): a flat loss is blamed on saturation "
                    "only when saturated units or vanishing gradients are measured; bounded activations "
                    "on the logits are held back by the cross-entropy floor their range allows "
                    "(1.461 nats for logits in (0, 1), 0.797 for (-1, 1), 10 classes).")


def _verdict_table(ident: str, heading: str, intro: str, table) -> list:
    """A findings-style table (claim, scope, verdict, evidence); nothing when there are no rows."""
    if table is None or table.empty:
        return []
    out = [f"<h2 id='{ident}-heading'>{_e(heading)}</h2>", f"<p>{intro}</p>",
           f"<table id='{ident}' class='findings'><thead><tr><th>claim</th><th>scope</th>"
           "<th>verdict</th><th>evidence</th></tr></thead><tbody>"]
    for r in table.itertuples():
        cls = r.verdict.replace(" ", "-")
        out.append(f"<tr><td><strong>({_e(r.id)})</strong> {_e(r.claim)}</td><td>{_e(r.scope)}</td>"
                   f"<td><span class='verdict {_e(cls)}'>{_e(r.verdict)}</span></td>"
                   f"<td>{_e(r.evidence)}</td></tr>")
    out.append("</tbody></table>")
    return out


def _figure_html(stem: str, caption: str, png: bytes) -> str:
    """A figure embedded in the page (it opens offline), captioned with its SVG beside the page."""
    b64 = base64.b64encode(png).decode("ascii")
    return (f"<figure id='fig-{_e(stem)}'><img alt='{_e(caption)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{_e(caption)} (<a href='figures/{_e(stem)}.svg'><code>figures/{_e(stem)}.svg"
            f"</code></a>)</figcaption></figure>")


def _ranking_section(t) -> list:
    if "ranking" not in t:
        return []
    r = t["ranking"]
    out = ["<h2 id='ranking'>Ranking by final test loss</h2>",
           "<p>Per model and training-set size, activations ranked by their mean final test loss "
           "over seeds (1 = lowest). <em>Rank over seeds</em> gives the mean and range of the "
           "per-seed ranks; Kendall's W says how alike the seeds rank (1 = identical).</p>"]
    for (model, n), g in r.groupby(["model", "n_train"], sort=True):
        w = g["kendall_w"].iloc[0]
        view = pd.DataFrame({
            "rank": g["rank"], "activation": g["activation"], "mean final test loss": g["mean"],
            "rank over seeds": [f"{m:.1f} ({lo:.0f}-{hi:.0f})" if np.isfinite(m) else "n/a"
                                for m, lo, hi in zip(g["mean_rank"], g["rank_min"], g["rank_max"])],
            "seeds": g["n_seeds"]})
        sig = t["paired"]
        sig = sig[(sig["model"] == model) & (sig["n_train"] == n)]
        tested = int(sig["p"].notna().sum())
        paired = (f"{int(sig['significant'].sum())} of {tested} paired differences significant "
                  f"after Holm" if tested else "no paired tests (fewer than two common seeds)")
        out.append(f"<details><summary>{_e(model)}, n_train {_e(n)}: best "
                   f"{_e(g['activation'].iloc[0])}; Kendall's W {_e(analysis.fmt(w))}; "
                   f"{_e(paired)}</summary>"
                   + _table(view) + "</details>")
    return out


def _tables_section(t, threshold) -> list:
    out = ["<h2 id='tables'>Tables</h2>"]
    if "summary" in t:
        s = t["summary"]
        view = s[s["metric"].isin(["final_test_loss", "final_test_accuracy", "start_loss",
                                   "steps_to_threshold", "reached"])]
        view = view.assign(interval=[_ci(lo, hi) for lo, hi in zip(view["low"], view["high"])])
        out.append("<details><summary>Across seeds: mean and 95% interval per configuration "
                   "(all metrics in summary.csv)</summary><div class='scroll'>"
                   + _table(view[analysis.CONFIG_KEYS + ["metric", "n_seeds", "mean", "sd",
                                                         "interval", "method", "note"]])
                   + "</div></details>")
    if "fits" in t:
        f = t["fits"]
        agg = (f.groupby(["model", "n_train", "activation", "curve"])
               .agg(slope=("slope", "mean"), r2=("r2", "mean"), seeds=("slope", "count"))
               .reset_index())
        out.append("<details><summary>Least-squares slopes of the epoch losses (nats per epoch, "
                   "mean over seeds; per run in fits.csv)</summary><div class='scroll'>"
                   + _table(agg) + "</div></details>")
    spikes = t["spikes"]
    if len(spikes):
        top = spikes.sort_values("loss", ascending=False).head(50)
        out.append(f"<details><summary>{len(spikes)} batch-loss spikes (highest 50; all in "
                   f"spikes.csv)</summary><div class='scroll'>"
                   + _table(top[["model", "activation", "seed", "n_train", "epoch", "step", "loss",
                                 "baseline", "ratio", "moved", "recovered", "test_change"]])
                   + "</div></details>")
    else:
        out.append("<p>No batch-loss spikes.</p>")
    return out


def _method_section(spike_k, spike_window, threshold) -> list:
    return ["<h2 id='method'>How these numbers are made</h2><ul>",
            "<li>Start: the untrained model's epoch-0 evaluation (train loss over the training "
            "subset). Final: the last stored epoch. Gap: final test minus final train loss (the "
            "train loss of an epoch is the mean of its batch losses, as in the original).</li>",
            f"<li>Steps to threshold: first batch update at which the mean of the last 10 batch "
            f"losses is below {threshold:g} nats. 'Never' is a value: the summary's "
            f"<code>reached</code> rows give the share of seeds that got there, and the mean "
            f"steps is over those seeds only.</li>",
            "<li>Intervals over seeds: t-interval below 5 seeds, percentile bootstrap of the "
            "mean from 5 up; with 2 seeds the t-interval is wide (t = 12.7), with 1 there is "
            "none and findings say inconclusive.</li>",
            "<li>Regression lines: the original's batch line is <code>np.polyfit</code> through "
            "the epoch-0 train loss at update 0 and every batch loss; epoch lines are "
            "least-squares fits of the epoch losses against epoch (0 to the end), with the "
            "slope's standard error and 95% interval.</li>",
            f"<li>Spikes: a batch loss above the median + {spike_k:g} x MAD of the previous "
            f"{spike_window} losses (MAD floored at 1% of the median).</li>",
            "<li>Paired comparisons: paired t-test over the seeds two activations share, "
            "Holm-corrected within each model and training-set size.</li>",
            "<li>Logit bound: an activation on the logits keeps them in its range; logits in "
            "(0, 1) cannot bring 10-class cross-entropy below 1.461 nats, logits in (-1, 1) not "
            "below 0.797.</li></ul>"]


def _table(df: pd.DataFrame) -> str:
    """An HTML table with every cell escaped and numbers right-aligned."""
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for v in rec:
            if isinstance(v, (bool, np.bool_)):
                cells.append(f"<td>{'yes' if v else 'no'}</td>")
            elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                cells.append(f"<td class='num'>{_e(_num(v))}</td>")
            else:
                cells.append(f"<td>{_e('' if v is None or v is pd.NA else v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
            f"</tbody></table></div>")


def _num(v) -> str:
    if isinstance(v, (int, np.integer)):
        return str(v)
    if np.isnan(v):
        return ""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e6 else analysis.fmt(v)


def _ci(low, high) -> str:
    return "" if not (np.isfinite(low) and np.isfinite(high)) else f"[{analysis.fmt(low)}, {analysis.fmt(high)}]"


def _e(x) -> str:
    return html.escape(str(x), quote=True)
