"""The original notebook's findings (a-f), each checked against a study's finished runs."""
import numpy as np
import pandas as pd

from ...run.store import n_classes_of
from ...study.activations import BOUNDED_RANGE, logit_loss_floor
from ..stats import epoch_fits, interval, run_metrics, spikes as find_spikes
from ..tables import RUN_KEYS, flag, fmt, has_rows, need, only, run_keys
from .common import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, VERDICTS, Claim, Verdict, flat_band, pinned,
                     register, seed_note, vote)

IDS = ["a", "b", "c", "d", "e", "f"]


def _finished(results):
    """(runs, meta by run_id, per-run metrics of the 'done' runs joined to meta, their epochs)."""
    runs = results.runs
    need(runs, "runs", ["run_id", "status", "model", "model_kind", "activate_logits"])
    meta = runs.set_index("run_id")[["status", "model_kind", "activate_logits"]
                                    + [c for c in ["n_classes"] if c in runs]]
    done_ids = meta.index[meta["status"] == "done"]
    epochs = results.epochs[results.epochs["run_id"].isin(done_ids)]
    per_run = (run_metrics(epochs) if len(epochs) else
               pd.DataFrame(columns=RUN_KEYS + ["start_loss", "final_train_loss", "final_test_loss"]))
    return runs, meta, per_run.join(meta, on="run_id"), epochs


def _models(per_run) -> list:
    return (sorted(per_run["model"].unique()) if len(per_run) else []) or ["(none)"]


def _interval_text(n, mean, low, high, unit="") -> str:
    if n >= 2:
        return f"{fmt(mean)}{unit} [95% CI {fmt(low)}, {fmt(high)}] over {n} seeds"
    return f"{fmt(mean)}{unit} ({n} seed{'s' if n != 1 else ''}, no interval)"


def _absent(runs: pd.DataFrame, model: str, activation: str) -> str:
    """Why an activation has no finished runs in a model, with its run statuses."""
    r = runs[(runs["model"] == model) & (runs["activation"] == activation)]
    if r.empty:
        return f"no {activation} runs for {model} in this study"
    counts = r["status"].value_counts()
    return (f"no finished {activation} runs for {model} ("
            + ", ".join(f"{n} {st}" for st, n in counts.items()) + ")")


# -- a: SELU starts higher --------------------------------------------------------------------

def check_a(results, t) -> list:
    runs, _, per_run, _ = _finished(results)
    return [Verdict("a", m, *_a(per_run[per_run["model"] == m], t, _absent(runs, m, "selu")))
            for m in _models(per_run)]


def _a(pr, t, absent):
    if "selu" not in set(pr["activation"]):
        return INCONCLUSIVE, absent, {}
    if pr["activation"].nunique() < 2:
        return INCONCLUSIVE, "SELU is the only activation: nothing to compare with", {}
    cells, highest = [], 0
    for (n_train, seed), g in pr.groupby(["n_train", "seed"]):
        s = g.loc[g["activation"] == "selu", "start_loss"]
        others = g.loc[g["activation"] != "selu"].groupby("activation")["start_loss"].mean()
        if len(s) and len(others):
            cells.append((n_train, seed, float(s.iloc[0]) - float(others.median())))
            highest += bool(float(s.iloc[0]) > others.max())
    if not cells:
        return INCONCLUSIVE, "SELU and the other activations never share a seed and subset size", {}
    d = pd.DataFrame(cells, columns=["n_train", "seed", "diff"]).groupby("seed")["diff"].mean()
    n, mean, _, low, high, _, _ = interval(d, t.confidence)
    selu = pr.loc[pr["activation"] == "selu", "start_loss"].mean()
    other = pr.loc[pr["activation"] != "selu"].groupby("activation")["start_loss"].mean()
    if n < 2:
        verdict = INCONCLUSIVE
    elif low > 0 and mean > t.margin:
        verdict = SUPPORTED
    elif high < t.margin:  # at most negligibly higher
        verdict = NOT_SUPPORTED
    else:
        verdict = INCONCLUSIVE
    ev = (f"{seed_note(n)}epoch-0 train loss: SELU {fmt(selu)} vs median of "
          f"{len(other)} others {fmt(other.median())}; SELU minus others' median: "
          f"{_interval_text(n, mean, low, high)} (under {t.margin:g} nats counts as no "
          f"difference); SELU highest of all in {highest}/{len(cells)} seed x subset cells")
    numbers = dict(selu_start=selu, others_median_start=other.median(), n_others=len(other),
                   n_seeds=n, diff_mean=mean, diff_low=low, diff_high=high, margin=t.margin,
                   highest_cells=highest, cells=len(cells))
    return verdict, ev, numbers


