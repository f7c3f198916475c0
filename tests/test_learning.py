"""Learning curves in n, samples-to-target and the activation x n interaction: known answers."""
import numpy as np
import pandas as pd
import pytest

from actconv.analysis import learning

SIZES = np.array([100, 200, 400, 800, 1600, 3200])


def _study(curves: dict, seeds=5, noise=0.0, seed=1) -> pd.DataFrame:
    """per_run rows from exact power laws {activation: (a, b, c)}, accuracy = 1 - loss / 3."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        for act, (a, b, c) in curves.items():
            for n in SIZES:
                loss = a * n ** -b + c + rng.normal(0, noise)
                rows.append(dict(model="mlp", activation=act, seed=s, n_train=int(n),
                                 final_test_loss=loss, final_test_accuracy=1 - loss / 3))
    return pd.DataFrame(rows)


def test_power_law_with_offset_is_recovered():
    fit = learning.fit_power_law(SIZES, 3 * SIZES ** -0.4 + 0.2)
    assert fit["form"] == "a*n^-b+c"
    assert fit["b"] == pytest.approx(0.4, abs=0.01)
    assert fit["c"] == pytest.approx(0.2, abs=0.005)
    assert fit["a"] == pytest.approx(3, rel=0.02)


def test_pure_power_law_reports_the_two_parameter_form():
    fit = learning.fit_power_law(SIZES, 5 * SIZES ** -0.25)
    assert fit["form"] == "a*n^-b" and fit["c"] == 0
    assert fit["b"] == pytest.approx(0.25, abs=1e-9) and fit["a"] == pytest.approx(5, rel=1e-9)


def test_three_sizes_cannot_identify_the_offset():
    assert learning.fit_power_law(SIZES[:3], 3 * SIZES[:3] ** -0.4 + 0.2)["form"] == "a*n^-b"


def test_samples_to_target_interpolates_in_log_n():
    n, status = learning.n_to_target([100, 400], [0.7, 0.9], 0.8)
    assert status == "reached" and n == pytest.approx(200.0)
    assert learning.n_to_target([100, 400], [0.85, 0.9], 0.8) == (100.0, "at smallest n")
    n, status = learning.n_to_target([100, 400], [0.5, 0.6], 0.8)
    assert status == "not reached" and np.isnan(n)


def test_learning_curves_per_activation_with_intervals():
    per_run = _study({"relu": (3, 0.4, 0.1), "tanh": (5, 0.5, 0.05)}, noise=0.002)
    lc = learning.learning_curves(per_run, n_boot=300).set_index("activation")
    assert list(lc.index) == ["relu", "tanh"]
    for act, b in (("relu", 0.4), ("tanh", 0.5)):
        row = lc.loc[act]
        assert row["form"] == "a*n^-b+c"
        assert row["b_low"] <= row["b"] <= row["b_high"]
        assert row["b_low"] < b + 0.02 and row["b_high"] > b - 0.02
    # tanh: loss 5 n^-0.5 + 0.05 = 0.3 (accuracy 0.9) at n = 400
    assert lc.loc["tanh", "n_to_90"] == pytest.approx(400, rel=0.05)
    assert lc.loc["tanh", "n_to_90_status"] == "reached"


def test_curves_need_three_sizes():
    per_run = _study({"relu": (3, 0.4, 0.1)})
    assert learning.learning_curves(per_run[per_run["n_train"] <= 200]).empty


def test_interaction_found_where_the_ranking_flips():
    per_run = _study({"relu": (3, 0.4, 0.1), "tanh": (1, 0.1, 0.0)}, noise=0.01)
    res = learning.interaction_test(per_run, n_perm=500)
    assert res["p"] < 0.01 and res["n_seeds"] == 5


def test_no_interaction_in_additive_data():
    per_run = _study({"relu": (3, 0.4, 0.1)}, seeds=6)
    shifted = per_run.assign(activation="tanh", final_test_loss=per_run["final_test_loss"] + 0.3)
    both = pd.concat([per_run, shifted], ignore_index=True)
    assert learning.interaction_test(both, n_perm=500)["p"] == 1.0
    noisy = both.assign(final_test_loss=both["final_test_loss"]
                        + np.random.default_rng(3).normal(0, 0.01, len(both)))
    assert learning.interaction_test(noisy, n_perm=500)["p"] > 0.05


def test_rank_change_names_the_activations_that_move():
    # at n=100: c 0.40, e 0.63, f 0.75, a 0.79; at n=3200: f 0.047, c 0.071, e 0.079, a 0.67
    per_run = _study({"a": (1, 0.05, 0), "c": (4, 0.5, 0), "e": (10, 0.6, 0), "f": (30, 0.8, 0)})
    res = learning.rank_change(per_run)
    assert (res["n_small"], res["n_large"]) == (100, 3200)
    assert res["rank_small"] == {"a": 4, "c": 1, "e": 2, "f": 3}
    assert res["rank_large"] == {"a": 4, "c": 2, "e": 3, "f": 1}
    assert res["moved"] == {"f": (3, 1)}
    assert res["tau"] == pytest.approx(1 / 3)  # 4 concordant, 2 discordant pairs of 6
