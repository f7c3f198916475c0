"""Fairness findings: does a comparison at one fixed learning rate survive tuning?

r1: the ranking at the reference setting (the notebook's lr 0.1) holds when each activation
gets its own best value, chosen on the validation split (never the test set).
"""
from .. import tuning
from ..tables import fmt
from .common import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Claim, Verdict, register

IDS = ["r1"]


def check_r1(results, t) -> list:
    runs = results.runs
    finished = runs[runs["status"].isin(["done", "diverged"])] if len(runs) else runs
    if finished.empty or "config_json" not in finished:
        return [Verdict("r1", "(none)", INCONCLUSIVE, "no finished runs")]
    per_run = tuning.final_metrics(finished, results.epochs)
    axes = [a for a in t.tuned_axes if a in per_run and per_run[a].astype(str).nunique() > 1]
    if not axes:
        return [Verdict("r1", "all models", INCONCLUSIVE,
                        f"no tuned axis varies in this study ({', '.join(t.tuned_axes)})")]
    if per_run["final_val_loss"].isna().all():
        return [Verdict("r1", "all models", INCONCLUSIVE,
                        "no validation split: run the study with --validation V to tune")]
    tuned = tuning.tune(per_run, axes, t.select)
    ref = tuning.at_reference(per_run, dict(t.reference), axes=axes)
    if ref.empty:
        return [Verdict("r1", "all models", INCONCLUSIVE,
                        f"the reference setting {dict(t.reference)} is not in the grid")]
    return shift_verdicts(tuning.ranking_shift(ref, tuned, places=t.rank_places), axes, t)


def shift_verdicts(shift, axes, t, reference=None, select=None) -> list:
    """r1's verdicts from a `tuning.ranking_shift` table (after a search: the reference runs
    and the confirmed runs, on the same confirm seeds)."""
    reference = tuple(reference or t.reference)
    out = []
    for row in shift.itertuples(index=False):
        scope = f"{row.condition}, n={row.n_train}"
        numbers = dict(tau=row.kendall_tau, p=row.p, n_moved=row.n_moved,
                       n_activations=row.n_activations)
        ev = (f"ranking by final test loss at {_setting(reference)} vs each activation at its "
              f"best {', '.join(axes)} chosen on {select or t.select}: Kendall's tau {fmt(row.kendall_tau)} "
              f"over {row.n_activations} activations; moving {t.rank_places}+ places: "
              f"{row.moved or 'none'}")
        if row.n_activations < 3:
            verdict = INCONCLUSIVE
        elif row.n_moved == 0 and row.kendall_tau >= t.tau_holds:
            verdict = SUPPORTED
        elif row.n_moved > 0 and row.kendall_tau < t.tau_holds:
            verdict = NOT_SUPPORTED
        else:
            verdict = INCONCLUSIVE
        out.append(Verdict("r1", scope, verdict, ev, numbers))
    return out


def _setting(reference) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in reference)


register(Claim("r1", "The ranking at the notebook's learning rate holds when lr is tuned per "
                     "activation", check_r1))
