"""The only writer of report files: a self-contained HTML report, its figures, CSV tables, exports."""
import datetime
from pathlib import Path

import pandas as pd

from ..analysis import claims, conditions, robustness, tuning
from ..analysis.tables import CONFIG_KEYS
from ..errors import ActconvError
from ..study.activations import use_stored_activations
from .contents import (claim_tables, curve_tables, done_epochs, figure_tables, question_tables, study_reference_lr,
                       study_search)
from . import interactive
from .figure_jobs import curve_figures, diagnostics_figures, GALLERY, question_figures
from .markup import CSS, esc, figure_html, verdict_table
from .render import cores, FigureWriter
from .sections import (answers_section, config_section, FAIRNESS_INTRO, FINDINGS_INTRO, learning_section,
                       MECHANISMS_INTRO, method_section, PAPERS_INTRO, ranking_section, robustness_section,
                       SAMPLES_INTRO, status_section, tables_section, tuning_section)


def write_report(out_dir, results=None, *, spike_k: float = 10.0, spike_window: int = 50,
                 threshold: float = 0.5, dpi: int = 100, jobs: int | None = None,
                 select: str = "val_loss", tune=("lr",), reference_lr: float | None = None,
                 focus=None) -> Path:
    """Write OUT/report/index.html, figures/*.png and *.svg, summary.csv and the analysis tables.

    Figures are drawn and saved in parallel processes (one per core this process may use).

    Args:
        out_dir: the study's output directory (holds the results store; the report goes
            into its `report/` folder).
        results: the long tables (when None, `loading.report_results(out_dir)`: all but the
            histogram rows, which the one figure that draws them reads from the store).
        spike_k, spike_window: a spike is a batch loss above median + k x MAD of the
            previous `spike_window` losses.
        threshold: loss for steps-to-threshold.
        dpi: resolution of the PNG figures (and of the line art rasterised in the SVGs).
        jobs: processes that draw the figures (default: the cores this process may use).
        select: the validation metric tuning chooses on (val_loss or val_accuracy).
        tune: the training settings tuned per activation (those that vary in the study).
        reference_lr: the fixed setting of the unfair comparison (default: the study's
            `reference_lr`, the notebook's 0.1).
        focus: activations the answers open with (default: the user-defined ones).
    Returns:
        The path of index.html. Works on a study that is still running or partly failed.
    """
    out_dir = Path(out_dir)
    if results is None:
        from .loading import report_results
        results = report_results(out_dir)
    if select not in tuning.SELECT:
        raise ActconvError(f"unknown selection metric {select!r}; choose from: {', '.join(tuning.SELECT)}")
    bad = [a for a in tune if a not in tuning.TUNABLE]
    if bad:
        raise ActconvError(f"cannot tune {bad[0]!r}; choose from: {', '.join(tuning.TUNABLE)}")
    use_stored_activations(results.runs)  # a user's activations: their ranges and plots here too
    everything = conditions.separate_conditions(results)  # perturbed siblings included
    results = robustness.originals(everything)
    thresholds = claims.Thresholds(spike_k=spike_k, spike_window=spike_window, select=select,
                                   tuned_axes=tuple(tune),
                                   reference=(("lr", reference_lr or study_reference_lr(out_dir)),))
    dest = out_dir / "report"
    figdir = dest / "figures"
    try:
        figdir.mkdir(parents=True, exist_ok=True)
        for old in figdir.glob("*"):  # figures of an earlier report may no longer apply
            if old.suffix in (".png", ".svg"):
                old.unlink()
    except OSError as e:
        raise ActconvError(f"cannot write the report into {dest}: {e.strerror}") from None

    # Figures are drawn in worker processes while this process goes on: first the longest,
    # which need only the stored tables, then those drawn from the curve tables while the
    # claims are judged and the questions answered, and last the questions' few figures.
    with FigureWriter(figdir, dpi, jobs or cores()) as writer:
        epochs = done_epochs(results)
        writer.submit(diagnostics_figures(results, epochs))
        t = curve_tables(results, epochs, spike_k, spike_window, threshold)
        search = study_search(out_dir)
        writer.submit(curve_figures(results, figure_tables(results, t, search)))
        t.update(claim_tables(results, t, thresholds))
        t.update(question_tables(everything, results, t, thresholds, search, focus))
        writer.submit(question_figures(t))
        inside, curves, questions = writer.results()
    written = curves + inside + questions  # the page's order
    write_tables(t, dest)
    live = interactive.figures_for(t)
    if live:  # one copy of the bundle beside the page: it opens from disk with no network
        (dest / interactive.BUNDLE).write_bytes(interactive.bundle())
    page = page_html(out_dir, results, t, written, spike_k, spike_window, threshold, live)
    index = dest / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def write_tables(t, dest: Path) -> None:
    empty = pd.DataFrame(columns=CONFIG_KEYS + ["metric", "n_seeds", "mean", "sd", "low",
                                                         "high", "method", "note"])
    t.get("summary", empty).to_csv(dest / "summary.csv", index=False)
    for name in ("per_run", "fits", "batch_fits", "ranking", "paired", "spikes", "findings",
                 "mechanisms", "papers", "samples", "fairness", "tuned", "candidates",
                 "reference_ranking", "ranking_shift", "stability", "claims_reference_tuned",
                 "learning_curves", "robustness", "recurrence", "perturbation_variance", "focus"):
        if name in t:
            t[name].to_csv(dest / f"{name}.csv", index=False)


