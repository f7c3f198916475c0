"""What the report holds: every table, computed once from the analysis before anything is drawn
or written (per-run metrics, curves, fits, spikes; rankings and claims; tuning, learning curves
and robustness; the answers built on all of them)."""
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis import stats as analysis, claims, confirm, focus, learning, robustness, tuning
from ..analysis.tables import has_rows, only, relabel
from ..run.store import n_classes_of
from . import answers

SUMMARY_METRICS = ["start_loss", "final_train_loss", "final_test_loss", "final_train_accuracy",
                   "final_test_accuracy", "gap", "auc_train_loss", "auc_test_loss",
                   "steps_to_threshold", "reached"]


def done_epochs(results) -> pd.DataFrame:
    """The epoch rows of the runs that finished without diverging."""
    runs = results.runs
    return results.epochs[results.epochs["run_id"].isin(runs.loc[runs["status"] == "done", "run_id"])]


def curve_tables(results, epochs, spike_k, spike_window, threshold) -> dict:
    """The per-run metrics, curves, fits and spikes: what the figures are drawn from."""
    runs = results.runs
    status = runs.set_index("run_id")["status"] if len(runs) else pd.Series(dtype=str)
    done = status.index[status == "done"]
    finished = status.index[status.isin(["done", "diverged"])]
    # The batches may be rows left in the store: each per-run analysis reads them a chunk of
    # runs at a time, and the figures read the few runs they draw.
    batches = only(results.batches, done)
    # Batch figures also show diverged runs: their explosion is what a reader looks for.
    spiky = only(results.batches, finished)
    t = {"epochs": epochs, "batches": batches, "finished_batches": spiky}
    if has_rows(spiky):  # stored rows: one pass over them for all three analyses
        analysis.batch_analyses(spiky, results.epochs, threshold=threshold, k=spike_k, window=spike_window)
    if has_rows(spiky):  # once for the batch figures (diverged runs too) and the done runs' table
        t["finished_fits"] = analysis.batch_fits(results.epochs, spiky)
    if len(epochs):
        t["per_run"] = analysis.run_metrics(epochs, batches if has_rows(batches) else None,
                                            threshold=threshold)
        t["fits"] = analysis.epoch_fits(epochs)
        t["curves"] = analysis.curve_intervals(epochs, ["train_loss", "test_loss", "train_accuracy",
                                                        "test_accuracy"])
    if has_rows(batches):
        fits = t["finished_fits"]
        t["batch_fits"] = fits[fits["run_id"].isin(done)].reset_index(drop=True)
    t["spikes"] = (analysis.spikes(spiky, results.epochs, k=spike_k, window=spike_window)
                   if has_rows(spiky) else pd.DataFrame(columns=analysis.SPIKE_COLUMNS))
    return t


def figure_tables(results, t, search) -> dict:
    """What the curve figures draw. After a search: the confirm seeds only, each cell's confirm
    runs under their model's name (every activation and size at its own chosen setting), so
    the page draws one figure set per model rather than one per trial's setting (seed-fair:
    499 figures); the trials are summarised by the sensitivity figure and candidates.csv."""
    if search is None or "per_run" not in t or results.runs.empty:
        return t
    runs = results.runs
    per_run = tuning.final_metrics(runs[runs["status"].isin(["done", "diverged"])], results.epochs)
    if not per_run["final_val_loss"].notna().any():
        return t
    chosen = confirm.confirmed(per_run, search, search.select)
    mapping = dict(confirm.confirm_runs(per_run, chosen, search)[["run_id", "condition"]].to_numpy())
    keep = set(per_run.loc[~per_run["seed"].isin(search.tune_seeds), "run_id"])  # and any reference runs

    def pick(table):
        return relabel(only(table, keep), mapping)

    out = {k: pick(t[k]) for k in ("epochs", "finished_batches", "spikes", "per_run", "finished_fits") if k in t}
    if len(out["epochs"]):
        out["fits"] = analysis.epoch_fits(out["epochs"])
        out["curves"] = analysis.curve_intervals(out["epochs"], ["train_loss", "test_loss", "train_accuracy",
                                                                 "test_accuracy"])
    return out


def claim_tables(results, t, thresholds) -> dict:
    """The ranking, the paired tests and every claim's verdicts."""
    out = {}
    if "per_run" in t:
        metrics = [m for m in SUMMARY_METRICS if m in t["per_run"].columns]
        out["summary"] = analysis.aggregate(t["per_run"], metrics)
        out["ranking"] = analysis.rank_activations(t["per_run"], "final_test_loss")
        out["paired"] = analysis.paired_comparisons(t["per_run"], "final_test_loss")
    for name, ids in (("findings", claims.ORIGINAL), ("mechanisms", claims.MECHANISMS),
                      ("papers", claims.PAPERS), ("samples", claims.SAMPLES),
                      ("fairness", claims.FAIRNESS)):
        out[name] = claims.evaluate(results, ids, thresholds)
    return out


