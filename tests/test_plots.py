"""Figures: returned (never written), one style per activation, spikes never flatten the rest."""
import io

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.colors import to_rgb

from actconv.study import activations as acts
from actconv import analysis as an
from actconv import plots
from actconv.report.figures.common import _band_polygons
from test_analysis import MLP_GOOD, VGG_GOOD, synth, supported_study


def lines(fig, gid):
    return [l for ax in fig.axes for l in ax.get_lines() if l.get_gid() == gid]


def render(fig):
    fig.savefig(io.BytesIO(), format="png", dpi=50)  # must draw without errors


def test_every_activation_has_a_unique_style():
    assert set(plots.STYLES) == set(acts.ACTIVATIONS)
    combos = {(s["color"], s["linestyle"]) for s in plots.STYLES.values()}
    assert len(combos) == len(plots.STYLES)
    assert len({s["marker"] for s in plots.STYLES.values()}) == len(plots.STYLES)
    for members in acts.FAMILIES.values():  # within a family colour alone tells them apart
        assert len({plots.style(a)["color"] for a in members}) == len(members)


def test_a_users_activation_gets_a_style_of_its_own():
    # a user's activation has no entry in the table: a fixed style derived from its name
    assert plots.style("swishy") == plots.style("swishy")
    assert plots.style("swishy") not in [plots.style(a) for a in plots.STYLES]


def test_family_batch_figure_lines_and_linear_axis():
    r = synth(MLP_GOOD, n_train=(600, 1200))
    fig = plots.family_batch_losses(r.batches, r.epochs, ["relu", "selu", "sigmoid"], model="mlp")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # one panel per n_train
    assert len(lines(fig, "data")) == 6 and len(lines(fig, "fit")) == 6
    assert all(ax.get_yscale() == "linear" for ax in fig.axes)
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    assert fig.legends[0].get_texts()[0].get_text() == "relu"  # registry order
    render(fig)


def test_fit_line_is_the_batch_fit():
    r = synth({"relu": (2.3, 0.3, 1.0)}, seeds=(1,))
    fig = plots.family_batch_losses(r.batches, r.epochs, ["relu"], model="mlp")
    fit = an.batch_fit(r.epochs, r.batches).iloc[0]
    x, y = lines(fig, "fit")[0].get_data()
    assert y[0] == pytest.approx(fit["intercept"])
    assert (y[1] - y[0]) / (x[1] - x[0]) == pytest.approx(fit["slope"])


def test_spike_switches_to_clipped_log_axis():
    r = synth(VGG_GOOD, model="tinyvgg", kind="tinyvgg", seeds=(451,),
              spikes={("relu", 451, 600): (15, 3.5e11)})
    fig = plots.family_batch_losses(r.batches, r.epochs, list(VGG_GOOD), model="tinyvgg")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_ylim()[1] < 100  # the other curves keep the axis
    assert len(lines(fig, "spike")) == 1
    assert any("3.5e+11" in t.get_text() for t in ax.texts)
    render(fig)


def test_test_curves_and_bands():
    r = synth(MLP_GOOD)
    fig = plots.family_test_curves(r.epochs, list(MLP_GOOD), model="mlp")
    assert len(fig.axes) == 2
    assert len(lines(fig, "data")) == 2 * len(MLP_GOOD)
    (bands,) = fig.axes[0].collections  # one collection holds every band of the panel
    assert len(bands.get_paths()) == len(MLP_GOOD)  # a band per activation
    ci = an.curve_intervals(r.epochs, ["test_loss"])
    relu = ci[ci["activation"] == "relu"].sort_values("epoch")
    order = [a for a in plots.STYLES if a in MLP_GOOD]
    ys = bands.get_paths()[order.index("relu")].vertices[:2 * len(relu), 1]  # less the closing vertex
    assert sorted(ys) == pytest.approx(sorted(np.r_[relu["high"], relu["low"]]))
    assert to_rgb(bands.get_facecolors()[order.index("relu")][:3]) == pytest.approx(
        to_rgb(plots.style("relu")["color"]))
    assert "accuracy (%)" in fig.axes[1].get_ylabel()
    render(fig)


def test_a_band_breaks_where_its_interval_is_missing():
    x = np.arange(6.0)
    low = np.array([0, 1, np.nan, 3, 4, 5.0])
    polygons = _band_polygons(x, low, low + 1)
    assert [p[:, 0].tolist() for p in polygons] == [[0, 1, 1, 0], [3, 4, 5, 5, 4, 3]]
    assert polygons[1][:, 1].tolist() == [4, 5, 6, 5, 4, 3]  # the top forwards, the bottom back
    assert _band_polygons(x, low * np.nan, low) == []


def test_colour_is_the_same_across_figures():
    r = synth(MLP_GOOD)
    f1 = plots.epoch_loss_curves(r.epochs, model="mlp", n_train=600)
    f2 = plots.accuracy_curves(r.epochs, model="mlp", n_train=600)
    for fig in (f1, f2):
        selu = [l for l in lines(fig, "data") if l.get_marker() == plots.style("selu")["marker"]]
        assert selu and all(to_rgb(l.get_color()) == to_rgb(plots.style("selu")["color"])
                            for l in selu)
    assert len(lines(f1, "data")) == 2 * len(MLP_GOOD)


def test_curves_of_every_size_in_one_figure_a_row_each():
    r = synth(MLP_GOOD, n_train=(300, 600))
    for fig in (plots.epoch_loss_curves(r.epochs, model="mlp"),
                plots.accuracy_curves(r.epochs, model="mlp"),
                plots.epoch_regression(r.epochs, an.epoch_fits(r.epochs), model="mlp")):
        assert [ax.get_title().split("n_train = ")[1][:3] for ax in fig.axes] == ["300"] * 2 + ["600"] * 2
        assert len(lines(fig, "data")) == 4 * len(MLP_GOOD)
    one = plots.epoch_regression(r.epochs, an.epoch_fits(r.epochs), model="mlp", n_train=600)
    assert len(one.axes) == 2 and len(lines(one, "fit")) == 2 * len(MLP_GOOD)


def test_regression_and_dynamics_and_summaries():
    r = supported_study()
    per_run = an.run_metrics(r.epochs)
    fig = plots.epoch_regression(r.epochs, an.epoch_fits(r.epochs), model="mlp", n_train=600)
    assert len(lines(fig, "fit")) == 2 * len(MLP_GOOD)
    spikes = an.detect_spikes(r.batches)
    fig = plots.batch_dynamics(r.batches, spikes, model="tinyvgg", n_train=600, seed=1)
    assert fig.axes[0].get_yscale() == "log" and len(lines(fig, "spike")) >= 1
    assert fig.axes[1].get_title() == "first epoch, close up"
    render(fig)
    heat = plots.final_loss_heatmap(per_run, model="mlp")
    assert heat.axes[0].get_ylabel() == "activation"
    render(heat)
    sv = plots.start_vs_final(per_run, model="mlp_original", logit_floors=True)
    assert len(lines(sv, "data")) >= len(MLP_GOOD)
    render(sv)


def test_empty_selection_still_gives_a_figure():
    r = synth(MLP_GOOD)
    fig = plots.family_batch_losses(r.batches, r.epochs, ["mish"], model="mlp")
    assert isinstance(fig, Figure) and not lines(fig, "data")
    render(fig)