def page_html(out_dir, results, t, figures, spike_k, spike_window, threshold, live=()) -> str:
    """The page, ordered by question: the answers, then the tables and figures behind each
    answer, then the study's runs and configuration, then every figure, collapsed."""
    runs = results.runs
    studies = sorted(map(str, runs["study"].dropna().unique())) if "study" in runs.columns else []
    title = "actconv report: " + (", ".join(studies) if studies else "unnamed study")
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{esc(title)}</title><style>{CSS}</style>",
             f"<script src='{interactive.BUNDLE}'></script>" if live else "",
             "</head><body>",
             f"<h1>{esc(title)}</h1>",
             f"<p class='meta'>Results in <code>{esc(Path(out_dir).resolve())}</code>; written "
             f"{esc(now)}. Figures and tables are also in <code>figures/</code> and the CSV files "
             f"next to this page.</p>"]
    parts += answers_section(t)  # the report opens with what the study says
    backing = {}
    for f in live:
        backing.setdefault(f.anchor, []).append(live_html(f))
    parts += ranking_section(t) + backing.pop("ranking", [])
    parts += tuning_section(t) + backing.pop("tuning", [])
    parts += learning_section(t) + backing.pop("learning", [])
    parts += verdict_table("papers", "Published claims, checked", PAPERS_INTRO, t.get("papers"),
                            claims.labels(claims.PAPERS))
    parts += verdict_table("findings", "The original findings, checked", FINDINGS_INTRO, t["findings"])
    parts += verdict_table("mechanisms", "Mechanisms, measured", MECHANISMS_INTRO, t.get("mechanisms"))
    parts += verdict_table("claims-samples", "Does the comparison change with n?", SAMPLES_INTRO,
                            t.get("samples"))
    parts += verdict_table("claims-fairness", "Does the comparison survive tuning?", FAIRNESS_INTRO,
                            t.get("fairness"))
    parts += robustness_section(t)
    parts += [html for group in backing.values() for html in group]
    parts += status_section(runs)
    parts += config_section(runs)
    parts += all_figures(figures)
    parts += tables_section(t, threshold)
    parts += method_section(spike_k, spike_window, threshold)
    if live:
        parts.append(f"<script>{DRAW}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)


def all_figures(figures) -> list:
    """Every static figure, by topic, in one collapsed section (the activation gallery first)."""
    if not [f for f in figures if f[0] != GALLERY]:
        return ["<h2 id='figures'>All figures</h2><p>No finished runs yet: nothing to draw.</p>"]
    first = {GALLERY: 0}
    for sec, *_ in figures:
        first.setdefault(sec, len(first))
    out = [f"<h2 id='figures'>All figures</h2><details id='all-figures'><summary>All {len(figures)} "
           f"figures, by topic (click to open)</summary>"]
    section = None
    for sec, stem, caption, png in sorted(figures, key=lambda f: first[f[0]]):  # a section once
        if sec != section:
            out.append(f"<h3 id='gallery'>{esc(sec)}</h3>" if sec == GALLERY else f"<h3>{esc(sec)}</h3>")
            section = sec
        out.append(figure_html(stem, caption, png))
    out.append("</details>")
    return out


def live_html(f) -> str:
    """An interactive figure: its spec as JSON beside an empty div that DRAW fills."""
    return (f"<figure class='live' id='live-{esc(f.slug)}'><div class='plotly-figure' "
            f"data-spec='spec-{esc(f.slug)}'></div><script type='application/json' id='spec-{esc(f.slug)}'>"
            f"{interactive.spec_json(f.spec)}</script><figcaption>{esc(f.caption)}</figcaption></figure>")


# Draws every interactive figure once the page has loaded; without the bundle (a page copied
# alone) the figures say so and the static ones under "All figures" remain.
DRAW = """
document.querySelectorAll('.plotly-figure').forEach(function (div) {
  var spec = JSON.parse(document.getElementById(div.dataset.spec).textContent);
  if (typeof Plotly === 'undefined') {
    div.textContent = 'Interactive figure: needs plotly.min.js beside this page.';
    return;
  }
  Plotly.newPlot(div, spec.data, spec.layout, {responsive: true, displaylogo: false});
});
"""
