"""The page's sections past the Answers, by topic: runs, configuration, rankings, tuning, learning
curves, robustness, tables and method."""

import numpy as np
import pandas as pd

from ..analysis import stats as analysis, claims
from ..analysis.tables import CONFIG_KEYS, fmt
from ..study.activations import logit_loss_floor
from .markup import esc, html_table, interval_text
from . import answers

STATUSES = ("done", "diverged", "failed", "running", "pending")


def status_section(runs: pd.DataFrame) -> list:
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
        out.append(f"<p>Unknown statuses: {esc(', '.join(map(str, others)))}.</p>")
    by_model = runs.pivot_table(index="model", columns="status", values="run_id", aggfunc="count",
                                fill_value=0)
    by_model = by_model.reindex(columns=[s for s in STATUSES if s in by_model.columns] + others)
    out.append(html_table(by_model.reset_index()))
    cols = ["run_id", "model", "activation", "seed", "n_train"]
    failed = runs[runs["status"] == "failed"]
    if len(failed):
        out.append(f"<details open><summary>{len(failed)} failed run(s)</summary>"
                   + html_table(failed[cols + ["error"]].head(200)) + "</details>")
    diverged = runs[runs["status"] == "diverged"]
    if len(diverged):
        out.append(f"<details open><summary>{len(diverged)} diverged run(s) (a non-finite loss "
                   f"stopped them)</summary>" + html_table(diverged[cols + ["diverged_step"]].head(200))
                   + "</details>")
    pending = runs[runs["status"].isin(["pending", "running"])]
    if len(pending):
        out.append(f"<details><summary>{len(pending)} missing run(s)</summary>"
                   + html_table(pending[cols + ["status"]].head(200)) + "</details>")
    return out


def config_section(runs: pd.DataFrame) -> list:
    if runs.empty:
        return []
    rows = []  # one column per model, one row per setting: narrow enough for any page
    for model, g in runs.groupby("model", sort=True):
        row = {"model": model}
        for col in ("model_kind", "activate_logits", "hidden_units", "hidden_layers", "dataset",
                    "epochs", "batch_size", "optimizer", "lr", "engine", "torch_version",
                    "device", "threads", "dtype", "parameters", "activation_modules",
                    "replaced_activations"):  # the last three: as built, per activation (PReLU adds)
            if col in ("activate_logits", "hidden_units", "hidden_layers") and "model_kind" in g.columns \
                    and not g["model_kind"].isin(["mlp", "tinyvgg"]).any():
                row[col] = ""  # the MLP's and TinyVGG's knobs: a ResNet or a timm network has none
            elif col in g.columns:
                row[col] = ", ".join(str(v) for v in sorted(g[col].dropna().unique(), key=str))
        row["activations"] = g["activation"].nunique()
        row["seeds"] = ", ".join(str(s) for s in sorted(g["seed"].unique()))
        row["n_train"] = ", ".join(str(n) for n in sorted(g["n_train"].unique()))
        rows.append(row)
    table = pd.DataFrame(rows).set_index("model").T.rename_axis("setting").reset_index()
    return ["<h2 id='config'>Configuration</h2>", html_table(table)]


FINDINGS_INTRO = ("Each claim of the original notebook, judged from this study's finished runs. "
                  "<em>Inconclusive</em> means the data cannot decide (an activation or model missing, "
                  "one seed, or an interval that straddles the threshold); the numbers say why.")


def floor_text(lo: float, hi: float) -> str:
    """The cross-entropy floor of logits in (lo, hi), as the prose quotes it."""
    return f"{logit_loss_floor(lo, hi):.3f}"


PAPERS_INTRO = ("This study is a paper preset: each published claim, judged from its finished runs "
                "(<em>reproduced</em> needs the claim to hold in at least 80% of the paired seeds).")
MECHANISMS_INTRO = ("The explanations the original offered, measured with <code>--diagnostics</code> "
                    "(per-layer statistics on a fixed probe batch): a flat loss is blamed on saturation "
                    "only when saturated units or vanishing gradients are measured; bounded activations "
                    "on the logits are held back by the cross-entropy floor their range allows "
                    f"({floor_text(0, 1)} nats for logits in (0, 1), {floor_text(-1, 1)} for (-1, 1), "
                    f"{claims.common.N_CLASSES} classes).")


SAMPLES_INTRO = ("Is an activation's advantage a small-data effect? (n1) a permutation test of the "
                 "activation x n interaction on final test loss (seeds as blocks), Kendall's tau "
                 "between the rankings at the smallest and largest n and the activations that move; "
                 "(n2) the notebook's \"SELU ends among the lowest\" at each n on its own.")
FAIRNESS_INTRO = ("A comparison at one learning rate measures the activation and its preferred step "
                  "size at once. (r1) the ranking at the reference setting against each activation "
                  "at its best value, chosen on the validation split; the test set is read only "
                  "after the choice.")