def study_search(out_dir: Path):
    """The search (a SearchSpec) registered with the store's study, or None."""
    from ..errors import StoreError
    from ..run.store import study_specs
    from ..study.search import from_dict
    try:
        specs = study_specs(out_dir)
    except StoreError:  # results given without a store of their own
        return None
    found = [s["search"] for s in specs if s.get("search")]
    return from_dict(found[-1]) if found else None


def study_reference_lr(out_dir: Path) -> float:
    """The study's `reference_lr` as registered in the store (0.1, the notebook's, by default)."""
    from ..errors import StoreError
    from ..run.store import study_specs
    try:
        specs = study_specs(out_dir)
    except StoreError:  # results given without a store of their own
        return tuning.REFERENCE["lr"]
    values = {float(s["reference_lr"]) for s in specs if s.get("reference_lr")}
    return values.pop() if len(values) == 1 else tuning.REFERENCE["lr"]


def question_tables(everything, results, t, th, search=None, focus_names=None) -> dict:
    """The fairness, sample-size and robustness tables (and the answers built on all tables);
    with a `search` (SearchSpec) the tuned table is chosen on its tuning seeds and scored on
    its confirm seeds, and robustness reads the confirm runs and their siblings; `focus_names`:
    the activations the answers open with (default: the user's own)."""
    out = {}
    runs = results.runs
    finished = runs[runs["status"].isin(["done", "diverged"])] if len(runs) else runs
    view, mapping = None, {}
    if len(finished) and "config_json" in finished:
        per_run = tuning.final_metrics(finished, results.epochs)
        axes = ([a for a in search.axes if a in per_run] if search else
                [a for a in th.tuned_axes if a in per_run and per_run[a].astype(str).nunique() > 1])
        if axes and per_run["final_val_loss"].notna().any():
            if search:
                tune_runs = per_run[per_run["seed"].isin(search.tune_seeds)]
                # the search's own metric: its confirm runs are at the setting that one chose
                out["candidates"] = tuning.candidates(tune_runs, axes, search.select)
                out["tuned"] = confirm.confirmed(per_run, search, search.select, confidence=th.confidence)
                view = focus.view(per_run, confirmed=confirm.confirm_runs(per_run, out["tuned"], search))
                mapping = dict(zip(view["run_id"], view["condition"]))
                if mapping:
                    out.update(_confirmed_tables(results, t, mapping, th))
            else:
                out["candidates"] = tuning.candidates(per_run, axes, th.select)
                out["tuned"] = confirm.mark_edges(
                    tuning.tune(per_run, axes, th.select, confidence=th.confidence),
                    confirm.grid_space(out["candidates"], axes))
                view = focus.view(per_run, tuned_ids=tuning.tuned_runs(per_run, out["tuned"], axes))
            # After a search the reference view reads the confirm seeds too (the runs that
            # `reference = true` trains), so the two rankings compare the same seeds.
            ref_runs = per_run[~per_run["seed"].isin(search.tune_seeds)] if search else per_run  # a grid's own confirm seeds too
            reference = search_reference(th, axes) if search else dict(th.reference)
            out["reference_ranking"] = tuning.at_reference(ref_runs, reference, axes=axes)
            out["ranking_shift"] = tuning.ranking_shift(out["reference_ranking"], out["tuned"],
                                                        places=th.rank_places)
            if search:
                out["fairness"] = _r1_after_search(out["ranking_shift"], out["reference_ranking"],
                                                   axes, th, reference, search.select)
            chance = 1.0 / n_classes_of(runs)
            tried = per_run[per_run["seed"].isin(search.tune_seeds)] if search else per_run  # every setting tried
            out["stability"] = tuning.stability(tried, out["tuned"], axes, chance=chance)
            out["tuning_axes"] = axes
            out["claims_reference_tuned"] = _claims_side_by_side(
                results, ref_runs, out["tuned"], axes, th, reference,
                tuned_ids=dict(zip(view["run_id"], view["condition"])) if search else None)
        names = list(focus_names or focus.user_defined(finished))
        missing = [n for n in names if n not in set(per_run["activation"])]
        if missing:
            from ..errors import ConfigError
            raise ConfigError(f"--focus {missing[0]}: no finished run of that activation; the store "
                              f"has {', '.join(sorted(set(per_run['activation'])))}")
        if names:
            view = focus.view(per_run) if view is None else view
            mine = set(focus.user_defined(finished)) | set(names)
            out["focus"] = focus.focus_tables(view, names, set(per_run["activation"]) - mine,
                                              confidence=th.confidence)
    if "per_run" in t and len(t["per_run"]) and "learning_curves" not in out:
        lc = learning.learning_curves(t["per_run"])
        if len(lc):
            out["learning_curves"] = lc
    robust = _robustness_view(everything, search, mapping)
    if robustness.replica_sets(robust):
        out["robustness"] = robustness.verdict_robustness(
            robust, lambda r: claims.evaluate(r, claims.ORIGINAL + claims.SAMPLES, th))
        out["recurrence"] = robustness.event_recurrence(robust, spike_k=th.spike_k,
                                                        spike_window=th.spike_window)
        out["perturbation_variance"] = robustness.perturbation_variance(robust)
    if "focus" in out:  # the images to 80% come from the learning curves of the same view
        out["focus"] = focus.with_samples_to_target(out["focus"], out.get("learning_curves"))
    out["answers"] = answers.answers({**t, **out})
    return out


