"""The published claims of the paper presets (gelu-paper, elu-paper, glorot-sigmoid, snn-paper).

A preset's claims are the sentences of its TOML `claim` key (separated by '; '), in the
order of its checks here; a check judges only the runs of its own study. A report shows
'supported' as 'reproduced' for these.
"""
import math

import numpy as np
import pandas as pd

from ...study.config import load_preset
from ..diagnostics import hidden_layers, is_hidden, loss_roughness, probe_table, roughness_by_level
from ..tables import RUN_KEYS, flag, fmt, need, only, rows
from .common import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Claim, Verdict, register, vote
from .mechanisms import self_normalises

LABEL = {SUPPORTED: "reproduced", NOT_SUPPORTED: "not reproduced"}
IDS: list[str] = []


def _study_runs(results, study: str) -> pd.DataFrame:
    """The study's finished runs."""
    runs = results.runs
    need(runs, "runs", RUN_KEYS + ["study", "status"])
    return runs[(runs["study"] == study) & (runs["status"] == "done")]


def _final(runs: pd.DataFrame, epochs: pd.DataFrame, column: str = "train_loss") -> pd.Series:
    """run_id -> the last epoch's value of a column."""
    e = epochs[epochs["run_id"].isin(runs["run_id"])].sort_values(["run_id", "epoch"])
    return e.groupby("run_id")[column].last()


def _by_seed(runs: pd.DataFrame, values: pd.Series, activation: str) -> pd.Series:
    r = runs[runs["activation"] == activation]
    by_seed = pd.Series(values.reindex(r["run_id"]).to_numpy(), index=r["seed"].to_numpy())
    return by_seed.groupby(level=0).mean()


def _lowest(scores: dict, target: str, what: str, t, highest: bool = False):
    """Is `target` lowest (or highest) by median over seeds, and beyond the runner-up in most
    paired seeds? `scores`: {activation: Series indexed by seed}. (verdict, evidence, numbers)."""
    scores = {a: s.dropna() for a, s in scores.items() if len(s.dropna())}
    if target not in scores or len(scores) < 2:
        return INCONCLUSIVE, f"{what}: needs {target} and at least one other activation", {}
    medians = pd.Series({a: s.median() for a, s in scores.items()}).sort_values(ascending=not highest)
    runner_up = medians.drop(target).index[0]
    common = scores[target].index.intersection(scores[runner_up].index)
    mine, theirs = scores[target][common], scores[runner_up][common]
    wins = int((mine > theirs).sum() if highest else (mine < theirs).sum())
    n = len(common)
    ev = (f"{what}, median over seeds: " + ", ".join(f"{a} {fmt(v)}" for a, v in medians.items())
          + f"; {target} {'above' if highest else 'below'} {runner_up} in {wins}/{n} paired seeds")
    numbers = {**{f"median_{a}": v for a, v in medians.items()}, "wins": wins, "paired_seeds": n}
    if n < t.min_seeds:
        return INCONCLUSIVE, ev + f" (fewer than {t.min_seeds} paired seeds)", numbers
    verdict = vote(wins, n, t.win_share, t.min_seeds)
    # The paired vote must agree with the medians' order, else the seeds cannot decide.
    if verdict != INCONCLUSIVE and (verdict == SUPPORTED) != (medians.index[0] == target):
        verdict = INCONCLUSIVE
    return verdict, ev, numbers


# -- gelu-paper ---------------------------------------------------------------------------------