# -- b: SELU ends among the lowest --------------------------------------------------------------

def check_b(results, t) -> list:
    runs, _, per_run, _ = _finished(results)
    return [Verdict("b", m, *_b(per_run[per_run["model"] == m], t, _absent(runs, m, "selu")))
            for m in _models(per_run)]


def _b(pr, t, absent):
    if "selu" not in set(pr["activation"]):
        return INCONCLUSIVE, absent, {}
    n_act = pr["activation"].nunique()
    if n_act < 3:
        return INCONCLUSIVE, f"only {n_act} activation(s): 'among the lowest' needs at least 3", {}
    ranks = {m: _selu_ranks(pr, m) for m in ("final_train_loss", "final_test_loss")}
    hits = sum(int((rank <= np.ceil(of / 3)).sum()) for rank, of in ranks.values())
    cells = sum(len(rank) for rank, _ in ranks.values())
    ranks = {m: list(zip(rank, of)) for m, (rank, of) in ranks.items()}
    n_seeds = pr.loc[pr["activation"] == "selu", "seed"].nunique()
    if not cells:
        return INCONCLUSIVE, "no seed and subset size where SELU and two others all finished", {}
    share = hits / cells
    parts, numbers = [], dict(hits=hits, cells=cells, share=share, n_seeds=n_seeds)
    for metric, label in (("final_train_loss", "train"), ("final_test_loss", "test")):
        r = ranks[metric]
        if r:
            mean_rank, of = np.mean([x for x, _ in r]), max(m for _, m in r)
            parts.append(f"final {label} loss: SELU's mean rank {mean_rank:.1f} of {of}")
            numbers |= {f"{label}_mean_rank": mean_rank, f"{label}_of": of}
    ev = (f"{seed_note(n_seeds)}SELU in the lowest third in {hits}/{cells} seed x subset x "
          f"(train, test) cells ({share:.0%}); " + "; ".join(parts))
    if n_seeds < 2:
        return INCONCLUSIVE, ev, numbers
    return vote(hits, cells, t.lowest_cells_share), ev, numbers


def _selu_ranks(pr: pd.DataFrame, metric: str):
    """(SELU's rank, of how many) per (n_train, seed) where SELU and two others have a finite
    mean `metric`, in (n_train, seed) order: ranks from 1 (lowest), ties at their minimum."""
    vals = pr.groupby(["n_train", "seed", "activation"])[metric].mean()
    vals = vals[np.isfinite(vals)]
    cell = vals.groupby(level=["n_train", "seed"])
    rank, of = cell.rank(method="min"), cell.transform("size")
    selu = (vals.index.get_level_values("activation") == "selu") & (of >= 3).to_numpy()
    return rank[selu].to_numpy(), of[selu].to_numpy()


# -- c: no overfitting ------------------------------------------------------------------------

def check_c(results, t) -> list:
    _, _, per_run, epochs = _finished(results)
    return [Verdict("c", m, *_c(epochs[epochs["model"] == m], t)) for m in _models(per_run)]