def answers_section(t) -> list:
    found = t.get("answers") or []
    if not found:
        return []
    items = "".join(f"<li>{esc(a.text)} <a href='#{esc(a.anchor)}'>evidence</a></li>" for a in found)
    return ["<h2 id='answers'>Answers</h2>",
            "<p>What this study says, each sentence from the verdicts and numbers below.</p>",
            f"<ol class='answers'>{items}</ol>", *verdict_grid_html(answers.verdict_grid(t))]


def verdict_grid_html(grid) -> list:
    """Every claim by model at a glance: a badge per verdict, its sub-scope (n, logits) beside it;
    the evidence is in the claims' tables further down."""
    if grid is None or grid.empty:
        return []
    head = "".join(f"<th>{esc(c)}</th>" for c in grid.columns)
    rows = []
    for claim, cells in grid.iterrows():
        tds = []
        for cell in cells:
            if not isinstance(cell, list):
                tds.append("<td></td>")
                continue
            badges = "<br>".join((f"{esc(rest)}: " if rest else "")
                                 + f"<span class='verdict {esc(v.replace(' ', '-'))}'>{esc(v)}</span>"
                                 for rest, v in cell)
            tds.append(f"<td>{badges}</td>")
        rows.append(f"<tr><td>{esc(claim)}</td>{''.join(tds)}</tr>")
    return ["<h3 id='verdicts'>Every claim, by model</h3>",
            f"<div class='wide'><table class='verdict-grid'><thead><tr><th>claim</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>"]


def tuning_section(t) -> list:
    if "tuned" not in t or t["tuned"].empty:
        return []
    axes = t["tuning_axes"]
    tuned = t["tuned"]
    view = tuned[["condition", "n_train", "activation", *[f"best_{a}" for a in axes],
                  *[c for c in ("val_loss", "val_accuracy") if c in tuned], "test_loss"]].copy()
    view["test loss 95% CI"] = [interval_text(lo, hi) for lo, hi in zip(tuned["test_loss_low"], tuned["test_loss_high"])]
    view["test accuracy"] = tuned["test_accuracy"]
    view["test accuracy 95% CI"] = [interval_text(lo, hi) for lo, hi in
                                    zip(tuned["test_accuracy_low"], tuned["test_accuracy_high"])]
    view["rank"] = tuned["rank"]
    searched = "n_confirm_seeds" in tuned  # a search: chosen on its tuning seeds, tested on fresh ones
    for col in (("tune_test_loss", "n_confirm_seeds", "winners_curse") if searched else ()) + ("edge",):
        if col in tuned:
            view[col] = tuned[col]
    then = ("; the test metrics there come from the confirm seeds alone, beside the tuning seeds' "
            "test loss and the difference, the winner's curse" if searched else ", then the test metrics there")
    out = ["<h2 id='tuning'>Tuned per activation</h2>",
           f"<p>For every condition, training-set size and activation, the value of "
           f"{esc(', '.join(axes))} with the best mean validation score over "
           f"{'the tuning seeds' if searched else 'seeds'} (a value at which any seed diverged or "
           f"ended above its start is never chosen){then} (<code>tuned.csv</code>); <code>edge</code> "
           f"names a choice at the edge of what was tried: widen the range. Beside it, the ranking at "
           f"the reference setting and how far each activation moves.</p>", html_table(view)]
    if "ranking_shift" in t and len(t["ranking_shift"]):
        out += ["<h3>Reference ranking against tuned ranking</h3>", html_table(t["ranking_shift"])]
    if "stability" in t and len(t["stability"]):
        out += ["<h3>Best and mean over the grid (Eger et al.)</h3>",
                "<p>The tuned test accuracy beside the mean over every value of the grid (a "
                "diverged run counts as chance): a high mean is an activation that works without "
                "tuning.</p>", html_table(t["stability"])]
    side = t.get("claims_reference_tuned")
    if side is not None and len(side):
        cols = [c for c in ("id", "scope", "verdict_reference", "verdict_tuned") if c in side]
        out += ["<h3>The notebook's claims at the reference setting and tuned</h3>", html_table(side[cols])]
    return out


def learning_section(t) -> list:
    lc = t.get("learning_curves")
    if lc is None or lc.empty:
        return []
    cols = [c for c in lc.columns if not c.endswith("_status") and c not in ("rmse",)]
    return ["<h2 id='learning'>Learning curves in n</h2>",
            "<p>Final test loss against the training-set size, per condition and activation: a "
            "power law <code>a n^-b + c</code> through the across-seed means (the two-parameter "
            "<code>a n^-b</code> where the offset cannot be identified: fewer than four sizes, or "
            "a fitted offset at 0 or at the smallest loss), bootstrap intervals over seeds for the "
            "exponent b, and the images needed to reach 80% and 90% test accuracy, interpolated in "
            "log n (<code>learning_curves.csv</code>).</p>", html_table(lc[cols])]