def _gelu_lowest(results, t, claim_id):
    runs = _study_runs(results, "gelu-paper")
    if runs.empty:
        return [Verdict(claim_id, "all runs", INCONCLUSIVE, "no finished runs")] if _present(
            results, "gelu-paper") else []
    final = _final(runs, results.epochs)
    # The paper reports each activation at its best learning rate (lowest median final loss).
    best = {}
    for (a, lr), g in runs.groupby(["activation", "lr"]):
        med = final.reindex(g["run_id"]).median()
        if a not in best or med < best[a][1]:
            best[a] = (lr, med)
    chosen = runs[[best[a][0] == lr for a, lr in zip(runs["activation"], runs["lr"])]]
    scores = {a: _by_seed(chosen, final, a) for a in sorted(best)}
    verdict, ev, numbers = _lowest(scores, "gelu", "final-epoch training loss", t)
    ev = ("best learning rate per activation: "
          + ", ".join(f"{a} {lr:g}" for a, (lr, _) in sorted(best.items())) + "; " + ev)
    numbers |= {f"best_lr_{a}": lr for a, (lr, _) in best.items()}
    # The paper plots whole curves: how often is GELU's median lowest along the way?
    e = results.epochs[results.epochs["run_id"].isin(chosen["run_id"]) & (results.epochs["epoch"] >= 1)]
    e = e.merge(chosen[["run_id"]], on="run_id")
    curve = e.groupby(["epoch", "activation"])["train_loss"].median().unstack()
    if "gelu" in curve and len(curve):
        share = (curve.idxmin(axis=1) == "gelu").mean()
        ev += f"; GELU's median is the lowest at {share:.0%} of the {len(curve)} epochs"
        numbers["gelu_lowest_epoch_share"] = share
    rows = [Verdict(claim_id, f"{runs['model'].iloc[0]}, n_train {runs['n_train'].max()}, best lr",
                    verdict, ev, numbers)]
    for lr, g in runs.groupby("lr"):
        rows.append(Verdict(claim_id, f"lr {lr:g} only", *_lowest(
            {a: _by_seed(g, final, a) for a in sorted(g["activation"].unique())}, "gelu",
            "final-epoch training loss", t)))
    return rows


# -- elu-paper ----------------------------------------------------------------------------------

def _elu_fastest(results, t, claim_id):
    runs = _study_runs(results, "elu-paper")
    if not _present(results, "elu-paper"):
        return []
    e = results.epochs[results.epochs["run_id"].isin(runs["run_id"]) & (results.epochs["epoch"] >= 1)]
    mean_loss = e.groupby("run_id")["train_loss"].mean()  # area under the curve: lower = faster
    acts_ = sorted(runs["activation"].unique())
    v, ev, numbers = _lowest({a: _by_seed(runs, mean_loss, a) for a in acts_}, "elu",
                             "training loss averaged over all epochs (the area under the curve)", t)
    first = e[e["epoch"] == 1].set_index("run_id")["train_loss"]
    after1 = {a: _by_seed(runs, first, a).median() for a in acts_}
    ev += "; after epoch 1, median: " + ", ".join(f"{a} {fmt(m)}" for a, m in after1.items())
    numbers |= {f"epoch1_median_{a}": m for a, m in after1.items()}
    return [Verdict(claim_id, "all seeds", v, ev, numbers)]


def _elu_centred(results, t, claim_id):
    runs = _study_runs(results, "elu-paper")
    if not _present(results, "elu-paper"):
        return []
    p = probe_table(rows(only(results.diagnostics, runs["run_id"]), metrics=("unit_mean_median",)), runs,
                    metrics=("unit_mean_median",))
    p = p[(p["epoch"] >= 1) & is_hidden(p["layer"])]
    if p.empty:
        return [Verdict(claim_id, "all seeds", INCONCLUSIVE,
                        "no diagnostics: run the preset with --diagnostics")]
    # The paper's figure: the median over units of each unit's average activation, per layer.
    dist = p.assign(a=p["unit_mean_median"].abs()).groupby("run_id")["a"].mean()
    acts_ = sorted(runs["activation"].unique())
    return [Verdict(claim_id, "all seeds", *_lowest(
        {a: _by_seed(runs, dist, a) for a in acts_}, "elu",
        "|median unit activation|, averaged over hidden layers and epochs 1..end", t))]


# -- glorot-sigmoid -----------------------------------------------------------------------------