def _c(e, t):
    trained = e[e["epoch"] >= 1].assign(gap=lambda d: d["test_loss"] - d["train_loss"])
    if trained.empty:
        return INCONCLUSIVE, "no trained epochs", {}
    pr = _gap_slopes(trained)
    over, evaluable, worst = [], 0, None
    for (act, n_train), g in pr.groupby(["activation", "n_train"]):
        n, mean_slope, _, low, high, _, _ = interval(g["slope"], t.confidence)
        gap = g["gap"].mean()
        if worst is None or gap > worst[2]:
            worst = (act, n_train, gap, mean_slope, low, high, n)
        if n < 2:
            continue
        evaluable += 1
        if gap > t.gap_tolerance and low > 0:
            over.append(f"{act} n={n_train}: gap {fmt(gap)}, growing {fmt(mean_slope)}/epoch "
                        f"[{fmt(low)}, {fmt(high)}]")
    total = len(pr.groupby(["activation", "n_train"]))
    numbers = dict(overfitting=len(over), evaluable=evaluable, configurations=total,
                   gap_tolerance=t.gap_tolerance)
    if worst:
        numbers |= dict(worst_gap=worst[2], worst_gap_slope=worst[3], worst_gap_slope_low=worst[4],
                        worst_gap_slope_high=worst[5])
    head = (f"final gap (test minus train loss) up to {fmt(worst[2])} nats ({worst[0]}, "
            f"n={worst[1]}; gap slope {_interval_text(worst[6], worst[3], worst[4], worst[5], '/epoch')})"
            if worst else "")
    if over:
        return NOT_SUPPORTED, (f"{len(over)}/{evaluable} configurations overfit (gap > "
                               f"{t.gap_tolerance} nats and growing): " + "; ".join(over[:6])), numbers
    if evaluable == 0:
        return INCONCLUSIVE, (f"no configuration with 2+ seeds and 2+ trained epochs; {head}"), numbers
    missing = total - evaluable
    return SUPPORTED, (f"in none of {evaluable} configurations is the gap both above "
                       f"{t.gap_tolerance} nats and growing; {head}"
                       + (f"; {missing} configurations with one seed not judged" if missing else "")
                       ), numbers


def _gap_slopes(trained: pd.DataFrame) -> pd.DataFrame:
    """Per run with a finite gap, in run order: activation, n_train, the last epoch's gap and
    the least-squares slope of gap on epoch (linregress's, within rounding; NaN below two
    epochs), all runs at once (a linregress per run took 6 ms)."""
    g = trained[np.isfinite(trained["gap"])]
    by = g.groupby("run_id", sort=True)
    first = by[["activation", "n_train"]].first()
    x, y = g["epoch"].astype(float), g["gap"].astype(float)
    dx = x - by["epoch"].transform("mean")
    dy = y - by["gap"].transform("mean")
    sxx = (dx * dx).groupby(g["run_id"]).sum()
    sxy = (dx * dy).groupby(g["run_id"]).sum()
    fit = (by.size() >= 2) & (sxx > 0)
    last = g.loc[by["epoch"].idxmax()].set_index("run_id")["gap"]
    out = first.assign(gap=last.astype(float), slope=(sxy / sxx).where(fit))
    return out.reset_index(drop=True)[["activation", "n_train", "gap", "slope"]]


# -- d: sigmoid's lines are flat in the MLP ----------------------------------------------------

def check_d(results, t) -> list:
    runs, _, per_run, epochs = _finished(results)
    fits = epoch_fits(epochs, confidence=t.confidence) if len(epochs) else None
    mlp = per_run[per_run["model_kind"] == "mlp"]
    out = []
    for on_logits, label in ((1, "activation on the logits"), (0, "linear logits")):
        labels = sorted(mlp.loc[flag(mlp, "activate_logits") == bool(on_logits), "model"].unique())
        if not labels:
            out.append(Verdict("d", f"MLP, {label}", INCONCLUSIVE,
                               f"no finished MLP runs with {label} in this study"))
        for m in labels:
            out.append(Verdict("d", f"{m} ({label})",
                               *_d(fits[fits["model"] == m], per_run[per_run["model"] == m],
                                   on_logits, t, _absent(runs, m, "sigmoid"))))
    return out


