"""The search's tables on hand-built runs: choices from the tuning seeds' validation scores,
test numbers from the confirm seeds only, edges, the winner's curse; and the focus
activation against the best built-in, with its interval, Holm p and verdict."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from actconv.analysis import confirm, focus, tuning
from actconv.analysis.stats import holm
from actconv.study import search as s
from actconv.study.config import BUILTIN_MODELS, RunSpec

SEARCH = s.build("x", "known", space=[s.parse_assignment("lr=log(0.01,1)")], tune_seeds=[1, 2],
                 confirm_seeds=[5, 6, 7])


def _tables(rows):
    """runs and epochs from (activation, seed, lr, status, val loss, test loss)."""
    runs, epochs = [], []
    for act, seed, lr, status, val, test in rows:
        spec = RunSpec(model="mlp", model_spec=BUILTIN_MODELS["mlp"], activation=act, seed=seed,
                       n_train=100, lr=lr, validation=50)
        runs.append(dict(run_id=spec.run_id, model="mlp", activation=act, seed=seed, n_train=100, lr=lr,
                         status=status, config_json=spec.to_json()))
        base = dict(run_id=spec.run_id, model="mlp", activation=act, seed=seed, n_train=100)
        epochs.append(dict(base, epoch=0, train_loss=2.3, train_accuracy=0.1, test_loss=2.3,
                           test_accuracy=0.1, val_loss=2.3, val_accuracy=0.1))
        epochs.append(dict(base, epoch=1, train_loss=1.0, train_accuracy=0.6, test_loss=test,
                           test_accuracy=1 - test / 3, val_loss=val, val_accuracy=0.5))
    return pd.DataFrame(runs), pd.DataFrame(epochs)


def _search_store():
    """relu: validation picks lr 0.1 (test on the tuning seeds would pick 0.01); tanh picks
    lr 1, the top of the range; the confirm seeds test worse than the tuning seeds did."""
    rows = []
    for seed in (1, 2):
        rows += [("relu", seed, 0.01, "done", 0.50, 0.10), ("relu", seed, 0.1, "done", 0.30, 0.20),
                 ("relu", seed, 1.0, "diverged", 0.10, 0.05),
                 ("tanh", seed, 0.05, "done", 0.60, 0.40), ("tanh", seed, 1.0, "done", 0.40 + seed / 100, 0.30)]
    for seed, extra in zip((5, 6, 7), (0.1, 0.15, 0.2)):
        rows += [("relu", seed, 0.1, "done", 9.0, 0.20 + extra), ("tanh", seed, 1.0, "done", 9.0, 0.30 + extra)]
    return _tables(rows)


def test_the_choice_comes_from_tuning_seeds_and_the_test_numbers_from_confirm_seeds():
    per_run = tuning.final_metrics(*_search_store())
    t = confirm.confirmed(per_run, SEARCH).set_index("activation")
    assert t.loc["relu", "best_lr"] == 0.1 and t.loc["tanh", "best_lr"] == 1.0
    assert t.loc["relu", "val_loss"] == pytest.approx(0.30)  # the confirm seeds' 9.0 is never read
    assert t.loc["relu", "tune_test_loss"] == pytest.approx(0.20)
    assert t.loc["relu", "test_loss"] == pytest.approx(0.35)   # mean of 0.30, 0.35, 0.40
    assert t.loc["relu", "winners_curse"] == pytest.approx(0.15)
    assert (t.loc["relu", "n_confirm_seeds"], t.loc["relu", "n_tune_seeds"]) == (3, 2)
    assert not t.loc["relu", "at_edge"] and t.loc["tanh", "at_edge"]
    assert t.loc["tanh", "edge"] == "lr=1 highest of log(0.01, 1)"
    assert (t.loc["relu", "rank"], t.loc["tanh", "rank"]) == (1, 2)


def test_scrambling_every_test_column_changes_no_choice():
    runs, epochs = _search_store()
    rng = np.random.default_rng(0)
    scrambled = epochs.assign(test_loss=rng.permutation(epochs["test_loss"].to_numpy()),
                              test_accuracy=rng.permutation(epochs["test_accuracy"].to_numpy()))
    a = confirm.confirmed(tuning.final_metrics(runs, epochs), SEARCH)
    b = confirm.confirmed(tuning.final_metrics(runs, scrambled), SEARCH)
    cols = ["condition", "n_train", "activation", "best_lr", "val_loss", "at_edge", "edge"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


@pytest.mark.parametrize("value, r, side", [
    (0.0105, s.Range("log", 0.01, 1.0), "low"),     # log10 span 2: 5% is 0.1 decades
    (0.013, s.Range("log", 0.01, 1.0), ""),
    (0.8, s.Range("log", 0.01, 1.0), "high"),
    (0.86, s.Range("uniform", 0.0, 0.9), "high"),   # 5% of 0.9 is 0.045
    (0.8, s.Range("uniform", 0.0, 0.9), ""),
    (0.9, s.Range("list", values=(0.0, 0.5, 0.9)), "high"),
    (0.5, s.Range("list", values=(0.0, 0.5, 0.9)), ""),
    (1.0, s.Range("int", 1.0, 4.0), "low"), (2.0, s.Range("int", 1.0, 4.0), ""),
])
def test_edges_of_ranges(value, r, side):
    assert confirm.edge(value, r) == side


def test_a_grid_tuning_names_a_choice_at_its_largest_value():
    rows = [(a, seed, lr, "done", val, 0.5) for seed in (1, 2)
            for a, lr, val in (("relu", 0.03, 0.5), ("relu", 0.1, 0.4), ("relu", 0.3, 0.3),
                               ("tanh", 0.03, 0.5), ("tanh", 0.1, 0.2), ("tanh", 0.3, 0.3))]
    per_run = tuning.final_metrics(*_tables(rows))
    cand = tuning.candidates(per_run)
    t = confirm.mark_edges(tuning.tune(per_run), confirm.grid_space(cand, ["lr"])).set_index("activation")
    assert t.loc["relu", "edge"] == "lr=0.3 highest of [0.03, 0.1, 0.3]" and not t.loc["tanh", "at_edge"]


def _view():
    a = np.array([1.0, 1.1, 1.2, 1.3])
    rows = []
    for n, mine in ((100, a - [0.1, 0.2, 0.1, 0.2]), (200, a + [0.1, -0.1, 0.05, -0.04])):
        for act, loss in (("a", a), ("b", np.full(4, 2.0)), ("mine", mine)):
            rows += [dict(condition="mlp", n_train=n, activation=act, seed=k, final_test_loss=v)
                     for k, v in enumerate(loss)]
    return pd.DataFrame(rows)


def test_the_focus_activation_is_compared_with_the_best_builtin_over_the_same_seeds():
    f = focus.focus_table(_view(), "mine", {"a", "b"}).set_index("n_train")
    assert list(f["best_builtin"]) == ["a", "a"] and list(f["rank"]) == [1, 2]
    d = np.array([-0.1, -0.2, -0.1, -0.2])
    assert f.loc[100, "mean_diff"] == pytest.approx(-0.15)
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert (f.loc[100, "diff_low"], f.loc[100, "diff_high"]) == pytest.approx((-0.15 - half, -0.15 + half))
    p = [stats.ttest_rel(_view().query(f"n_train == {n} and activation == 'mine'")["final_test_loss"],
                         _view().query(f"n_train == {n} and activation == 'a'")["final_test_loss"]).pvalue
         for n in (100, 200)]
    assert list(f["p"]) == pytest.approx(p) and list(f["p_holm"]) == pytest.approx(list(holm(p)))
    assert list(f["verdict"]) == ["better", "cannot tell"]


def test_user_defined_activations_are_found_in_the_stored_configs():
    runs = pd.DataFrame(dict(activation=["relu", "ptanh"], config_json=[
        '{"activation":"relu"}', '{"activation":"ptanh","activation_def":"{}"}']))
    assert focus.user_defined(runs) == ["ptanh"]


def test_the_focus_table_gains_the_images_to_80_percent_from_the_learning_curves():
    f = focus.focus_table(_view(), "mine", {"a", "b"})
    curves = pd.DataFrame(dict(model=["mlp", "mlp"], activation=["mine", "a"], n_to_80=[450.0, 900.0]))
    g = focus.with_samples_to_target(f, curves)
    assert list(g["n_to_80"]) == [450.0, 450.0] and list(g["builtin_n_to_80"]) == [900.0, 900.0]
    assert focus.with_samples_to_target(f, None)["n_to_80"].isna().all()


def test_a_cell_whose_every_trial_went_bad_has_a_note_and_no_confirm_numbers():
    runs, epochs = _tables([("relu", seed, lr, "diverged", 0.3, 0.2) for seed in (1, 2) for lr in (0.1, 1.0)]
                           + [("tanh", seed, 0.1, "done", 0.3, 0.2) for seed in (1, 2)]
                           + [("tanh", seed, 0.1, "done", 9.0, 0.4) for seed in (5, 6, 7)])
    t = confirm.confirmed(tuning.final_metrics(runs, epochs), SEARCH).set_index("activation")
    assert t.loc["relu", "note"].startswith("every value diverged") and t.loc["relu", "n_confirm_seeds"] == 0
    assert np.isnan(t.loc["relu", "test_loss"]) and not t.loc["relu", "at_edge"]
    assert t.loc["tanh", "test_loss"] == pytest.approx(0.4) and t.loc["tanh", "rank"] == 1