def _glorot_top_layer(results, t, claim_id):
    runs = _study_runs(results, "glorot-sigmoid")
    if not _present(results, "glorot-sigmoid"):
        return []
    p = probe_table(rows(only(results.diagnostics, runs["run_id"]), metrics=("act_mean", "act_std")), runs,
                    metrics=("act_mean", "act_std"))
    p = p[is_hidden(p["layer"])]
    sig = p[p["activation"] == "sigmoid"]
    if sig.empty:
        return [Verdict(claim_id, "sigmoid", INCONCLUSIVE,
                        "no diagnostics for sigmoid runs: run with --diagnostics")]
    top = hidden_layers(sig["layer"])[-1]
    last_epoch = int(sig["epoch"].max())
    early = max(1, math.ceil(last_epoch / 5))  # the first fifth of training
    hits, parts = 0, []
    for seed, g in sig.groupby("seed"):
        s = g[g["layer"] == top].set_index("epoch")["act_mean"]
        lower = g[g["layer"] != top].groupby("epoch")["act_mean"].mean()
        low_early = s[(s.index >= 1) & (s.index <= early)].min()
        ok = low_early <= 0.5 * s.get(0, np.nan) and lower.get(early, np.nan) >= 2 * low_early
        hits += bool(ok)
        parts.append((s.get(0, np.nan), low_early, s.iloc[-1], lower.get(early, np.nan),
                      int(s.idxmin())))
    n = len(parts)
    m = np.nanmean(np.array(parts, float), axis=0)
    ev = (f"{top} (top) mean activation, mean over {n} seeds: {fmt(m[0])} at epoch 0, {fmt(m[1])} "
          f"by epoch {early} (the first fifth of training), {fmt(m[2])} at epoch {last_epoch}, "
          f"lowest at epoch {m[4]:.0f}; lower hidden layers' mean at epoch {early}: "
          f"{fmt(m[3])}; halved towards 0 by epoch {early} while the lower layers stay at least "
          f"twice as high in {hits}/{n} seeds")
    numbers = dict(top_start=m[0], top_early=m[1], top_end=m[2], lower_early=m[3],
                   lowest_epoch=m[4], early_epoch=early, hits=hits, seeds=n)
    tanh = p[(p["activation"] == "tanh") & (p["layer"] == top)]
    if len(tanh):
        end = tanh["epoch"] == tanh["epoch"].max()
        ev += (f"; tanh's {top} for comparison: mean {fmt(tanh['act_mean'].mean())}, standard "
               f"deviation {fmt(tanh.loc[tanh['epoch'] == 0, 'act_std'].mean())} at epoch 0 and "
               f"{fmt(tanh.loc[end, 'act_std'].mean())} at the end")
    if m[2] > 0.5 * m[0]:
        ev += "; it has escaped again by the last epoch"
    elif n:
        ev += ("; it has not escaped by the last epoch (the paper saw a slow escape after about "
               "100 epochs)")
    return [Verdict(claim_id, "sigmoid", vote(hits, n, t.win_share, t.min_seeds), ev, numbers)]


def _glorot_worst(results, t, claim_id):
    runs = _study_runs(results, "glorot-sigmoid")
    if not _present(results, "glorot-sigmoid"):
        return []
    err = 1 - _final(runs, results.epochs, "test_accuracy")
    return [Verdict(claim_id, "all seeds", *_lowest(
        {a: _by_seed(runs, err, a) for a in sorted(runs["activation"].unique())},
        "sigmoid", "final test error", t, highest=True))]


# -- snn-paper ----------------------------------------------------------------------------------

def _snn_runs(results):
    runs = _study_runs(results, "snn-paper")
    selu = runs[(runs["activation"] == "selu") & ~flag(runs, "batchnorm")]
    bn = runs[(runs["activation"] == "relu") & flag(runs, "batchnorm")]
    return selu, bn


