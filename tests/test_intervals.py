"""Intervals stay inside the metric's range at 2 and 3 seeds (the plain t-interval did not)."""
import math

import numpy as np
import pandas as pd
import pytest

from actconv import analysis


@pytest.mark.parametrize("values", [[0.95, 1.0], [0.2, 0.9], [0.98, 0.99, 1.0], [0.0, 0.05, 0.4]])
def test_accuracy_intervals_stay_in_unit_range(values):
    n, mean, _, low, high, method, _ = analysis.interval(values, bounds=(0, 1))
    plain = analysis.interval(values)
    assert plain[3] < 0 or plain[4] > 1          # the case the bounds are for
    assert 0 <= low <= mean <= high <= 1 and method == "t (transformed)"
    assert mean == pytest.approx(np.mean(values))


def test_loss_intervals_never_go_below_zero():
    n, mean, _, low, high, _, _ = analysis.interval([0.01, 0.5], bounds=(0, math.inf))
    assert 0 <= low <= mean <= high


def test_inside_the_range_the_t_interval_is_unchanged():
    assert analysis.interval([0.5, 0.52, 0.51], bounds=(0, 1)) == analysis.interval([0.5, 0.52, 0.51])


def test_aggregate_bounds_accuracy_by_name():
    per_run = pd.DataFrame({"model": "mlp", "activation": "relu", "n_train": 600, "seed": [1, 2],
                            "final_train_accuracy": [0.62, 1.0], "gap": [-0.5, 0.5]})
    agg = analysis.aggregate(per_run, ["final_train_accuracy", "gap"]).set_index("metric")
    assert 0 <= agg.loc["final_train_accuracy", "low"] and agg.loc["final_train_accuracy", "high"] <= 1
    assert agg.loc["gap", "low"] < -1  # a signed quantity keeps its plain t-interval
