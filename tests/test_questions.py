"""The fair and low-sample questions end to end: an lr grid with a validation split, three
sizes and perturbed siblings, through `actconv run` and `actconv report`."""
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

STUDY = """
name = "questions"
epochs = 2
lr = [0.03, 0.3]
reference_lr = 0.3
validation = 200
perturb = ["init", "order"]
replicas = 1
perturb_seeds = [1]

[models.m]
kind = "mlp"
hidden_units = 8

[[grid]]
models = ["m"]
activations = ["relu", "tanh", "sigmoid"]
seeds = [1, 2]
n_train = [100, 200, 400]
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("questions")
    (root / "s.toml").write_text(STUDY)
    run = [sys.executable, "-m", "actconv.cli"]
    subprocess.run(run + ["run", str(root / "s.toml"), "--out", str(root / "out"), "--jobs", "1",
                          "--quiet"], check=True, capture_output=True)
    subprocess.run(run + ["report", str(root / "out")], check=True, capture_output=True)
    return root / "out" / "report"


def test_choices_follow_the_validation_candidates(report):
    cand = pd.read_csv(report / "candidates.csv")
    tuned = pd.read_csv(report / "tuned.csv")
    assert len(tuned) == 3 * 3  # sizes x activations, one condition (lr is tuned away)
    for t in tuned.itertuples():
        c = cand[(cand.n_train == t.n_train) & (cand.activation == t.activation) & (cand.n_bad == 0)]
        assert t.best_lr == c.loc[c.val_loss.idxmin(), "lr"]


def test_test_metrics_at_the_choice_match_the_store(report, tmp_path):
    import actconv
    res = actconv.load_results(report.parent)
    tuned = pd.read_csv(report / "tuned.csv").iloc[0]
    runs = res.runs[res.runs.config_json.str.contains(f'"lr":{tuned.best_lr}')
                    & ~res.runs.config_json.str.contains('"perturb"')
                    & (res.runs.activation == tuned.activation) & (res.runs.n_train == tuned.n_train)]
    last = res.epochs[res.epochs.run_id.isin(runs.run_id)].sort_values("epoch").groupby("run_id").last()
    assert len(last) == 2 and tuned.test_loss == pytest.approx(last.test_loss.mean())


def test_every_accuracy_interval_lies_in_the_unit_range(report):
    for name, lo, hi in (("summary.csv", "low", "high"), ("tuned.csv", "test_accuracy_low", "test_accuracy_high")):
        t = pd.read_csv(report / name)
        if name == "summary.csv":
            t = t[t.metric.str.contains("accuracy")]
        assert (t[lo].dropna() >= 0).all() and (t[hi].dropna() <= 1).all()


def test_siblings_are_not_counted_as_seeds(report):
    summary = pd.read_csv(report / "summary.csv")
    assert set(summary[summary.metric == "final_test_loss"].n_seeds) == {2}


def test_learning_curves_and_robustness_tables(report):
    lc = pd.read_csv(report / "learning_curves.csv")
    assert len(lc) == 2 * 3 and set(lc.form) <= {"a*n^-b", "a*n^-b+c"}
    assert (lc.b_low <= lc.b).all() and (lc.b <= lc.b_high).all()
    rob = pd.read_csv(report / "robustness.csv")
    assert set(rob.sets) == {2} and rob.share.between(0, 1).all()
    assert set(pd.read_csv(report / "samples.csv").id) == {"n1", "n2"}
    assert "r1" in set(pd.read_csv(report / "fairness.csv").id)


def test_the_page_opens_with_answers_that_carry_numbers(report):
    page = (report / "index.html").read_text()
    first_h2 = re.search(r"<h2 id='([^']+)'", page).group(1)
    assert first_h2 == "answers"
    items = re.findall(r"<li>(.*?) <a href='#([^']+)'>evidence</a></li>", page)
    assert 3 <= len(items) <= 8
    for text, anchor in items:
        assert re.search(r"\d", text)                 # no sentence without a number
        assert "..." not in text and "\u2026" not in text and text.endswith(".")  # whole sentences
        assert f"id='{anchor}'" in page                # and its evidence is on the page


def test_the_studys_reference_lr_is_the_unfair_setting(report):
    ref = pd.read_csv(report / "reference_ranking.csv")
    assert len(ref) == 3 * 3 and set(ref.n_seeds) == {2}
    shift = pd.read_csv(report / "ranking_shift.csv")
    assert set(shift.n_train) == {100, 200, 400}
    assert "lr 0.3" in " ".join(pd.read_csv(report / "fairness.csv").evidence)
