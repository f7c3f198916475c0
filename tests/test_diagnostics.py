"""Diagnostics: known answers on hand-built layers, gradient norms against autograd, training
numbers untouched, the analysis functions and the mechanism findings."""
import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import actconv
from actconv import claims
from actconv.study import config
from actconv.analysis import diagnostics as D
from actconv.study import metrics as M
from actconv.train import recorder as R
from actconv.cli import build_parser, study_from_args
from actconv.study.config import ModelSpec, RunSpec
from actconv.study.streams import generator
from actconv.run.store import Results
from actconv.train.loop import prepare, train_run

COLS = ["epoch", "step", "layer", "metric", "value"]


def spec(**kw):
    base = dict(model="mlp", model_spec=ModelSpec("mlp", hidden_units=8), activation="relu",
                seed=3, n_train=64, epochs=2, batch_size=16, diagnostics=True)
    return RunSpec(**{**base, **kw})


def hand_probe(activation: nn.Module, bias3: float = 0.0) -> pd.DataFrame:
    """A 2 -> 3 -> 2 network whose pre-activations are set by hand, probed once.

    Unit 1 sees 10, -10, 0, 20; unit 2 sees 0 everywhere; unit 3 sees bias3 everywhere.
    """
    model = nn.Sequential(nn.Linear(2, 3), activation, nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        model[0].bias.copy_(torch.tensor([0.0, 0.0, bias3]))
    data = SimpleNamespace(train_x=torch.tensor([[10.0, 0.0], [-10.0, 0.0], [0.0, 0.0], [20.0, 0.0]]),
                           pool_size=4)
    rec = R.Recorder(spec(), model, data)  # probes epoch 0 on all four rows
    return pd.DataFrame(rec.rows, columns=COLS).set_index(["layer", "metric"])["value"]


def test_saturation_on_hand_built_sigmoid_layer():
    v = hand_probe(nn.Sigmoid())
    # sigmoid'(z) < 1% of 0.25 only at |z| = 10, 20: three of the twelve entries
    assert v["layer1", "saturated"] == pytest.approx(3 / 12)
    assert v["layer1", "dead"] == 0
    out = torch.sigmoid(torch.tensor([[10.0, 0, 0], [-10, 0, 0], [0, 0, 0], [20, 0, 0]]))
    assert v["layer1", "act_mean"] == pytest.approx(out.mean().item(), rel=1e-6)
    assert v["layer1", "act_std"] == pytest.approx(out.std(unbiased=False).item(), rel=1e-5)
    assert v["layer1", "unit_mean_median"] == pytest.approx(0.5, rel=1e-6)
    assert v["layer1", "weight_norm"] == pytest.approx(math.sqrt(2))
    hist = v["layer1"][[m for m in M.HIST_METRICS]]
    assert hist.sum() == pytest.approx(1.0)
    assert hist.iloc[0] == pytest.approx(1 / 12)  # -10
    assert hist.iloc[-1] == pytest.approx(2 / 12)  # 10 and 20
    assert set(v.index.get_level_values("layer")) == {"layer1", "output"}
    assert list(v["output"].index) == ["weight_norm"]  # linear logits: only the weights


def test_dead_units_on_hand_built_relu_layer():
    v = hand_probe(nn.ReLU(), bias3=-1.0)
    assert v["layer1", "dead"] == pytest.approx(2 / 3)  # unit 2 (always 0) and unit 3 (bias -1)
    # ReLU's derivative is 0 at z <= 0: -10, 0 of unit 1 and all of units 2 and 3
    assert v["layer1", "saturated"] == pytest.approx(10 / 12)


def test_prelu_max_derivative_follows_its_learned_slope():
    act = nn.PReLU()
    with torch.no_grad():
        act.weight.fill_(2.0)
    assert M.max_derivative(act) == pytest.approx(2.0)
    assert M.max_derivative(nn.Sigmoid()) == pytest.approx(0.25)
    # SELU: the supremum 1.0507 x 1.6733 is approached at 0 from below; the grid is 0.005 away
    assert M.max_derivative(nn.SELU()) == pytest.approx(1.0507 * 1.67326, rel=1e-2)


def test_gradient_norms_match_autograd_on_a_tiny_network(mnist5k):
    s = spec(activation="tanh", model_spec=ModelSpec("mlp", hidden_units=4, hidden_layers=2),
             epochs=1, grad_every=1)
    r = train_run(s, mnist5k)
    d = pd.DataFrame(r.diagnostics, columns=COLS)
    first = d[(d["metric"] == "grad_norm") & (d["step"] == 1)].set_index("layer")["value"]
    # The same first step by hand: initial weights, the first batch of the shuffle stream.
    x, y, model = prepare(s, mnist5k)
    idx = torch.randperm(s.n_train, generator=generator(s.seed, "shuffle"))[:s.batch_size]
    loss = F.cross_entropy(model(x[idx]), y[idx])
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    grads = torch.autograd.grad(loss, weights)
    expect = [g.norm().item() for g in grads]
    assert list(first.index) == ["layer1", "layer2", "output"]
    assert first.to_numpy() == pytest.approx(expect, rel=1e-5)
    ratio = d[(d["metric"] == "grad_ratio") & (d["step"] == 1)]
    assert ratio["layer"].tolist() == [M.RATIO]
    assert ratio["value"].iloc[0] == pytest.approx(expect[0] / expect[-1], rel=1e-5)


def test_rows_cover_every_epoch_and_every_kth_step(mnist5k):
    r = train_run(spec(grad_every=3, epochs=2), mnist5k)  # 4 steps an epoch
    d = pd.DataFrame(r.diagnostics, columns=COLS)
    probe = d[d["metric"] == "act_mean"]
    assert probe["epoch"].tolist() == [0, 1, 2] and probe["step"].tolist() == [0, 4, 8]
    steps = sorted(d.loc[d["metric"] == "grad_norm", "step"].unique())
    assert steps == [1, 4, 7]
    assert set(d.loc[d["metric"] == "grad_norm", "epoch"]) == {1, 2}
    assert set(d["metric"]) == set(M.LAYER_METRICS + M.HIST_METRICS + ["weight_norm", "grad_norm",
                                                                       "grad_ratio"])
    assert train_run(replace(r.spec, diagnostics=False), mnist5k).diagnostics == []


@pytest.mark.parametrize("model_spec, activation", [
    # BatchNorm's running statistics must come back unchanged after each probe
    (ModelSpec("mlp", hidden_units=8, hidden_layers=2, batchnorm=True), "relu"),
    (ModelSpec("mlp", hidden_units=8, activate_logits=True), "prelu"),
    (ModelSpec("tinyvgg", hidden_units=2), "selu"),
])
def test_diagnostics_leave_training_numbers_bitwise_unchanged(mnist5k, model_spec, activation):
    on = spec(model_spec=model_spec, activation=activation, n_train=48)
    a, b = train_run(on, mnist5k), train_run(replace(on, diagnostics=False), mnist5k)
    assert a.diagnostics and np.array_equal(a.batches["loss"], b.batches["loss"])
    assert a.epochs == b.epochs


def test_tinyvgg_layers_are_its_four_convolutions(mnist5k):
    r = train_run(spec(model_spec=ModelSpec("tinyvgg", hidden_units=2), epochs=1, n_train=16), mnist5k)
    d = pd.DataFrame(r.diagnostics, columns=COLS)
    probed = sorted(d.loc[d["metric"] == "saturated", "layer"].unique())
    assert probed == [f"layer{i}" for i in range(1, 5)]
    assert sorted(d.loc[d["metric"] == "grad_norm", "layer"].unique(), key=D.layer_order)[-1] == "output"


def test_a_diverged_run_still_records_its_diagnostics(mnist5k):
    r = train_run(spec(lr=1e6, activation="leaky_relu", epochs=3), mnist5k)
    assert r.status == "diverged" and r.diagnostics
    assert max(row[0] for row in r.diagnostics) <= 3


def test_cli_flag_turns_diagnostics_on_and_the_store_keeps_them(tmp_path):
    args = build_parser().parse_args(["run", "--preset", "smoke", "--diagnostics", "--out",
                                      str(tmp_path), "--models", "mlp", "--seeds", "1",
                                      "--n-train", "32"])
    study = study_from_args(args)
    assert all(s.diagnostics for s in study.runs())
    off = build_parser().parse_args(["run", "--preset", "smoke", "--out", str(tmp_path)])
    assert not any(s.diagnostics for s in study_from_args(off).runs())
    actconv.run_study(study, tmp_path, progress=False)
    res = actconv.load_results(tmp_path)
    assert set(res.diagnostics["run_id"]) == set(res.runs["run_id"])
    assert list(res.diagnostics.columns) == ["run_id"] + COLS


# -- analysis on hand-made tables ------------------------------------------------------------

def runs_table(rows):
    """rows: (run_id, model, activation, seed, n_train, **extra) dicts."""
    base = dict(status="done", model_kind="mlp", activate_logits=0, init="default", n_train=100,
                model="m", study="s", lr=0.1, hidden_layers=1, batchnorm=0, normalize="none")
    return pd.DataFrame([{**base, **r} for r in rows])


def diag_rows(run_id, per_epoch: dict):
    """per_epoch: {(epoch, layer, metric): value}."""
    return [dict(run_id=run_id, epoch=e, step=e * 10, layer=l, metric=m, value=v)
            for (e, l, m), v in per_epoch.items()]


def test_layer_curves_and_unit_fractions_have_hand_computed_values():
    runs = runs_table([dict(run_id="a", activation="relu", seed=1),
                       dict(run_id="b", activation="relu", seed=2)])
    d = pd.DataFrame(diag_rows("a", {(0, "layer1", "act_mean"): 1.0, (1, "layer1", "act_mean"): 2.0,
                                     (0, "layer1", "dead"): 0.0, (1, "layer1", "dead"): 0.5,
                                     (0, "layer2", "dead"): 0.0, (1, "layer2", "dead"): 0.1,
                                     (0, "layer1", "saturated"): 0.2, (1, "layer1", "saturated"): 0.4,
                                     (0, "layer2", "saturated"): 0.2, (1, "layer2", "saturated"): 0.2})
                     + diag_rows("b", {(0, "layer1", "act_mean"): 3.0, (1, "layer1", "act_mean"): 6.0,
                                       (0, "layer1", "dead"): 0.0, (1, "layer1", "dead"): 0.3,
                                       (0, "layer2", "dead"): 0.0, (1, "layer2", "dead"): 0.1,
                                       (0, "layer1", "saturated"): 0.0, (1, "layer1", "saturated"): 0.0,
                                       (0, "layer2", "saturated"): 0.0, (1, "layer2", "saturated"): 0.0}))
    c = D.layer_curves(d, runs, "act_mean")
    assert c["mean"].tolist() == [2.0, 4.0] and c["n"].tolist() == [2, 2]
    assert c["sd"].tolist() == pytest.approx([math.sqrt(2), math.sqrt(8)])
    f = D.unit_fractions(d, runs).iloc[0]
    assert f["dead_start"] == 0
    assert f["dead_end"] == pytest.approx(((0.5 + 0.1) / 2 + (0.3 + 0.1) / 2) / 2)
    assert f["dead_max"] == pytest.approx((0.5 + 0.3) / 2)
    assert f["saturated_end"] == pytest.approx(0.15) and f["n"] == 2


def test_preact_histogram_bounds_and_layer_order():
    d = pd.DataFrame(diag_rows("a", {(0, "layer10", "preact_hist_00"): 0.25,
                                     (0, "layer10", "preact_hist_33"): 0.75,
                                     (0, "layer2", "preact_hist_17"): 1.0}))
    h = D.preact_histogram(d, "a")
    assert h["layer"].tolist() == ["layer2", "layer10", "layer10"]  # numeric, not text, order
    assert h.iloc[0][["left", "right"]].tolist() == [0.0, 0.5]
    assert h.iloc[1]["left"] == -np.inf and h.iloc[2]["right"] == np.inf


def test_self_normalisation_flags_cells_near_zero_and_one():
    runs = runs_table([dict(run_id="a", activation="selu", seed=1)])
    d = pd.DataFrame(diag_rows("a", {(0, "layer1", "act_mean"): 0.05, (0, "layer1", "act_std"): 1.1,
                                     (1, "layer1", "act_mean"): 0.5, (1, "layer1", "act_std"): 1.0,
                                     (1, "layer2", "act_mean"): 0.0, (1, "layer2", "act_std"): 2.0}))
    sn = D.self_normalisation(d, runs)
    assert sn["near"].tolist() == [True, False, False]
    assert sn["var"].tolist() == pytest.approx([1.21, 1.0, 4.0])


def test_activation_table_marks_where_each_activation_saturates():
    t = D.activation_table(["sigmoid", "tanh", "relu"], points=1001).set_index("activation")
    assert t.loc["sigmoid", "derivative"].max() == pytest.approx(0.25)
    assert not t.loc["sigmoid", "saturated"].any()  # sigmoid' < 0.0025 only beyond |x| = 5.99
    tanh = t.loc["tanh"]
    sat_x = tanh.loc[tanh["saturated"], "x"].abs()
    assert sat_x.min() == pytest.approx(math.atanh(math.sqrt(0.99)), abs=0.02)  # 1 - tanh^2 = 0.01
    relu = t.loc["relu"]
    assert relu.loc[relu["saturated"], "x"].max() <= 0


def test_loss_roughness_on_hand_made_curves():
    b = pd.DataFrame(dict(run_id="a", model="m", activation="relu", seed=1, n_train=10,
                          epoch=[1] * 4 + [2] * 6, step=range(1, 11),
                          loss=[9, 9, 9, 9, 1, 2, 1, 2, 1, 2]))
    r = D.loss_roughness(b).iloc[0]  # epoch 2 only: changes +1 -1 +1 -1 +1
    assert r["rough"] == pytest.approx(np.std([1, -1, 1, -1, 1], ddof=1))
    assert r["rough_log"] == pytest.approx(np.std(np.diff(np.log([1, 2, 1, 2, 1, 2])), ddof=1))
    assert r["level"] == pytest.approx(1.5) and r["steps"] == 6


def test_roughness_by_level_compares_only_matching_bands():
    steps = np.arange(200)
    smooth = np.full(200, 0.5)
    noisy = 0.5 + 0.05 * (-1) ** steps  # changes of 0.1, against a running median of 0.45 or 0.55
    b = pd.concat([pd.DataFrame(dict(run_id=r, model="m", activation="relu", seed=1, n_train=10,
                                     epoch=1, step=steps + 1, loss=v))
                   for r, v in (("s", smooth), ("n", noisy))])
    r = D.roughness_by_level(b).set_index("run_id")
    assert len(r) == 2 and r.loc["s", "rough"] == 0 and r.loc["n", "rough"] > 0.15
    assert r.loc["s", "band_low"] == r.loc["n", "band_low"] and r.loc["s", "band_low"] <= 0.45
    assert r.loc["s", "band_high"] > 0.55 and r.loc["s", "steps"] == 199


# -- mechanism findings on hand-made results ----------------------------------------------------

def results_for(curves: dict, diag=(), **run_extra) -> Results:
    """curves: {(run_id, activation, seed): [train loss per epoch]}."""
    runs = runs_table([dict(run_id=r, activation=a, seed=s, **run_extra) for r, a, s in curves])
    epochs = pd.DataFrame([dict(run_id=r, model="m", activation=a, seed=s, n_train=100, epoch=e,
                                train_loss=v, train_accuracy=0.5, test_loss=v, test_accuracy=0.5)
                           for (r, a, s), vals in curves.items() for e, v in enumerate(vals)])
    diag = pd.DataFrame(list(diag), columns=["run_id", "epoch", "step", "layer", "metric", "value"])
    return Results(runs, epochs, pd.DataFrame(columns=["run_id"]), diag)


FLAT = {("s1", "sigmoid", 1): [2.3, 2.29], ("s2", "sigmoid", 2): [2.3, 2.28],
        ("r1", "relu", 1): [2.3, 0.5], ("r2", "relu", 2): [2.3, 0.6]}


def mechanisms(results):
    return claims.evaluate(results, claims.MECHANISMS)


def m(findings, ident):
    return findings[findings["id"] == ident].iloc[0]


def test_sigmoid_flatness_is_not_blamed_on_saturation_without_measurements():
    f = m(mechanisms(results_for(FLAT)), "m1")
    assert f["verdict"] == "inconclusive" and "--diagnostics" in f["evidence"]


def test_measured_saturation_supports_the_mechanism_and_its_absence_does_not():
    def probe(sat):
        rows = []
        for rid in ("s1", "s2", "r1", "r2"):
            s = sat if rid.startswith("s") else 0.0
            rows += diag_rows(rid, {(e, "layer1", metric): v for e in (0, 1)
                                    for metric, v in (("saturated", s), ("act_mean", 0.5))})
            rows += [dict(run_id=rid, epoch=1, step=1, layer=M.RATIO, metric="grad_ratio", value=1.0)]
        return rows
    f = m(mechanisms(results_for(FLAT, probe(0.6))), "m1")
    assert f["verdict"] == "supported" and "60.0%" in f["evidence"]
    f = m(mechanisms(results_for(FLAT, probe(0.0))), "m1")
    assert f["verdict"] == "not supported" and "Neither saturation nor vanishing" in f["evidence"]
    learning = {**FLAT, ("s1", "sigmoid", 1): [2.3, 1.0], ("s2", "sigmoid", 2): [2.3, 1.1]}
    f = m(mechanisms(results_for(learning, probe(0.6))), "m1")
    assert f["verdict"] == "not supported" and "not flat" in f["evidence"]


def test_squashed_logits_finding_shows_the_floor():
    f = mechanisms(results_for(FLAT, activate_logits=1))
    row = m(f, "m2")
    assert row["verdict"] == "supported" and "(0, 1)" in row["scope"]
    assert "1.461" in row["evidence"]  # log(1 + 9/e)
    tanh = results_for({("t1", "tanh", 1): [2.3, 1.5], ("r1", "relu", 1): [2.3, 0.2]}, activate_logits=1)
    row = m(mechanisms(tanh), "m2")
    assert "0.797" in row["evidence"] and "(-1, 1)" in row["scope"]


def test_selu_self_normalisation_verdicts():
    curves = {("a", "selu", 1): [2.3, 1.0]}
    near = diag_rows("a", {(e, f"layer{k}", metric): v for e in (0, 1) for k in (1, 2)
                           for metric, v in (("act_mean", 0.05), ("act_std", 1.05))})
    selu = results_for(curves, near, init="lecun_normal", normalize="standard")
    f = m(mechanisms(selu), "m3")
    assert f["verdict"] == "supported"
    far = diag_rows("a", {(e, f"layer{k}", metric): v for e in (0, 1) for k in (1, 2)
                          for metric, v in (("act_mean", -0.05), ("act_std", 0.2))})
    f = m(mechanisms(results_for(curves, far)), "m3")
    assert f["verdict"] == "not supported" and "LeCun-normal" in f["evidence"]


# -- figures and the report ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """Both MLPs (activation on the logits and linear logits), sigmoid, tanh and ReLU, 3 seeds."""
    out = tmp_path_factory.mktemp("diag")
    study = config.study_from_dict({
        "name": "tiny-diag",
        "models": {"mlp_original": {"kind": "mlp", "hidden_units": 8, "activate_logits": True},
                   "mlp": {"kind": "mlp", "hidden_units": 8, "hidden_layers": 2}},
        "activations": ["sigmoid", "tanh", "relu"], "seeds": [1, 2, 3], "n_train": [64], "epochs": 2,
        "diagnostics": True, "grad_every": 2})
    actconv.run_study(study, out, progress=False)
    return out, actconv.load_results(out)


def drawn(fig) -> int:
    return sum(1 for ax in fig.axes for artist in ax.get_children() if artist.get_gid() == "data")


def test_diagnostics_figures_draw_every_activation_and_layer(tiny_study):
    from actconv import plots
    _, res = tiny_study
    d, runs = res.diagnostics, res.runs
    gallery = plots.activation_gallery()
    assert len(gallery.axes) == len(actconv.study.activations.ACTIVATIONS)
    assert drawn(gallery) == len(gallery.axes)
    stats = plots.layer_activation_stats(d, runs, model="mlp")
    assert len(stats.axes) == 3  # one panel per activation, one line per hidden layer
    for ax in stats.axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["layer1", "layer2"]
    grads = plots.gradient_norms(d, runs, model="mlp")
    assert [ax.get_yscale() for ax in grads.axes[:4]] == ["log"] * 4  # layer1, layer2, output, ratio
    sigmoid = runs.loc[(runs["model"] == "mlp_original") & (runs["activation"] == "sigmoid"),
                       "run_id"].iloc[0]
    hist = plots.preact_histograms(d, runs, sigmoid)
    assert [ax.get_title() for ax in hist.axes] == ["layer1", "output"]
    units = plots.saturation_dead_units(d, runs, model="mlp")
    assert drawn(units) == 2 * 3
    floor = plots.logit_floor_curves(res.epochs, runs)
    assert drawn(floor) == 2 * 2  # sigmoid and tanh, on the logits and with linear logits
    levels = sorted(round(line.get_ydata()[0], 3) for line in floor.axes[0].lines
                    if line.get_gid() != "data")
    assert levels == [0.797, 1.461]


def test_report_shows_gallery_first_and_the_mechanisms(tiny_study):
    from actconv.report import write_report
    out, res = tiny_study
    page = write_report(out, res).read_text()
    figures = page.split("<details id='all-figures'>")[1]
    assert figures.index("<h3") == figures.index("<h3 id='gallery'>")  # the first of all figures
    # the method section always quotes the floor: look inside the mechanisms table only
    table = page.split("<table id='mechanisms'")[1].split("</table>")[0]
    csv = pd.read_csv(out / "report" / "mechanisms.csv")
    m2 = csv[csv["id"] == "m2"]
    assert list(m2["scope"]) == ["mlp_original, logits in (-1, 1)", "mlp_original, logits in (0, 1)"]
    assert table.count("<strong>(m2)</strong>") == 2 and "= 1.461 nats" in table
    assert "= 0.797 nats" in table
    assert set(csv["id"]) == {"m1", "m2", "m3"} and table.count("<tr><td>") == len(csv)
    for verdict in csv["verdict"]:
        assert f">{verdict}</span>" in table
    assert "id='papers'" not in page  # not a paper preset
