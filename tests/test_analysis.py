"""Analysis: statistics against hand-computed answers and NumPy/SciPy; the original findings
(claims a-f) on built tables."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from actconv import analysis as an, claims
from actconv.study.activations import logit_loss_floor
from actconv.claims import original
from actconv.run.store import Results


# -- synthetic studies (also imported by test_plots and test_report) --------------------

def synth(acts, *, model="mlp", kind="mlp", logits=0, seeds=(1, 2, 3), n_train=(600,), epochs=3,
          steps=10, test_gap=0.05, growth=None, spikes=None, statuses=None, study="synthetic"):
    """A Results whose train loss follows end + (start - end) * exp(-rate * epoch) per activation.

    `acts`: {activation: (start, end, rate)}; `growth`: {activation: gap added per epoch};
    `spikes`: {(activation, seed, n_train): (step, loss)}; `statuses`: {(activation, seed,
    n_train): status}. Seeds shift the curve by a small, fixed jitter.
    """
    growth, spikes, statuses = growth or {}, spikes or {}, statuses or {}
    runs, ep_rows, b_rows = [], [], []
    for act, (start, end, rate) in acts.items():
        for seed in seeds:
            for n in n_train:
                rid = f"{model}-{act}-{seed}-{n}"
                status = statuses.get((act, seed, n), "done")
                runs.append(dict(run_id=rid, study=study, status=status, model=model, model_kind=kind,
                                 activate_logits=logits, hidden_units=64, hidden_layers=1,
                                 activation=act, seed=seed, n_train=n, dataset="mnist-5k",
                                 epochs=epochs, batch_size=32, optimizer="sgd", lr=0.1, engine="loop",
                                 diverged_step=None, error="boom <b>" if status == "failed" else None,
                                 wall_s=1.0, torch_version="x", device="cpu", threads=1,
                                 dtype="float32", config_json="{}"))
                if status in ("failed", "pending", "running"):
                    continue
                jitter = 0.01 * ((seed * 7 + n // 600) % 5 - 2)
                r = rate * (1 + 0.02 * ((seed * 3) % 5 - 2))

                def curve(e, start=start, end=end, r=r, jitter=jitter):
                    return end + (start - end) * math.exp(-r * e) + jitter
                last = epochs
                if status == "diverged":
                    last = 1
                    runs[-1]["diverged_step"] = steps + 3
                keys = dict(run_id=rid, model=model, activation=act, seed=seed, n_train=n)
                for e in range(last + 1):
                    tr = curve(e)
                    te = tr + test_gap + growth.get(act, 0.0) * e
                    ep_rows.append(dict(keys, epoch=e, train_loss=tr,
                                        train_accuracy=min(1.0, max(0.0, 1 - tr / 2.5)),
                                        test_loss=te, test_accuracy=min(1.0, max(0.0, 1 - te / 2.5))))
                n_steps = steps * last + (3 if status == "diverged" else 0)
                for s in range(1, n_steps + 1):
                    e = (s - 1) // steps + 1
                    loss = curve(e - 1 + ((s - 1) % steps + 1) / steps) + 0.02 * (-1) ** s
                    if (act, seed, n) in spikes and spikes[(act, seed, n)][0] == s:
                        loss = spikes[(act, seed, n)][1]
                    if status == "diverged" and s == n_steps:
                        loss = math.inf
                    b_rows.append(dict(keys, epoch=e, step=s, loss=loss, accuracy=0.5))
    diag = pd.DataFrame(columns=["run_id", "epoch", "step", "layer", "metric", "value"])
    return Results(pd.DataFrame(runs), pd.DataFrame(ep_rows), pd.DataFrame(b_rows), diag)


def combine(*parts):
    """One Results from several."""
    return Results(*(pd.concat([getattr(p, t) for p in parts], ignore_index=True)
                     for t in ("runs", "epochs", "batches", "diagnostics")))


MLP_GOOD = {"relu": (2.3, 0.3, 1.0), "tanh": (2.3, 0.4, 0.9), "gelu": (2.3, 0.35, 1.0),
            "selu": (3.0, 0.2, 1.2), "sigmoid": (2.3, 1.6, 0.01)}
VGG_GOOD = {"relu": (2.3, 0.5, 0.8), "gelu": (2.3, 0.5, 0.9), "sigmoid": (2.3, 2.25, 0.5)}


def supported_study():
    """Every original claim holds."""
    return combine(
        synth(MLP_GOOD, model="mlp_original", logits=1),
        synth(MLP_GOOD, model="mlp"),
        synth(VGG_GOOD, model="tinyvgg", kind="tinyvgg", spikes={("relu", 1, 600): (15, 1e6)}))


def refuted_study():
    """Every original claim fails."""
    acts = {"relu": (2.3, 0.3, 1.0), "tanh": (2.3, 0.4, 0.9), "gelu": (2.3, 0.35, 1.0),
            "selu": (2.0, 1.0, 1.0), "sigmoid": (2.3, 0.3, 1.0)}
    return combine(
        synth(acts, model="mlp_original", logits=1, growth={"relu": 0.2}),
        synth(acts, model="mlp", growth={"relu": 0.2}),
        synth({"relu": (2.3, 0.5, 0.8), "sigmoid": (2.3, 0.3, 1.0)}, model="tinyvgg", kind="tinyvgg"))


def verdicts(results):
    f = findings(results)
    return {(r.id, r.scope): r.verdict for r in f.itertuples()}


# -- per run -------------------------------------------------------------------------------

def one_run_epochs():
    keys = dict(run_id="r", model="mlp", activation="relu", seed=1, n_train=600)
    return pd.DataFrame([dict(keys, epoch=e, train_loss=tr, train_accuracy=a, test_loss=te,
                              test_accuracy=a)
                         for e, tr, te, a in [(0, 2.0, 2.1, 0.1), (1, 1.0, 1.2, 0.6),
                                              (2, 0.5, 0.8, 0.8)]])


def one_run_batches(losses):
    keys = dict(run_id="r", model="mlp", activation="relu", seed=1, n_train=600)
    return pd.DataFrame([dict(keys, epoch=1 + i // 3, step=i + 1, loss=v, accuracy=0.5)
                         for i, v in enumerate(losses)])


def test_run_metrics_hand_computed():
    m = an.run_metrics(one_run_epochs(), one_run_batches([3, 2, 1, 0.4, 0.2, 0.1]),
                       threshold=0.5, smooth=2).iloc[0]
    assert m["start_loss"] == 2.0 and m["final_epoch"] == 2
    assert m["final_train_loss"] == 0.5 and m["final_test_accuracy"] == 0.8
    assert m["gap"] == pytest.approx(0.3)
    assert m["auc_train_loss"] == pytest.approx(1.5 + 0.75)
    assert m["auc_test_loss"] == pytest.approx(1.65 + 1.0)
    # trailing means of 2: -, 2.5, 1.5, 0.7, 0.3 -> first below 0.5 at step 5
    assert m["steps_to_threshold"] == 5 and bool(m["reached"])


def test_steps_to_threshold_never_is_a_value():
    m = an.run_metrics(one_run_epochs(), one_run_batches([3, 2, 1, 0.4, 0.2, 0.1]),
                       threshold=0.01, smooth=2).iloc[0]
    assert math.isnan(m["steps_to_threshold"]) and not m["reached"]


def test_batch_fit_is_polyfit_with_epoch0_first():
    rng = np.random.default_rng(3)
    losses = 2 - 0.01 * np.arange(40) + rng.normal(0, 0.1, 40)
    fit = an.batch_fit(one_run_epochs(), one_run_batches(losses)).iloc[0]
    slope, intercept = np.polyfit(np.arange(41), np.r_[2.0, losses], 1)
    assert fit["slope"] == pytest.approx(slope, rel=1e-12)
    assert fit["intercept"] == pytest.approx(intercept, rel=1e-12)
    assert fit["n_points"] == 41


def test_batch_fit_hand_line():
    e = one_run_epochs().assign(train_loss=[3.0, 1.0, 0.5])
    fit = an.batch_fit(e, one_run_batches([2.0, 1.0])).iloc[0]
    assert fit["slope"] == pytest.approx(-1) and fit["intercept"] == pytest.approx(3)
    assert fit["r2"] == pytest.approx(1)


def test_epoch_fits_match_linregress():
    e = pd.concat([one_run_epochs(), one_run_epochs().assign(epoch=3, train_loss=0.4,
                                                              test_loss=0.9).iloc[:1]])
    fits = an.epoch_fits(e).set_index("curve")
    for curve in ("train_loss", "test_loss"):
        ref = stats.linregress(e["epoch"], e[curve])
        t = stats.t.ppf(0.975, 2)
        got = fits.loc[curve]
        assert got["slope"] == pytest.approx(ref.slope)
        assert got["intercept"] == pytest.approx(ref.intercept)
        assert got["r2"] == pytest.approx(ref.rvalue ** 2)
        assert got["stderr"] == pytest.approx(ref.stderr)
        assert got["slope_low"] == pytest.approx(ref.slope - t * ref.stderr)
        assert got["slope_high"] == pytest.approx(ref.slope + t * ref.stderr)
        # the same line as NumPy's least squares
        assert got["slope"] == pytest.approx(np.polyfit(e["epoch"], e[curve], 1)[0])


def test_epoch_fits_of_many_runs_equal_linregress_run_by_run():
    rng = np.random.default_rng(3)
    rows = []
    for k in range(40):
        n_epochs = [1, 2, 3, 11][k % 4]
        loss = 2.0 - 0.1 * np.arange(n_epochs) + rng.normal(0, 0.05, n_epochs)
        if k % 5 == 0 and n_epochs > 3:
            loss[rng.integers(n_epochs)] = np.nan  # a gap
        if k % 7 == 0:
            loss[:] = 2.302585  # a flat curve: no r2, no standard error
        rows += [dict(run_id=f"r{k:02d}", model="mlp", activation="relu", seed=k, n_train=600, epoch=ep,
                      train_loss=v, test_loss=v + 0.1) for ep, v in enumerate(loss)]
    e = pd.DataFrame(rows).sample(frac=1, random_state=0)  # any row order
    fits = an.epoch_fits(e)
    assert list(zip(fits["run_id"], fits["curve"])) == [(f"r{k:02d}", c) for k in range(40)
                                                        for c in ("train_loss", "test_loss")]
    for (rid, curve), got in fits.set_index(["run_id", "curve"]).iterrows():
        g = e[e["run_id"] == rid].sort_values("epoch")
        ok = g[curve].notna()
        x, y = g["epoch"][ok].to_numpy(float), g[curve][ok].to_numpy(float)
        assert got["n_points"] == len(x)
        if len(x) < 2:
            assert np.isnan(got[["slope", "intercept", "r2", "stderr"]].to_numpy(float)).all()
            continue
        if np.ptp(y) == 0:  # linregress's r for a flat line is rounding noise (or NaN)
            assert got["slope"] == 0 and np.isnan(got["r2"]) and np.isnan(got["stderr"])
            continue
        ref = stats.linregress(x, y)
        assert got["slope"] == pytest.approx(ref.slope, abs=1e-12)
        assert got["intercept"] == pytest.approx(ref.intercept, abs=1e-12)
        assert got["r2"] == pytest.approx(ref.rvalue ** 2, abs=1e-12)
        if len(x) >= 3:
            t = stats.t.ppf(0.975, len(x) - 2)
            assert got["stderr"] == pytest.approx(ref.stderr, abs=1e-12)
            assert got["slope_low"] == pytest.approx(ref.slope - t * ref.stderr, abs=1e-12)
        else:
            assert np.isnan(got["stderr"])


def test_epoch_fits_two_points_have_no_interval():
    fits = an.epoch_fits(one_run_epochs(), first_epoch=1).set_index("curve")
    assert fits.loc["train_loss", "slope"] == pytest.approx(-0.5)
    assert math.isnan(fits.loc["train_loss", "stderr"])


# -- statistics ------------------------------------------------------------------------------

def test_t_interval_hand_computed():
    est = an.interval_estimates({"a": [1, 2, 3], "b": [4, 6], "c": [7], "d": []})
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * sd 1 / sqrt 3
    a = est.loc["a"]
    assert (a["n"], a["mean"], a["sd"], a["method"]) == (3, 2.0, 1.0, "t")
    assert a["low"] == pytest.approx(2 - half) and a["high"] == pytest.approx(2 + half)
    b = est.loc["b"]
    half_b = 12.706204736174696 * math.sqrt(2) / math.sqrt(2)
    assert b["low"] == pytest.approx(5 - half_b) and "wide" in b["note"]
    assert math.isnan(est.loc["c", "low"]) and est.loc["c", "note"] == "one seed: no interval"
    assert est.loc["d", "n"] == 0


def test_bootstrap_from_five_values():
    est = an.interval_estimates({"flat": [5] * 6, "ramp": range(1, 11), "nan": [1, 2, np.nan]})
    assert est.loc["flat", "method"] == "bootstrap"
    assert (est.loc["flat", "low"], est.loc["flat", "high"]) == (5, 5)
    r = est.loc["ramp"]
    assert 1 < r["low"] < 5.5 < r["high"] < 10
    assert est.loc["nan", "n"] == 2  # non-finite values dropped
    again = an.interval_estimates({"ramp": range(1, 11)})
    assert again.loc["ramp", "low"] == r["low"]  # fixed bootstrap seed


def test_aggregate_long_table():
    pr = pd.DataFrame(dict(model="m", activation=["a"] * 3 + ["b"] * 2, n_train=600,
                           seed=[1, 2, 3, 1, 2], final_test_loss=[1.0, 2.0, 3.0, 4.0, 4.0]))
    agg = an.aggregate(pr, ["final_test_loss"]).set_index("activation")
    assert agg.loc["a", "mean"] == 2 and agg.loc["a", "n_seeds"] == 3
    assert agg.loc["b", "low"] == 4 and agg.loc["b", "note"].startswith("two seeds")


def test_kendall_w():
    assert an.kendall_w([[1, 2, 3], [1, 2, 3], [1, 2, 3]]) == pytest.approx(1)
    assert an.kendall_w([[1, 2, 3], [3, 2, 1]]) == pytest.approx(0)
    # R = (3, 3, 6): S = 1 + 1 + 4 = 6; W = 12 * 6 / (4 * 24) = 0.75
    assert an.kendall_w([[1, 2, 3], [2, 1, 3]]) == pytest.approx(0.75)


def test_rank_activations_with_stability():
    pr = pd.DataFrame(dict(model="m", n_train=600, activation=list("abcabcabc"),
                           seed=[1, 1, 1, 2, 2, 2, 3, 3, 3],
                           final_test_loss=[1, 2, 3, 1, 2, 3, 2, 1, 3]))
    r = an.rank_activations(pr).set_index("activation")
    assert list(r.index) == ["a", "b", "c"]  # means 1.33, 1.67, 3
    assert r.loc["a", "rank"] == 1 and r.loc["c", "rank_sd"] == 0
    assert r.loc["a", "rank_min"] == 1 and r.loc["a", "rank_max"] == 2
    # R = (4, 5, 9): S = 14/3 ... W = 12 * (1 + 0 ... ) computed by hand below
    totals = np.array([4, 5, 9])
    w = 12 * np.sum((totals - 6) ** 2) / (9 * 24)
    assert r["kendall_w"].iloc[0] == pytest.approx(w)


def test_holm_hand_computed():
    np.testing.assert_allclose(an.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(an.holm([0.5, 0.01]), [0.5, 0.02])
    out = an.holm([0.01, np.nan])
    assert out[0] == pytest.approx(0.01) and math.isnan(out[1])


def test_paired_tests_match_ttest_rel_and_align_seeds():
    a = pd.Series([1.0, 2.0, 3.0, 4.5], index=[1, 2, 3, 4])
    b = pd.Series([1.5, 2.2, 3.9, 9.9], index=[1, 2, 3, 5])  # seed 4 and 5 unmatched
    c = pd.Series([0.0, 0.1, 0.3], index=[1, 2, 3])
    out = an.paired_tests({"a": a, "b": b, "c": c}).set_index(["a", "b"])
    ref = stats.ttest_rel([1.0, 2.0, 3.0], [1.5, 2.2, 3.9])
    row = out.loc[("a", "b")]
    assert row["n"] == 3 and row["mean_diff"] == pytest.approx(-1.6 / 3)
    assert row["t"] == pytest.approx(ref.statistic) and row["p"] == pytest.approx(ref.pvalue)
    np.testing.assert_allclose(out["p_holm"], an.holm(out["p"].to_numpy()))


def test_paired_tests_of_many_pairs_each_equal_ttest_rel_on_its_own_seeds():
    rng = np.random.default_rng(3)
    scores = {}
    for k in range(6):  # gaps, an infinite value and a tie: each pair keeps its common finite seeds
        v = pd.Series(rng.normal(size=8) + k, index=range(8))
        scores[f"a{k}"] = v.drop(index=[k]) if k % 2 else v
    scores["a2"].iloc[3] = np.inf
    scores["tie"] = scores["a0"] + 1.0  # a constant difference: t infinite, p 0
    out = an.paired_tests(scores).set_index(["a", "b"])
    for (a, b), row in out.iterrows():
        both = pd.concat([scores[a], scores[b]], axis=1, join="inner")
        both = both[np.isfinite(both).all(axis=1)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns of the tie's zero variance
            ref = stats.ttest_rel(both.iloc[:, 0], both.iloc[:, 1])
        assert row["n"] == len(both)
        assert row["t"] == pytest.approx(ref.statistic, rel=1e-9) and row["p"] == pytest.approx(ref.pvalue, abs=1e-12)
    assert np.isinf(out.loc[("a0", "tie"), "t"]) and out.loc[("a0", "tie"), "p"] == 0


def test_paired_comparisons_per_group():
    pr = pd.DataFrame(dict(model="m", n_train=600, activation=list("aabb"), seed=[1, 2, 1, 2],
                           final_test_loss=[1.0, 2.0, 1.5, 2.7]))
    out = an.paired_comparisons(pr)
    assert len(out) == 1 and out["n"].iloc[0] == 2
    assert out["mean_diff"].iloc[0] == pytest.approx(-0.6)


# -- spikes ----------------------------------------------------------------------------------

def spiky():
    losses = [1.0 if i % 2 else 1.1 for i in range(30)]
    losses[20] = 50.0
    keys = dict(run_id="r", model="tinyvgg", activation="selu", seed=451, n_train=600)
    b = pd.DataFrame([dict(keys, epoch=1 + i // 10, step=i + 1, loss=v)
                      for i, v in enumerate(losses)])
    e = pd.DataFrame([dict(run_id="r", epoch=k, test_loss=t)
                      for k, t in [(0, 2.3), (1, 1.2), (2, 1.0), (3, 1.05)]])
    return b, e


def test_spike_hand_made_series():
    b, e = spiky()
    s = an.detect_spikes(b, e, k=10, window=10, min_history=5)
    assert len(s) == 1
    sp = s.iloc[0]
    # previous ten losses alternate 1.0 / 1.1: median 1.05, MAD 0.05, threshold 1.55
    assert sp["step"] == 21 and sp["epoch"] == 3
    assert sp["baseline"] == pytest.approx(1.05) and sp["mad"] == pytest.approx(0.05)
    assert sp["threshold"] == pytest.approx(1.55) and sp["height"] == pytest.approx(48.95)
    assert sp["recovered"] and sp["moved"]
    assert sp["epoch_mean"] == pytest.approx((50 + 5 * 1.0 + 4 * 1.1) / 10)  # steps 22..30 alternate
    assert sp["test_change"] == pytest.approx(0.05) and sp["test_unchanged"]


def test_no_spike_in_noise_or_flat_series():
    b, _ = spiky()
    b.loc[20, "loss"] = 1.0
    assert an.detect_spikes(b, window=10, min_history=5).empty
    flat = b.assign(loss=1.0)
    flat.loc[25, "loss"] = 1.05  # MAD 0 floored at 1% of 1.0: threshold 1.1
    assert an.detect_spikes(flat, window=10, min_history=5).empty


def test_spike_parameters_are_used():
    b, _ = spiky()
    b.loc[20, "loss"] = 1.5  # 9 MADs above the median
    assert an.detect_spikes(b, k=10, window=10, min_history=5).empty
    assert len(an.detect_spikes(b, k=5, window=10, min_history=5)) == 1
    with pytest.raises(ValueError, match="min_history"):
        an.detect_spikes(b, window=3, min_history=5)


def test_infinite_loss_is_an_unrecovered_spike():
    b, _ = spiky()
    b.loc[29, "loss"] = math.inf
    s = an.detect_spikes(b, window=10, min_history=5)
    last = s[s["step"] == 30].iloc[0]
    assert not last["recovered"] and last["moved"]


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="lacks column.*test_loss"):
        an.run_metrics(one_run_epochs().drop(columns="test_loss"))


# -- findings ---------------------------------------------------------------------------------

def test_logit_loss_floor():
    assert logit_loss_floor(0, 1) == pytest.approx(1.4612, abs=1e-4)
    assert logit_loss_floor(-1, 1) == pytest.approx(0.7967, abs=1e-4)


def test_findings_all_supported():
    v = verdicts(supported_study())
    for key in [("a", "mlp"), ("a", "mlp_original"), ("b", "mlp"), ("b", "mlp_original"),
                ("c", "mlp"), ("c", "tinyvgg"), ("d", "mlp_original (activation on the logits)"),
                ("d", "mlp (linear logits)"), ("e", "tinyvgg"), ("f", "all models")]:
        assert v[key] == "supported", key
    assert v[("a", "tinyvgg")] == "inconclusive"  # no SELU in that model


def test_findings_all_refuted():
    v = verdicts(refuted_study())
    for key in [("a", "mlp"), ("b", "mlp_original"), ("c", "mlp"),
                ("d", "mlp_original (activation on the logits)"), ("d", "mlp (linear logits)"),
                ("e", "tinyvgg"), ("f", "all models")]:
        assert v[key] == "not supported", key


def test_findings_inconclusive_with_one_seed_or_missing_data():
    one_seed = supported_study()
    keep = one_seed.runs.loc[one_seed.runs["seed"] == 1, "run_id"]
    r = Results(one_seed.runs[one_seed.runs["run_id"].isin(keep)],
                one_seed.epochs[one_seed.epochs["run_id"].isin(keep)],
                one_seed.batches.iloc[:0], one_seed.diagnostics)
    f = findings(r)
    assert set(f["verdict"]) == {"inconclusive"}
    assert f["evidence"].str.len().min() > 10
    assert set(f["id"]) == set("abcdef")


def test_findings_evidence_has_numbers_and_logit_floor():
    f = findings(supported_study()).set_index(["id", "scope"])
    ev = f.loc[("d", "mlp_original (activation on the logits)"), "evidence"]
    assert "1.461" in ev and "sigmoid" in ev
    assert "SELU" in f.loc[("a", "mlp"), "evidence"]
    assert "relu" in f.loc[("f", "all models"), "evidence"]


def findings(results):
    return claims.evaluate(results, claims.ORIGINAL)


def without(results, run_ids) -> Results:
    """The same results with some runs gone from every table."""
    return Results(*(t[~t["run_id"].isin(run_ids)] if "run_id" in t else t
                     for t in (results.runs, results.epochs, results.batches, results.diagnostics)))


def test_findings_skip_failed_and_pending_runs():
    """A failed, pending or diverged run's stored rows never enter the numbers: the verdicts and
    evidence equal those of the same study without those runs."""
    full = supported_study()
    runs = full.runs.set_index(["model", "activation", "seed"])
    marks = {("mlp", "selu", 1): "failed", ("mlp", "relu", 2): "pending",
             ("mlp_original", "sigmoid", 3): "diverged"}
    status = [marks.get(k, s) for k, s in zip(runs.index, runs["status"])]
    marked = Results(full.runs.assign(status=status), full.epochs, full.batches, full.diagnostics)
    gone = runs.index.isin(list(marks))
    ids = full.runs["run_id"][gone].tolist()
    assert len(ids) == 3 and len(full.epochs[full.epochs["run_id"].isin(ids)]) > 0
    judged = findings(marked).set_index(["id", "scope"])
    expected = findings(without(full, ids)).set_index(["id", "scope"])
    # the spike check (f) reads diverged runs on purpose, so only a-e must equal the study without
    ae = [k for k in expected.index if k[0] != "f"]
    pd.testing.assert_frame_equal(judged.loc[ae], expected.loc[ae])
    # the left-out runs change the numbers: the comparison above could fail
    assert not findings(full).set_index(["id", "scope"]).loc[ae, "numbers"].equals(
        expected.loc[ae, "numbers"])


def test_equal_start_is_not_supported_and_missing_runs_are_explained():
    acts = {**MLP_GOOD, "selu": (2.3, 0.2, 1.2)}  # starts where the others do
    r = synth(acts, statuses={("sigmoid", s, 600): "diverged" for s in (1, 2, 3)})
    f = findings(r).set_index(["id", "scope"])
    assert f.loc[("a", "mlp"), "verdict"] == "not supported"
    assert "under 0.05 nats" in f.loc[("a", "mlp"), "evidence"]
    d = f.loc[("d", "mlp (linear logits)")]
    assert d["verdict"] == "inconclusive" and "3 diverged" in d["evidence"]


def test_cells_combine_by_three_in_four():
    assert original._majority(["supported"] * 3 + ["inconclusive"]) == "supported"
    assert original._majority(["supported"] * 3 + ["not supported"]) == "inconclusive"
    assert original._majority(["not supported"] * 2 + ["inconclusive"]) == "inconclusive"
    assert original._majority(["not supported"]) == "not supported"


def test_batch_fit_of_many_runs_equals_polyfit_run_by_run():
    rng = np.random.default_rng(3)
    rows, starts = [], []
    for r in range(40):
        n = int(rng.integers(0, 30))
        loss = 2 * np.exp(-np.arange(1, n + 1) / 10) + rng.normal(0, 0.05, n)
        if r % 7 == 0 and n:
            loss[int(rng.integers(0, n))] = np.nan  # a NaN batch is left out of the line
        rows += [(f"r{r:02d}", "mlp", "relu", r, 64, 1, i + 1, v) for i, v in enumerate(loss)]
        if r % 3:
            starts.append((f"r{r:02d}", 0, 2.3 + rng.random()))
    b = pd.DataFrame(rows, columns=["run_id", "model", "activation", "seed", "n_train", "epoch", "step", "loss"])
    e = pd.DataFrame(starts, columns=["run_id", "epoch", "train_loss"])
    fits = an.batch_fit(e, b).set_index("run_id")
    start = e.set_index("run_id")["train_loss"]
    for rid, g in b.groupby("run_id"):
        x, y = g["step"].to_numpy(float), g["loss"].to_numpy(float)
        if rid in start.index:
            x, y = np.r_[0.0, x], np.r_[start[rid], y]
        x, y = x[np.isfinite(y)], y[np.isfinite(y)]
        assert fits.loc[rid, "n_points"] == len(x)
        if len(x) < 2:
            assert np.isnan(fits.loc[rid, "slope"]) and np.isnan(fits.loc[rid, "r2"])
            continue
        slope, intercept = np.polyfit(x, y, 1)
        r2 = 1 - np.sum((y - slope * x - intercept) ** 2) / np.sum((y - y.mean()) ** 2)
        assert fits.loc[rid, ["slope", "intercept", "r2"]].tolist() == pytest.approx([slope, intercept, r2],
                                                                                     rel=1e-9)


def test_running_baseline_is_nanmedian_of_each_window():
    from actconv.analysis.stats import _running_baseline
    rng = np.random.default_rng(4)
    loss = np.abs(rng.standard_cauchy(120))
    loss[[5, 40]] = np.inf  # an exploded batch is history too
    loss[90:] = np.nan      # a diverged tail
    base, mad = _running_baseline(loss, 20, 5)
    for i in range(len(loss)):
        h = loss[max(0, i - 20):i]
        if (~np.isnan(h)).sum() < 5:
            assert np.isnan(base[i]) and np.isnan(mad[i])
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(h)
            dev = np.nanmedian(np.abs(h - med))
        assert base[i] == med or (np.isnan(base[i]) and np.isnan(med))
        assert mad[i] == max(dev, 0.01 * abs(med)) or (np.isnan(mad[i]) and np.isnan(dev))
