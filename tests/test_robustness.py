"""Robustness shares on hand-built verdict sets, and recurrence labels."""
import pytest

from actconv.analysis import robustness


def test_shares_count_the_sets_that_agree_with_the_original():
    sets = {"original": {("a", "mlp"): "supported", ("b", "mlp"): "not supported"},
            "init 0": {("a", "mlp"): "supported", ("b", "mlp"): "inconclusive"},
            "init 1": {("a", "mlp"): "supported", ("b", "mlp"): "not supported"},
            "order 0": {("a", "mlp"): "inconclusive"}}
    out = robustness.shares(sets).set_index("id")
    assert out.loc["a", "holds"] == 2 and out.loc["a", "sets"] == 3
    assert out.loc["a", "share"] == pytest.approx(2 / 3)
    assert out.loc["b", "holds"] == 1 and out.loc["b", "share"] == pytest.approx(1 / 3)


def test_no_replica_sets_gives_no_share():
    out = robustness.shares({"original": {("a", "x"): "supported"}})
    assert out["sets"].tolist() == [0] and out["share"].isna().all()


@pytest.mark.parametrize("k,n,text", [(3, 3, "recurs in 3/3: systematic"),
                                      (1, 4, "1 of 4: chaotic at this setting"),
                                      (2, 4, "recurs in 2/4")])
def test_recurrence_labels(k, n, text):
    assert robustness._label(k, n) == text