def _d(fits, pr, on_logits, t, absent):
    if fits is None or "sigmoid" not in set(pr["activation"]):
        return INCONCLUSIVE, absent, {}
    if pr["activation"].nunique() < 2:
        return INCONCLUSIVE, "sigmoid is the only activation: nothing to compare with", {}
    cells, parts, numbers = [], [], {}
    for (curve, n_train), g in fits.groupby(["curve", "n_train"], sort=False):
        sig = g.loc[g["activation"] == "sigmoid", "slope"]
        others = g.loc[g["activation"] != "sigmoid"].groupby("activation")["slope"].mean()
        if sig.empty or others.empty:
            continue
        band = flat_band(others.median(), t)
        n, mean, _, low, high, _, _ = interval(sig, t.confidence)
        if n < 2:
            v = INCONCLUSIVE
        elif -band <= low and high <= band:
            v = SUPPORTED
        elif low > band or high < -band:
            v = NOT_SUPPORTED
        else:
            v = INCONCLUSIVE
        cells.append(v)
        ci = f" [{fmt(low)}, {fmt(high)}]" if n >= 2 else " (one seed)"
        short = curve.replace('_loss', '')
        parts.append(f"{short} n={n_train}: sigmoid {fmt(mean)}{ci} vs "
                     f"others' median {fmt(others.median())} (flat band ±{fmt(band)})")
        numbers |= {f"{short}_{n_train}_slope": mean, f"{short}_{n_train}_low": low,
                    f"{short}_{n_train}_high": high,
                    f"{short}_{n_train}_others_median": others.median(),
                    f"{short}_{n_train}_band": band}
    if not cells:
        return INCONCLUSIVE, "sigmoid and other activations never share a subset size", {}
    n_seeds = pr.loc[pr["activation"] == "sigmoid", "seed"].nunique()
    verdict = _majority(cells)
    ev = (f"{seed_note(n_seeds)}slope of epoch loss (nats/epoch, epochs 0..end): " + "; ".join(parts))
    if len(set(cells)) > 1:
        ev += f" — cells disagree ({', '.join(f'{cells.count(v)} {v}' for v in VERDICTS if v in cells)})"
    if on_logits:
        classes = n_classes_of(pr)
        floor = logit_loss_floor(*BOUNDED_RANGE["sigmoid"], classes)
        final = pr.loc[pr["activation"] == "sigmoid", "final_train_loss"].mean()
        start = pr.loc[pr["activation"] == "sigmoid", "start_loss"].mean()
        numbers |= dict(floor=floor, sigmoid_final=final, sigmoid_start=start)
        ev += (f". Sigmoid on the logits keeps them in (0, 1), so cross-entropy cannot fall "
               f"below {floor:.3f} nats on {classes} classes; sigmoid's final train loss is "
               f"{fmt(final)}")
        if pinned(start, final, floor, t):
            ev += ", pinned near that floor: the flat line is the bound, not only saturation"
        else:
            ev += ", well above that floor: the bound does not explain the flat line"
    return verdict, ev, numbers


def _majority(cells: list) -> str:
    """One verdict from several cells: unanimous, or 3 in 4 with none saying the opposite."""
    for v, opposite in ((SUPPORTED, NOT_SUPPORTED), (NOT_SUPPORTED, SUPPORTED)):
        if cells.count(v) >= 0.75 * len(cells) and opposite not in cells:
            return v
    return INCONCLUSIVE


# -- e: sigmoid stagnates in TinyVGG ------------------------------------------------------------

def check_e(results, t) -> list:
    runs, _, per_run, _ = _finished(results)
    vgg = sorted(per_run.loc[per_run["model_kind"] == "tinyvgg", "model"].unique())
    if not vgg:
        return [Verdict("e", "TinyVGG", INCONCLUSIVE, "no finished TinyVGG runs in this study")]
    return [Verdict("e", m, *_e(per_run[per_run["model"] == m], t, _absent(runs, m, "sigmoid")))
            for m in vgg]