def _snn_smoother(results, t, claim_id):
    if not _present(results, "snn-paper"):
        return []
    selu, bn = _snn_runs(results)
    b = rows(only(results.batches, pd.concat([selu, bn])["run_id"]))
    whole = loss_roughness(b).set_index("run_id")
    banded = roughness_by_level(b)
    method = ("step-to-step change of the batch loss relative to its running median, compared where "
              "both curves are at the same loss level (log-spaced bands, 20+ steps each)")
    depths = sorted(set(selu["hidden_layers"]) & set(bn["hidden_layers"]))
    out = []
    if not depths:
        out.append(Verdict(claim_id, "all depths", INCONCLUSIVE, "needs SELU runs without BatchNorm "
                           "and ReLU runs with BatchNorm at the same depth"))
    for depth in depths:
        s_ids = selu[selu["hidden_layers"] == depth].set_index("seed")["run_id"]
        b_ids = bn[bn["hidden_layers"] == depth].set_index("seed")["run_id"]
        seeds = s_ids.index.intersection(b_ids.index)
        wins = total = 0
        for seed in seeds:
            s = banded[banded["run_id"] == s_ids[seed]].set_index("band_low")["rough"]
            r = banded[banded["run_id"] == b_ids[seed]].set_index("band_low")["rough"]
            common = s.index.intersection(r.index)
            wins += int((s[common] < r[common]).sum())
            total += len(common)
        ws, wb = whole.reindex(s_ids[seeds]), whole.reindex(b_ids[seeds])
        ev = (f"{method}: SELU smoother in {wins}/{total} matched (seed, loss band) pairs over "
              f"{len(seeds)} seeds; whole run after epoch 1, median over seeds: std of step-to-step "
              f"change SELU {fmt(ws['rough'].median())} vs BatchNorm {fmt(wb['rough'].median())} "
              f"nats, of log loss {fmt(ws['rough_log'].median())} vs "
              f"{fmt(wb['rough_log'].median())}, at mean loss {fmt(ws['level'].median())} vs "
              f"{fmt(wb['level'].median())} (a lower loss moves less in nats and more in log)")
        numbers = dict(wins=wins, pairs=total, seeds=len(seeds),
                       selu_rough=ws["rough"].median(), bn_rough=wb["rough"].median(),
                       selu_rough_log=ws["rough_log"].median(), bn_rough_log=wb["rough_log"].median(),
                       selu_level=ws["level"].median(), bn_level=wb["level"].median())
        if total < t.min_seeds:
            ev += (f"; fewer than {t.min_seeds} matched pairs: the curves never share a loss level "
                   "long enough")
        out.append(Verdict(claim_id, f"{depth} hidden layers", vote(wins, total, t.win_share,
                                                                    t.min_seeds), ev, numbers))
    return out


def _snn_normalises(results, t, claim_id):
    if not _present(results, "snn-paper"):
        return []
    selu, _ = _snn_runs(results)
    return [Verdict(claim_id, model, *self_normalises(
        g, only(results.diagnostics, g["run_id"]), t))
            for model, g in selu.groupby("model")]


def _present(results, study: str) -> bool:
    """Is the study in the results at all (any status)?"""
    return "study" in results.runs and (results.runs["study"] == study).any()


CHECKS = {"gelu-paper": [_gelu_lowest], "elu-paper": [_elu_fastest, _elu_centred],
          "glorot-sigmoid": [_glorot_top_layer, _glorot_worst],
          "snn-paper": [_snn_smoother, _snn_normalises]}


def _register():
    for preset, checks in CHECKS.items():
        texts = dict(load_preset(preset).meta)["claim"].split("; ")
        if len(texts) != len(checks):
            raise RuntimeError(f"preset {preset} states {len(texts)} claim(s) in its `claim` key, "
                               f"its checks are {len(checks)}")
        for i, (text, check) in enumerate(zip(texts, checks), 1):
            claim_id = preset if len(checks) == 1 else f"{preset}:{i}"
            IDS.append(claim_id)
            register(Claim(claim_id, text[0].upper() + text[1:],
                           lambda results, t, check=check, claim_id=claim_id: check(results, t, claim_id),
                           label=LABEL))


_register()
