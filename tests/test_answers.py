"""The answers in whole sentences, the claim x model verdict grid and the interactive specs:
known answers on hand-made tables."""
import json

import numpy as np
import pandas as pd

from actconv.report import answers, interactive


def n1_row(scope, verdict, moved):
    numbers = dict(p=0.01, n_seeds=5, tau=0.2, n_small=100, n_large=3200, n_moved=len(moved),
                   moved=[[a, s, e] for a, s, e in moved])
    return dict(id="n1", claim="The ranking holds", scope=scope, verdict=verdict,
                evidence="activation x n interaction ...", numbers=json.dumps(numbers))


def test_the_n_answer_names_every_activation_that_moved_or_the_first_five_and_a_count():
    seven = [(f"act{i}", i, 9 - i) for i in range(1, 8)]
    t = {"samples": pd.DataFrame([n1_row("mlp", "not supported", seven),
                                  n1_row("tiny", "supported", [("relu", 1, 3)])])}
    texts = [a.text for a in answers._holds_as_n_grows(t)]
    assert texts[0] == ("mlp: the ranking at n=100 does not hold at n=3200: the activation x n interaction "
                        "has permutation p = 0.0100 over 5 seeds, Kendall's tau between the two rankings is "
                        "0.200, and 7 activations move 2 or more places (act1 1->8, act2 2->7, act3 3->6, "
                        "act4 4->5, act5 5->4 and 2 more).")
    assert texts[1].endswith("and 1 activation move 2 or more places (relu 1->3).")
    assert all("..." not in x for x in texts)


def test_few_lists_names_in_full_up_to_the_limit():
    assert answers._few(["a"]) == "a"
    assert answers._few(["a", "b"]) == "a and b"
    assert answers._few(list("abcde")) == "a, b, c, d and e"
    assert answers._few(list("abcdefg"), limit=3) == "a, b, c and 4 more"


def verdicts(rows):
    return pd.DataFrame([dict(id=i, claim=f"claim {i}", scope=s, verdict=v, evidence="", numbers="{}")
                         for i, s, v in rows])


def test_the_verdict_grid_puts_each_scope_under_its_model():
    findings = verdicts([("a", "mlp", "supported"), ("a", "mlp_original", "not supported"),
                         ("d", "mlp (linear logits)", "not supported"), ("f", "all models", "supported")])
    samples = verdicts([("n2", "mlp, n=100", "supported"), ("n2", "mlp, n=400", "inconclusive")])
    per_run = pd.DataFrame({"model": ["mlp", "mlp_original"]})
    grid = answers.verdict_grid({"findings": findings, "samples": samples, "per_run": per_run})
    assert list(grid.columns) == ["mlp", "mlp_original"]
    assert grid.loc["(a) claim a", "mlp"] == [("", "supported")]
    assert grid.loc["(a) claim a", "mlp_original"] == [("", "not supported")]  # not mlp's: longest name wins
    assert grid.loc["(d) claim d", "mlp"] == [("(linear logits)", "not supported")]
    assert not isinstance(grid.loc["(d) claim d", "mlp_original"], list)  # not judged there
    assert grid.loc["(f) claim f"].tolist() == [[("", "supported")]] * 2
    assert grid.loc["(n2) claim n2", "mlp"] == [("n=100", "supported"), ("n=400", "inconclusive")]
    text = answers._original_findings({"findings": findings, "per_run": per_run})[0].text
    assert text == ("Of the notebook's 3 findings, judged per model in the table below, 1 holds in every "
                    "model where judged: (f) claim f; 1 fails in every model: (d) claim d; the other 1 "
                    "hold in some models and not in others, or cannot be decided.")


def curves(acts=("relu", "tanh"), sizes=(100, 400), epochs=3):
    rows = []
    for a in acts:
        for n in sizes:
            for e in range(epochs + 1):
                for c in ("test_loss", "test_accuracy", "train_loss"):
                    m = 1.0 / (e + 1) + (a == "tanh") + n / 1e4
                    rows.append(dict(model="mlp", activation=a, n_train=n, epoch=e, column=c,
                                     n_seeds=3, mean=m, low=m - 0.1, high=m + 0.2))
    return pd.DataFrame(rows)


def test_epoch_curves_spec_has_a_line_per_activation_and_panel_with_its_interval():
    c = curves()
    f = interactive.epoch_curves(c, "mlp")
    data = f.spec["data"]
    assert len(data) == 2 * 2 * 2  # activations x sizes x (loss, accuracy); train loss is not drawn
    assert [d["name"] for d in data if d["showlegend"]] == ["relu", "tanh"]  # one legend entry each
    axes = {(d["xaxis"], d["yaxis"]) for d in data}
    assert axes == {("x", "y"), ("x2", "y2"), ("x3", "y3"), ("x4", "y4")}
    tanh = next(d for d in data if d["name"] == "tanh" and d["xaxis"] == "x3")  # n=400, test loss
    want = c[(c.activation == "tanh") & (c.n_train == 400) & (c.column == "test_loss")].sort_values("epoch")
    assert tanh["y"] == want["mean"].tolist() and tanh["x"] == [0.0, 1.0, 2.0, 3.0]
    assert [row[:2] for row in tanh["customdata"]] == want[["low", "high"]].values.tolist()
    assert "<b>tanh</b>" in tanh["hovertemplate"] and "95% CI" in tanh["hovertemplate"]
    assert f.spec["layout"]["grid"] == {"rows": 2, "columns": 2, "pattern": "independent"}


def test_a_spec_is_json_without_nan_and_cannot_close_its_script_element():
    c = curves(acts=("relu",), sizes=(100,), epochs=1)
    c.loc[0, "low"] = np.nan
    c["activation"] = "</script><b>x</b>"
    text = interactive.spec_json(interactive.epoch_curves(c, "mlp").spec)
    assert "</" not in text and "NaN" not in text
    back = json.loads(text)
    assert back["data"][0]["customdata"][0][0] is None
    assert back["data"][0]["name"] == "</script><b>x</b>"
    assert "&lt;/script&gt;" in back["data"][0]["hovertemplate"]  # shown as text, not markup


def test_learning_and_tuned_figures_need_what_they_draw():
    summary = pd.DataFrame([dict(model="mlp", activation=a, n_train=n, metric="final_test_loss",
                                 n_seeds=3, mean=1 / n, low=0.5 / n, high=2 / n)
                            for a in ("relu", "tanh") for n in (100, 400)])
    f = interactive.learning_curves(summary, "mlp")
    assert [d["name"] for d in f.spec["data"]] == ["relu", "tanh"]
    bars = f.spec["data"][0]["error_y"]
    assert np.allclose(bars["array"], [0.01, 0.0025]) and np.allclose(bars["arrayminus"], [0.005, 0.00125])
    assert interactive.learning_curves(summary[summary.n_train == 100], "mlp") is None  # one size: no curve
    assert interactive.figures_for({}) == []