def _robustness_view(everything, search, mapping: dict):
    """What the robustness tables read: every run; after a search only the confirm runs at each
    cell's chosen setting (`mapping`: run_id -> condition) and their siblings, labelled alike."""
    if search is None:
        return everything
    return _view(everything, robustness.with_siblings(everything.runs, mapping))


def _confirmed_tables(results, t, mapping: dict, th) -> dict:
    """After a search every test number reads the confirm runs at each cell's chosen setting
    (`mapping`: run_id -> condition): the summary, ranking, paired tests, the notebook's
    findings, the mechanisms, the papers' claims, the claims in n and the learning curves,
    each n at its own setting."""
    out = {}
    if "per_run" in t:
        p = t["per_run"][t["per_run"]["run_id"].isin(set(mapping))]
        p = p.assign(model=p["run_id"].map(mapping))
        metrics = [m for m in SUMMARY_METRICS if m in p.columns]
        out["summary"] = analysis.aggregate(p, metrics)
        out["ranking"] = analysis.rank_activations(p, "final_test_loss")
        out["paired"] = analysis.paired_comparisons(p, "final_test_loss")
        lc = learning.learning_curves(p)
        if len(lc):
            out["learning_curves"], out["curve_runs"] = lc, p  # the figure draws the same runs
    view = _view(results, mapping)
    for name, ids in (("findings", claims.ORIGINAL), ("samples", claims.SAMPLES),
                      ("mechanisms", claims.MECHANISMS), ("papers", claims.PAPERS)):
        out[name] = claims.evaluate(view, ids, th)
    return out


def search_reference(th, axes) -> dict:
    """The reference setting after a search: the study's reference lr, and no momentum and no
    weight decay where those are searched (what `run_search` trains with `reference`)."""
    return {**dict(th.reference), **{a: 0.0 for a in axes if a in ("momentum", "weight_decay")}}


def _r1_after_search(shift, ref, axes, th, reference, select) -> pd.DataFrame:
    """Claim r1 after a search: the reference runs against the confirmed runs, both on the
    confirm seeds."""
    claim = claims.common.REGISTRY["r1"]
    if ref.empty:
        verdicts = [claims.common.Verdict(
            "r1", "all models", claims.common.INCONCLUSIVE,
            f"the reference setting {reference} is not in the grid on the confirm seeds: run the "
            f"search with reference = true (--search-reference)")]
    else:
        verdicts = claims.fairness.shift_verdicts(shift, axes, th, tuple(reference.items()), select)
    return claims.common.verdict_table([(claim, v) for v in verdicts])


def _claims_side_by_side(results, per_run, tuned, axes, th, reference, tuned_ids=None) -> pd.DataFrame:
    """The notebook's claims judged at the `reference` setting and with each activation at its
    tuned value (`tuned_ids`: run_id -> condition, after a search the confirm runs), one row
    per (claim, scope)."""
    label = tuning.fixed_label(per_run, axes)
    ref = tuning.at_reference(per_run, reference, axes=axes)
    keep = per_run.assign(condition=label)
    for a, v in reference.items():
        keep = keep[np.isclose(keep[a].astype(float), float(v))] if a in keep else keep.iloc[0:0]
    views = {"reference": dict(zip(keep["run_id"], keep["condition"])) if len(ref) else {},
             "tuned": tuned_ids if tuned_ids is not None else tuning.tuned_runs(per_run, tuned, axes).to_dict()}
    tables = []
    for name, mapping in views.items():
        if not mapping:
            continue
        view = _view(results, mapping)
        v = claims.evaluate(view, claims.ORIGINAL, th)[["id", "claim", "scope", "verdict", "evidence"]]
        tables.append(v.rename(columns={"verdict": f"verdict_{name}", "evidence": f"evidence_{name}"}))
    if not tables:
        return pd.DataFrame()
    out = tables[0]
    for other in tables[1:]:
        out = out.merge(other, on=["id", "claim", "scope"], how="outer")
    return out


def _view(results, mapping: dict):
    """Results of the runs in `mapping` (run_id -> condition label) with `model` relabelled."""
    import dataclasses
    ids = set(mapping)

    def keep(table):
        return relabel(only(table, ids), mapping)

    return dataclasses.replace(results, runs=keep(results.runs), epochs=keep(results.epochs),
                               batches=keep(results.batches), diagnostics=keep(results.diagnostics))