def _e(pr, t, absent):
    if "sigmoid" not in set(pr["activation"]):
        return INCONCLUSIVE, absent, {}
    drop = (pr["start_loss"] - pr["final_train_loss"]) / pr["start_loss"]
    pr = pr.assign(drop=drop)
    sig = pr[pr["activation"] == "sigmoid"].groupby("seed")["drop"].mean()
    n, mean, _, low, high, _, _ = interval(sig, t.confidence)
    others = pr[pr["activation"] != "sigmoid"].groupby("activation")["drop"].mean()
    acc = pr.loc[pr["activation"] == "sigmoid", "final_test_accuracy"].mean()
    ev = (f"{seed_note(n)}relative fall of train loss from epoch 0 to the end: sigmoid "
          f"{_interval_text(n, mean, low, high)}; stagnation means below {t.stagnation_drop:.0%}"
          + (f"; median of {len(others)} others {fmt(others.median())}" if len(others) else "")
          + f"; sigmoid's final test accuracy {acc:.1%}")
    numbers = dict(n_seeds=n, drop_mean=mean, drop_low=low, drop_high=high,
                   stagnation_drop=t.stagnation_drop, others_median_drop=others.median(),
                   sigmoid_final_test_accuracy=acc)
    if n < 2:
        return INCONCLUSIVE, ev, numbers
    verdict = (SUPPORTED if high < t.stagnation_drop else
               NOT_SUPPORTED if low > t.stagnation_drop else INCONCLUSIVE)
    return verdict, ev, numbers


# -- f: spikes leave the epoch losses unchanged --------------------------------------------------

def check_f(results, t) -> list:
    runs = results.runs
    need(runs, "runs", ["run_id", "status"])
    meta = runs.set_index("run_id")[["status"]]
    finished = meta.index[meta["status"].isin(["done", "diverged"])]
    batches = only(results.batches, finished)
    return [Verdict("f", "all models", *_f(batches, results.epochs, meta, t, runs))]


def _f(batches, epochs, meta, t, runs):
    k, window = t.spike_k, t.spike_window
    if not has_rows(batches):
        return INCONCLUSIVE, "no batch losses stored", {}
    spikes = find_spikes(batches, epochs, k=k, window=window, test_tolerance=t.spike_test_tolerance)
    keys = run_keys(batches, runs)
    n_runs = len(keys)
    models = ", ".join(sorted(keys["model"].unique()))
    if spikes.empty:
        return NOT_SUPPORTED, (f"no batch loss above median + {k:g} x MAD of its previous "
                               f"{window} in {n_runs} runs ({models})"), dict(spikes=0, runs=n_runs)
    spikes = spikes.join(meta["status"], on="run_id")
    kept = spikes["recovered"] & spikes["test_unchanged"].fillna(False).astype(bool) & (
        spikes["status"] == "done")
    by_act = spikes.assign(kept=kept).groupby("activation").agg(
        n=("step", "size"), runs=("run_id", "nunique"), top=("loss", "max"), kept=("kept", "sum"))
    listing = "; ".join(f"{r.Index}: {r.n} in {r.runs} run(s), highest {fmt(r.top)}, "
                        f"{int(r.kept)} left the epoch test loss unchanged"
                        for r in by_act.sort_values("top", ascending=False).itertuples())
    moved = int(spikes["moved"].sum())
    share = kept.mean()
    ev = (f"{len(spikes)} spike(s) (> median + {k:g} x MAD of the previous {window} losses) in "
          f"{spikes['run_id'].nunique()}/{n_runs} runs ({models}); {kept.sum()} ({share:.0%}) "
          f"recovered with the test loss after their epoch not up by more than "
          f"{t.spike_test_tolerance:.0%}; {moved} pulled their epoch's mean batch loss beyond 2 "
          f"standard errors. By activation: " + listing)
    numbers = dict(spikes=len(spikes), spiky_runs=spikes["run_id"].nunique(), runs=n_runs,
                   kept=int(kept.sum()), kept_share=share, moved=moved)
    return (SUPPORTED if share >= t.spike_kept_share else NOT_SUPPORTED), ev, numbers


for _id, _text, _check in (
        ("a", "SELU starts with a higher training loss than the other activations", check_a),
        ("b", "SELU ends among the lowest train and test losses", check_b),
        ("c", "No overfitting for any activation (generalisation gap small and not growing)", check_c),
        ("d", "Sigmoid's loss regression lines are almost flat in the MLP", check_d),
        ("e", "Sigmoid stagnates in TinyVGG too", check_e),
        ("f", "Single-batch loss explosions leave the epoch losses unchanged", check_f)):
    register(Claim(_id, _text, _check))
