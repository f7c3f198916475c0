"""The mechanisms behind the original findings (m1-m3), measured with `--diagnostics`.

Each check reads `results.runs` (run_id, status, model, activation, seed, n_train,
model_kind, activate_logits, init), `results.epochs` (run_id, epoch, train_loss) and
`results.diagnostics`; only runs with status 'done' count.
"""
import numpy as np
import pandas as pd

from ...run.store import n_classes_of
from ...study import activations as acts
from ..diagnostics import OUTPUT, SATURATION, is_hidden, probe_table, self_normalisation, with_runs
from ..tables import RUN_KEYS, flag, fmt, has_rows, need, only, rows
from .common import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Claim, Verdict, bounding_floor, is_flat, pinned,
                     register)

IDS = ["m1", "m2", "m3"]


def _done(results):
    """(finished runs, their falls, their diagnostics)."""
    runs = results.runs
    need(runs, "runs", RUN_KEYS + ["status", "model_kind", "activate_logits"])
    runs = runs[runs["status"] == "done"]
    falls = _falls(results.epochs[results.epochs["run_id"].isin(runs["run_id"])])
    diag = only(results.diagnostics, runs["run_id"])  # rows left in the store stay there until read
    return runs, falls, diag


def _falls(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per run: start (epoch-0 train loss), final (last epoch's), fall = start - final."""
    e = epochs.sort_values(["run_id", "epoch"]).groupby("run_id")
    out = pd.DataFrame({"start": e["train_loss"].first(), "final": e["train_loss"].last(),
                        "epochs": e["epoch"].max()})
    return out.assign(fall=out["start"] - out["final"])


def _by_activation(runs: pd.DataFrame, falls: pd.DataFrame, column: str) -> pd.Series:
    """Mean over the runs of each activation of one column of `falls`."""
    j = runs[["run_id", "activation"]].join(falls, on="run_id")
    return j.groupby("activation")[column].mean()


def _list(series: pd.Series, unit: str = "") -> str:
    return ", ".join(f"{k} {fmt(v)}{unit}" for k, v in series.items()) or "none"


# -- m1: saturation or vanishing gradients -------------------------------------------------------

def check_m1(results, t) -> list:
    runs, falls, diag = _done(results)
    out = [Verdict("m1", model, *_m1(runs[runs["model"] == model], falls, diag, t))
           for model in sorted(runs.loc[runs["activation"] == "sigmoid", "model"].unique())]
    return out or [Verdict("m1", "all models", INCONCLUSIVE, "no finished sigmoid runs")]


def _m1(runs, falls, diag, t):
    fall = _by_activation(runs, falls, "fall").dropna()
    if "sigmoid" not in fall.index:
        return INCONCLUSIVE, "no finished sigmoid runs with epoch losses", {}
    others = fall.drop("sigmoid")
    if others.empty:
        return INCONCLUSIVE, "sigmoid is the only activation: nothing to compare its loss with", {}
    share = fall["sigmoid"] / others.median() if others.median() > 0 else np.nan
    flat = is_flat(fall["sigmoid"], others.median(), t)
    head = (f"train loss falls {fmt(fall['sigmoid'])} nats for sigmoid vs a median "
            f"{fmt(others.median())} for {len(others)} others ({fmt(share * 100)}% of it: "
            f"{'flat' if flat else 'not flat'}, flat means below {t.flat_share:.0%})")
    numbers = dict(sigmoid_fall=fall["sigmoid"], others_median_fall=others.median(),
                   n_others=len(others), fall_share=share, flat_share=t.flat_share)
    sig_ids = runs.loc[runs["activation"] == "sigmoid", "run_id"]
    if not has_rows(only(diag, sig_ids)):
        return INCONCLUSIVE, (head + "; no diagnostics for the sigmoid runs, so saturation and "
                              "gradients were not measured: run the study with --diagnostics"), numbers
    sat, out_sat, ratio = _m1_measures(diag, runs)
    sig_sat = sat.get("sigmoid", np.nan)
    sig_ratio = ratio.get("sigmoid", np.nan)
    other_ratio = ratio.drop("sigmoid", errors="ignore").median()
    rel = sig_ratio / other_ratio if other_ratio > 0 else np.nan
    saturating, vanishing = bool(sig_sat >= t.saturated_share), bool(rel < t.vanishing)
    numbers |= dict(sigmoid_saturated=sig_sat, sigmoid_grad_ratio=sig_ratio,
                    others_grad_ratio=other_ratio, grad_ratio_rel=rel,
                    saturated_share=t.saturated_share, vanishing=t.vanishing)
    ev = (head + f"; saturated entries in sigmoid's worst hidden layer (derivative < "
          f"{SATURATION:.0%} of its maximum, mean over epochs 1..end and seeds): {fmt(sig_sat * 100)}% "
          f"(others: {_list(sat.drop('sigmoid', errors='ignore') * 100, '%')})")
    if "sigmoid" in out_sat.index and np.isfinite(out_sat["sigmoid"]):
        ev += f"; saturated sigmoid outputs on the logits: {fmt(out_sat['sigmoid'] * 100)}%"
        numbers["sigmoid_output_saturated"] = out_sat["sigmoid"]
    ev += (f"; first/last layer gradient-norm ratio (median over steps and seeds): sigmoid "
           f"{fmt(sig_ratio)} vs others' median {fmt(other_ratio)} ({fmt(rel)}x; vanishing means "
           f"below {t.vanishing:g}x)")
    logits = bool(flag(runs, "activate_logits").any())
    if not flat:
        return NOT_SUPPORTED, ev + (". Sigmoid's loss is not flat here, so there is nothing for "
                                    "saturation to explain"), numbers
    if saturating or vanishing:
        why = " and ".join(w for w, on in (("saturated units", saturating),
                                           ("vanishing gradients", vanishing)) if on)
        return SUPPORTED, ev + f". The flat loss comes with measured {why}", numbers
    means = probe_table(rows(only(diag, sig_ids), metrics=("act_mean",)), runs[runs["activation"] == "sigmoid"],
                        metrics=("act_mean",))
    means = means.loc[is_hidden(means["layer"]), "act_mean"].mean()
    numbers["sigmoid_hidden_mean"] = means
    return NOT_SUPPORTED, ev + (
        ". Neither saturation nor vanishing gradients is measured"
        + ("; the sigmoid on the logits bounds the loss instead (m2)" if logits else "")
        + f"; what is measured: sigmoid's hidden activations average {fmt(means)} (not centred "
        "on 0) and its derivative never exceeds 0.25, which slows SGD without any saturation"), numbers


def _m1_measures(diag, runs: pd.DataFrame):
    """Per activation: saturated share of the worst hidden layer (mean over epochs 1..end, then
    over seeds), saturated share of the output layer, and the median over seeds of each seed's
    median first/last gradient-norm ratio. Read one activation's runs at a time (rows left
    in the store: memory follows one activation, not the study)."""
    sat, out_sat, ratio = {}, {}, {}
    for act, r in runs.groupby("activation", sort=True):
        d = rows(only(diag, r["run_id"]), metrics=("saturated", "grad_ratio"))
        p = probe_table(d, r, metrics=("saturated",))
        p = p[p["epoch"] >= 1]
        hidden = p[is_hidden(p["layer"])]
        worst = hidden.groupby(["seed", "layer"])["saturated"].mean().groupby("seed").max()  # over epochs
        if len(worst):
            sat[act] = worst.mean()
        out = p.loc[p["layer"] == OUTPUT, "saturated"]
        if len(out):
            out_sat[act] = out.mean()
        g = with_runs(d[d["metric"] == "grad_ratio"], r)
        if len(g):
            ratio[act] = g.groupby("seed")["value"].median().median()
    return (pd.Series(sat, dtype=float), pd.Series(out_sat, dtype=float), pd.Series(ratio, dtype=float))


# -- m2: the logit floor ------------------------------------------------------------------------

def check_m2(results, t) -> list:
    runs, falls, _ = _done(results)
    logits = runs[flag(runs, "activate_logits")]
    out = []
    for model in sorted(logits["model"].unique()):
        for (lo, hi), members in _bounded_groups(logits.loc[logits["model"] == model, "activation"], t):
            out.append(Verdict("m2", f"{model}, logits in ({lo:g}, {hi:g})",
                               *_m2(model, lo, hi, members, runs, falls, t)))
    if logits.empty:
        out.append(Verdict("m2", "all models", INCONCLUSIVE, "no finished model with the activation "
                           "on the logits (activate_logits = true)"))
    return out


def _bounded_groups(activations: pd.Series, t):
    """(range, [activations]) for each logit range with a floor worth the name."""
    groups = {}
    for a in sorted(set(activations)):
        if bounding_floor(a, t) is not None:
            groups.setdefault(acts.output_range(a), []).append(a)
    return sorted(groups.items())


def _m2(model, lo, hi, members, runs, falls, t):
    mine = runs[runs["model"] == model]
    floor = acts.logit_loss_floor(lo, hi, n_classes_of(mine))
    unbounded = [a for a in mine["activation"].unique() if acts.output_range(a) is None]
    others = _by_activation(mine[mine["activation"].isin(unbounded)], falls, "fall").median()
    kind = mine["model_kind"].iloc[0]
    twins = runs[(runs["model_kind"] == kind) & ~flag(runs, "activate_logits")
                 & runs["n_train"].isin(mine["n_train"].unique())]
    parts, verdicts = [], []
    numbers = dict(floor=floor, unbounded_median_fall=others, n_unbounded=len(unbounded))
    for a in members:
        start = _by_activation(mine[mine["activation"] == a], falls, "start").get(a, np.nan)
        final = _by_activation(mine[mine["activation"] == a], falls, "final").get(a, np.nan)
        room = start - floor
        numbers |= {f"{a}_start": start, f"{a}_final": final, f"{a}_room": room}
        text = (f"{a}: epoch-0 loss {fmt(start)}, so it can fall at most {fmt(room)} nats; it ends at "
                f"{fmt(final)} ({fmt(final - floor)} above the floor)")
        twin = _by_activation(twins[twins["activation"] == a], falls, "final").get(a, np.nan)
        if np.isfinite(twin):
            text += f"; with linear logits {a} ends at {fmt(twin)}"
            numbers[f"{a}_linear_logits_final"] = twin
        if np.isfinite(room) and np.isfinite(final) and not pinned(start, final, floor, t):
            text += (f"; not pinned at the floor (more than {t.pinned_share:.0%} of its possible fall "
                     f"left), so within these epochs the floor is not all that holds {a} back (m1 "
                     f"measures the rest)")
        parts.append(text)
        verdicts.append(INCONCLUSIVE if not np.isfinite(others) or not np.isfinite(room) else
                        SUPPORTED if room < others else NOT_SUPPORTED)
    ev = (f"logits in ({lo:g}, {hi:g}) cannot bring cross-entropy on 10 classes below "
          f"log(1 + 9 e^-{hi - lo:g}) = {floor:.3f} nats; "
          + (f"the {len(unbounded)} unbounded activations of this model fell a median "
             f"{fmt(others)} nats; "
             if np.isfinite(others) else "no unbounded activation in this model to compare with; ")
          + "; ".join(parts))
    verdict = verdicts[0] if len(set(verdicts)) == 1 else INCONCLUSIVE
    if verdict == SUPPORTED:
        ev += (". The floor alone keeps the fall below what the unbounded activations achieve: "
               "a flat line here says nothing about saturation")
    return verdict, ev, numbers


# -- m3: SELU self-normalises -----------------------------------------------------------------

def check_m3(results, t) -> list:
    runs, _, diag = _done(results)
    out = [Verdict("m3", model, *self_normalises(runs[runs["model"] == model], diag, t))
           for model in sorted(runs.loc[runs["activation"] == "selu", "model"].unique())]
    return out or [Verdict("m3", "all models", INCONCLUSIVE, "no finished SELU runs")]


def self_normalises(runs: pd.DataFrame, diag: pd.DataFrame, t):
    """(verdict, evidence, numbers): do the SELU runs' hidden layers stay near mean 0, variance 1?"""
    selu = runs.loc[runs["activation"] == "selu", "run_id"]
    sn = self_normalisation(rows(only(diag, selu), metrics=("act_mean", "act_std")), runs,
                            mean_tol=t.mean_tol, var_band=t.var_band)
    if sn.empty:
        return INCONCLUSIVE, ("no diagnostics for the SELU runs, so activation statistics were not "
                              "measured: run the study with --diagnostics"), {}
    init = ", ".join(sorted(runs.loc[runs["activation"] == "selu", "init"].dropna().unique())) \
        if "init" in runs else "?"
    share = sn["near"].mean()
    by_epoch = sn.groupby("epoch")["near"].mean()
    # furthest from (0, 1), each coordinate in units of its tolerance
    half_band = (t.var_band[1] - t.var_band[0]) / 2
    distance = np.maximum(sn["mean"].abs() / t.mean_tol, (sn["var"] - 1).abs() / half_band)
    worst = sn.loc[distance.idxmax()]
    ev = (f"{len(sn)} (layer, epoch) cells over {sn['layer'].nunique()} hidden layer(s), epochs "
          f"0..{int(sn['epoch'].max())}, {int(sn['n'].max())} seed(s), init {init}: {share:.0%} near "
          f"(|mean| <= {t.mean_tol:g}, variance in [{t.var_band[0]:g}, {t.var_band[1]:g}]; "
          f"{by_epoch.iloc[0]:.0%} at epoch {int(by_epoch.index[0])}, {by_epoch.iloc[-1]:.0%} at "
          f"epoch {int(by_epoch.index[-1])}); means {fmt(sn['mean'].min())}..{fmt(sn['mean'].max())}, "
          f"variances {fmt(sn['var'].min())}..{fmt(sn['var'].max())}; furthest: {worst['layer']} "
          f"at epoch {int(worst['epoch'])} (mean {fmt(worst['mean'])}, variance {fmt(worst['var'])})")
    numbers = dict(cells=len(sn), near_share=share, mean_min=sn["mean"].min(),
                   mean_max=sn["mean"].max(), var_min=sn["var"].min(), var_max=sn["var"].max(),
                   worst_mean=worst["mean"], worst_var=worst["var"])
    missing = [need for need, ok in (
        ("LeCun-normal weights (Var(w) = 1/n)", "lecun_normal" in init),
        ("standardised inputs", "normalize" not in runs or runs["normalize"].eq("standard").all()))
        if not ok]
    if missing:
        ev += f"; self-normalisation assumes {' and '.join(missing)}, which this model does not have"
    verdict = (SUPPORTED if share >= t.near_supported else
               NOT_SUPPORTED if share < t.near_refuted else INCONCLUSIVE)
    return verdict, ev, numbers


register(Claim("m1", "Sigmoid's flat loss comes from saturated units or vanishing gradients", check_m1))
register(Claim("m2", "Bounded activations on the logits flatten the loss by themselves (the "
               "cross-entropy floor)", check_m2))
register(Claim("m3", "SELU self-normalises: every hidden layer keeps activation mean near 0 and "
               "variance near 1", check_m3))