def robustness_section(t) -> list:
    rob = t.get("robustness")
    if rob is None or rob.empty:
        return []
    out = ["<h2 id='robustness'>Robustness to one-bit perturbations</h2>",
           "<p>Each verdict recomputed with perturbed siblings in place of their originals "
           "(<code>init</code>: one weight's lowest mantissa bit flipped; <code>order</code>: "
           "another batch order): in how many replica sets it holds "
           "(<code>robustness.csv</code>).</p>", html_table(rob)]
    rec = t.get("recurrence")
    if rec is not None and len(rec):
        out += ["<h3>Do divergences and spikes recur in the siblings?</h3>", html_table(rec)]
    var = t.get("perturbation_variance")
    if var is not None and len(var):
        out += ["<h3>Variance from a perturbation alone, beside the variance across seeds</h3>",
                "<p>Ratio near 1: one bit does as much as a new seed (Summers &amp; Dinneen).</p>",
                html_table(var)]
    return out


def ranking_section(t) -> list:
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
        out.append(f"<details><summary>{esc(model)}, n_train {esc(n)}: best "
                   f"{esc(g['activation'].iloc[0])}; Kendall's W {esc(fmt(w))}; "
                   f"{esc(paired)}</summary>"
                   + html_table(view) + "</details>")
    return out


def tables_section(t, threshold) -> list:
    out = ["<h2 id='tables'>Tables</h2>"]
    if "summary" in t:
        s = t["summary"]
        view = s[s["metric"].isin(["final_test_loss", "final_test_accuracy", "start_loss",
                                   "steps_to_threshold", "reached"])]
        view = view.assign(interval=[interval_text(lo, hi) for lo, hi in zip(view["low"], view["high"])])
        out.append("<details><summary>Across seeds: mean and 95% interval per configuration "
                   "(all metrics in summary.csv)</summary><div class='scroll'>"
                   + html_table(view[CONFIG_KEYS + ["metric", "n_seeds", "mean", "sd",
                                                         "interval", "method", "note"]])
                   + "</div></details>")
    if "fits" in t:
        f = t["fits"]
        agg = (f.groupby(["model", "n_train", "activation", "curve"])
               .agg(slope=("slope", "mean"), r2=("r2", "mean"), seeds=("slope", "count"))
               .reset_index())
        out.append("<details><summary>Least-squares slopes of the epoch losses (nats per epoch, "
                   "mean over seeds; per run in fits.csv)</summary><div class='scroll'>"
                   + html_table(agg) + "</div></details>")
    spikes = t["spikes"]
    if len(spikes):
        top = spikes.sort_values("loss", ascending=False).head(50)
        out.append(f"<details><summary>{len(spikes)} batch-loss spikes (highest 50; all in "
                   f"spikes.csv)</summary><div class='scroll'>"
                   + html_table(top[["model", "activation", "seed", "n_train", "epoch", "step", "loss",
                                 "baseline", "ratio", "moved", "recovered", "test_change"]])
                   + "</div></details>")
    else:
        out.append("<p>No batch-loss spikes.</p>")
    return out


def method_section(spike_k, spike_window, threshold) -> list:
    return ["<h2 id='method'>How these numbers are made</h2><ul>",
            "<li>Start: the untrained model's epoch-0 evaluation (train loss over the training "
            "subset). Final: the last stored epoch. Gap: final test minus final train loss (the "
            "train loss of an epoch is the mean of its batch losses, as in the original).</li>",
            f"<li>Steps to threshold: first batch update at which the mean of the last 10 batch "
            f"losses is below {threshold:g} nats. 'Never' is a value: the summary's "
            f"<code>reached</code> rows give the share of seeds that got there, and the mean "
            f"steps is over those seeds only.</li>",
            f"<li>Intervals over seeds: t-interval below {analysis.MIN_BOOTSTRAP} seeds, percentile "
            f"bootstrap of the mean from {analysis.MIN_BOOTSTRAP} up; with 2 seeds the t-interval "
            "is wide (t = 12.7), with 1 there is none and findings say inconclusive.</li>",
            "<li>Regression lines: the original's batch line is <code>np.polyfit</code> through "
            "the epoch-0 train loss at update 0 and every batch loss; epoch lines are "
            "least-squares fits of the epoch losses against epoch (0 to the end), with the "
            "slope's standard error and 95% interval.</li>",
            f"<li>Spikes: a batch loss above the median + {spike_k:g} x MAD of the previous "
            f"{spike_window} losses (MAD floored at {analysis.MAD_FLOOR:.0%} of the median).</li>",
            "<li>Paired comparisons: paired t-test over the seeds two activations share, "
            "Holm-corrected within each model and training-set size.</li>",
            f"<li>Logit bound: an activation on the logits keeps them in its range; logits in "
            f"(0, 1) cannot bring {claims.common.N_CLASSES}-class cross-entropy below {floor_text(0, 1)} "
            f"nats, logits in (-1, 1) not below {floor_text(-1, 1)}.</li></ul>"]

