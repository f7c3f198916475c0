"""The search per cell: ranges parsed without eval, bad input refused before anything is
stored, Optuna's ask-and-tell finding a known optimum, and a killed search resumed asking
exactly the trials of an uninterrupted one (MLP on digits, tiny n, 2 epochs)."""
import math
import sqlite3

import pandas as pd
import pytest

from actconv.cli import main
from actconv.errors import ConfigError
from actconv.run import search as run_search_mod
from actconv.run.search import Cell, ask_and_tell, best_trials, cells, run_search
from actconv.run.store import Store
from actconv.study import config
from actconv.study import search as s


# -- parsing -------------------------------------------------------------------------------

def test_ranges_parse_into_their_kinds():
    assert s.parse_range("lr", "log(0.001, 1)") == s.Range("log", 0.001, 1.0)
    assert s.parse_range("momentum", " uniform(0,.9) ") == s.Range("uniform", 0.0, 0.9)
    assert s.parse_range("weight_decay", "int(0,3)") == s.Range("int", 0.0, 3.0)
    assert s.parse_range("momentum", "[0, 0.9, 0.9]") == s.Range("list", values=(0.0, 0.9))
    assert s.parse_range("lr", [0.1, 1]) == s.Range("list", values=(0.1, 1.0))  # a TOML list
    assert s.parse_assignment("lr=log(1e-3,1e0)") == ("lr", s.Range("log", 0.001, 1.0))
    assert s.parse_seeds("1,2,5-7", "x", "k") == (1, 2, 5, 6, 7)


@pytest.mark.parametrize("text, words", [
    ("batch_size=[32,64]", "cannot search 'batch_size'"),
    ("lr=log(1,0.1)", "empty or reversed"),
    ("lr=uniform(0.1,0.1)", "empty or reversed"),
    ("momentum=log(0,0.9)", "log range needs bounds above 0"),
    ("lr=uniform(0,1)", "lr must be positive"),
    ("momentum=[]", "empty"),
    ("momentum=[-1, 0]", "non-negative"),
    ("lr=__import__('os').system('true')", "expected log(a,b)"),  # read by a regex, never run
    ("lr=[1, os]", "'os' is not a number"),
    ("lr=int(0.5,2)", "whole numbers"),
    ("lr", "expected AXIS=RANGE"),
])
def test_bad_ranges_are_one_line_errors(text, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")) as e:
        s.parse_assignment(text)
    assert "\n" not in str(e.value)


def test_the_budget_sampler_and_seeds_are_checked():
    space = [s.parse_assignment("lr=log(0.01,1)")]
    with pytest.raises(ConfigError, match="trials must be a positive integer"):
        s.build("x", "st", space=space, trials=0)
    with pytest.raises(ConfigError, match="unknown sampler 'grid'; choose from: random, tpe, qmc"):
        s.build("x", "st", space=space, sampler="grid")
    with pytest.raises(ConfigError, match="disjoint from tune_seeds; both hold 3"):
        s.build("x", "st", space=space, tune_seeds="1-3", confirm_seeds="3-5")
    with pytest.raises(ConfigError, match="searched twice"):
        s.build("x", "st", space=space * 2)
    a, b = (s.build("x", name, space=space) for name in ("one", "two"))
    assert a.seed == s.build("y", "one", space=space).seed != b.seed  # from the name, stable


SEARCHED = {"name": "searched", "models": {"m": {"kind": "mlp", "hidden_units": 8}},
            "activations": ["relu"], "seeds": [42, 451], "n_train": [64], "epochs": 1, "validation": 100,
            "search": {"space": {"lr": "log(0.01, 1)", "momentum": [0, 0.9]}, "trials": 4,
                       "sampler": "random", "tune_seeds": "1-3"}}


def test_a_study_table_holds_a_search_whose_confirm_seeds_default_to_the_grids():
    st = config.study_from_dict(SEARCHED)
    assert st.search.space == (("lr", s.Range("log", 0.01, 1.0)), ("momentum", s.Range("list", values=(0.0, 0.9))))
    assert (st.search.trials, st.search.sampler) == (4, "random")
    assert st.search.tune_seeds == (1, 2, 3) and st.search.confirm_seeds == (42, 451)
    flagged = config.with_overrides(st, trials=2, confirm_seeds="101-103", search=["lr=[0.1, 0.3]"])
    assert flagged.search.space == (("lr", s.Range("list", values=(0.1, 0.3))),)
    assert (flagged.search.trials, flagged.search.confirm_seeds) == (2, (101, 102, 103))
    assert config.study_from_dict({**SEARCHED, "search": {"space": ["lr=log(0.01,1)", "momentum=[0,0.9]"],
                                                          "tune_seeds": "1-3"}}).search.space == st.search.space
    assert config.study_from_dict({k: v for k, v in SEARCHED.items() if k != "search"}).search is None
    with pytest.raises(ConfigError, match="grid 1 has none: set validation"):
        config.study_from_dict({**SEARCHED, "validation": 0})
    with pytest.raises(ConfigError, match="unknown key 'budget'"):
        config.study_from_dict({**SEARCHED, "search": {"budget": 3}})


def tiny(*extra):
    return ["--dataset", "digits", "--models", "mlp", "--hidden-units", "8", "--activations", "relu",
            "--n-train", "64", "--epochs", "1", "--jobs", "1", "--quiet", *extra]


@pytest.mark.parametrize("flags, words", [
    (["--validation", "100", "--search", "dropout=[0.1]"], "cannot search 'dropout'"),
    (["--validation", "100", "--search", "lr=log(1,0.01)"], "empty or reversed"),
    (["--validation", "100", "--search", "momentum=log(0,1)"], "bounds above 0"),
    (["--validation", "100", "--search", "lr=log(0.01,1)", "--trials", "0"], "trials must be"),
    (["--search", "lr=log(0.01,1)"], "validation split"),
    (["--validation", "100", "--search", "lr=log(0.01,1)", "--tune-seeds", "1,2",
      "--confirm-seeds", "2-4"], "disjoint"),
    (["--validation", "100", "--trials", "3"], "--trials needs a search"),
])
def test_bad_search_input_exits_2_with_one_line_and_nothing_stored(tmp_path, capsys, flags, words):
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), *tiny(*flags)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not out.exists()


# -- ask and tell on a known objective ---------------------------------------------------------

def _objective(best_lr):
    """A smooth bowl in log lr with its floor at best_lr; momentum 0.9 costs 0.5."""
    def f(params):
        return (math.log10(params["lr"]) - math.log10(best_lr)) ** 2 + 0.5 * (params["momentum"] > 0)
    return f


BOWLS = {Cell("mlp", "relu", 100): _objective(0.01), Cell("mlp", "tanh", 100): _objective(0.3)}
SPACE = [s.parse_assignment("lr=log(0.001,1)"), s.parse_assignment("momentum=[0, 0.9]")]


def _evaluate(batch):
    for t in batch:
        t.value = BOWLS[t.cell](t.params)


@pytest.mark.parametrize("sampler", ["random", "tpe", "qmc"])
def test_the_search_finds_each_cells_known_optimum(sampler):
    search = s.build("x", "known", space=SPACE, trials=40, sampler=sampler)
    best = best_trials(ask_and_tell(search, list(BOWLS), _evaluate, search.trials))
    for cell, lr in ((Cell("mlp", "relu", 100), 0.01), (Cell("mlp", "tanh", 100), 0.3)):
        assert best[cell].params["momentum"] == 0
        assert abs(math.log10(best[cell].params["lr"] / lr)) < 0.25  # within a factor of 1.8


def test_the_same_study_asks_the_same_trials_and_a_failed_trial_is_never_best():
    search = s.build("x", "known", space=SPACE, trials=8, sampler="tpe")
    a = ask_and_tell(search, list(BOWLS), _evaluate, 8)
    b = ask_and_tell(search, list(BOWLS), _evaluate, 8)
    assert [t.params for t in a] == [t.params for t in b]
    other = ask_and_tell(s.build("x", "other", space=SPACE, trials=8), list(BOWLS), _evaluate, 8)
    assert [t.params for t in other] != [t.params for t in a]

    def bad_first(batch):
        _evaluate(batch)
        for t in batch:
            t.value = math.inf if t.number == 0 else t.value
    trials = ask_and_tell(search, list(BOWLS), bad_first, 8)
    assert all(t.number >= 1 for t in best_trials(trials).values())


def test_an_unscored_trial_stops_the_search_before_its_batch_is_told():
    search = s.build("x", "known", space=SPACE, trials=8, sampler="tpe", batch=2)
    seen = []

    def unfinished_third(batch):
        seen.extend(t.number for t in batch)
        _evaluate(batch)
        for t in batch:
            t.value = None if t.number == 2 else t.value
    told = ask_and_tell(search, list(BOWLS), unfinished_third, 8)
    assert [t.number for t in told] == [0, 0, 1, 1] and all(t.value is not None for t in told)
    assert max(seen) == 3  # the batch of trials 2 and 3 was asked and scored, nothing later
    whole = ask_and_tell(search, list(BOWLS), _evaluate, 8)
    assert [t.params for t in told] == [t.params for t in whole[:4]]


# -- on the real store ---------------------------------------------------------------------------

def _study(trials=3, name="resume"):
    d = {**SEARCHED, "name": name, "n_train": [64, 128], "epochs": 2,
         "search": {"space": {"lr": "log(0.05, 1)", "momentum": [0, 0.5]}, "trials": trials,
                    "sampler": "tpe", "tune_seeds": [1, 2], "confirm_seeds": [7, 8]}}
    return config.with_overrides(config.study_from_dict(d), dataset="digits", device="cpu")


def _asked(outcome):
    return [(t.cell, t.number, t.params, t.run_ids) for t in outcome.trials]


def test_a_killed_search_resumes_with_the_same_trials_and_trains_only_the_rest(tmp_path, monkeypatch):
    whole = run_search(_study(), tmp_path / "whole", progress=False)
    assert whole.executed == 2 * 3 * 2 + 2 * 2  # 2 cells x 3 trials x 2 tune seeds; 2 confirmed x 2
    stored, write_many = [], Store.write_many

    def dies_mid_batch(self, results):  # the driver killed: once 5 runs are stored, no later unit is
        if len(stored) >= 5:
            raise KeyboardInterrupt
        write_many(self, results)  # the driver commits a unit's runs in one transaction
        stored.extend(r.run_id for r in results)
    monkeypatch.setattr(Store, "write_many", dies_mid_batch)
    with pytest.raises(KeyboardInterrupt):
        run_search(_study(), tmp_path / "killed", progress=False)
    monkeypatch.setattr(Store, "write_many", write_many)
    assert 5 <= len(stored) < 2 * 2 * 2  # within the second batch (each batch: 2 cells x 2 tune seeds)
    resumed = run_search(_study(), tmp_path / "killed", progress=False)
    assert _asked(resumed) == _asked(whole)
    assert resumed.executed == whole.executed - len(stored) and resumed.skipped >= len(stored)
    assert {c: t.params for c, t in resumed.best.items()} == {c: t.params for c, t in whole.best.items()}
    # a budget stops early without confirming; the longer search then asks the same first trials
    short = run_search(_study(), tmp_path / "short", max_trials=2, progress=False)
    assert _asked(short) == _asked(whole)[:4] and short.executed == 2 * 2 * 2


def _stored(out):
    with sqlite3.connect(out / "actconv.sqlite") as conn:
        return dict(conn.execute("SELECT run_id, status FROM runs").fetchall())


def test_a_search_stopped_by_a_failed_run_resumes_with_the_trials_of_an_uninterrupted_one(tmp_path, monkeypatch):
    # 12 tpe trials in batches of 2: trials 10 and 11 are asked once 10 are told, past tpe's 10
    # random start-up trials, so trial 2 told FAIL (9 complete) would have them asked at random
    d = {**SEARCHED, "name": "flaky", "search": {**SEARCHED["search"], "trials": 12, "batch": 2,
                                                 "sampler": "tpe", "tune_seeds": [1, 2], "confirm_seeds": [7]}}
    study = config.with_overrides(config.study_from_dict(d), dataset="digits", device="cpu")
    whole = run_search(study, tmp_path / "whole", progress=False)
    assert whole.stopped_at is None and len(whole.trials) == 12
    bad = next(t for t in whole.trials if t.number == 2).run_ids[0]
    # fails once (the marker file says it has): with no retries, the first call ends with it failed
    monkeypatch.setenv("ACTCONV_FAULT", f"raise-once:{bad}:{tmp_path / 'once'}")
    first = run_search(study, tmp_path / "flaky", progress=False, retries=0)
    assert first.stopped_at == 2 and first.best == {} and bad in dict(first.failed)
    assert _asked(first) == _asked(whole)[:2]  # trials 0 and 1 told; the batch of 2 and 3 not
    stored = _stored(tmp_path / "flaky")
    assert stored[bad] == "failed" and set(stored) < set(_stored(tmp_path / "whole"))  # nothing later, no confirm run
    resumed = run_search(study, tmp_path / "flaky", progress=False, retries=0)
    assert resumed.stopped_at is None and not resumed.failed
    assert _asked(resumed) == _asked(whole)
    assert {c: t.params for c, t in resumed.best.items()} == {c: t.params for c, t in whole.best.items()}
    assert _stored(tmp_path / "flaky") == _stored(tmp_path / "whole")  # the same runs, none orphaned


def test_the_cli_names_a_stopped_search_and_its_rerun_resumes(tmp_path, monkeypatch, capsys):
    def argv(out):
        return ["run", "--out", str(out), *tiny("--validation", "100", "--epochs", "2", "--n-train", "128",
                                                "--search", "lr=[0.1, 0.5]", "--trials", "2", "--tune-seeds", "1,2",
                                                "--confirm-seeds", "7", "--retries", "0")]
    assert main(argv(tmp_path / "whole")) == 0
    whole = capsys.readouterr().out
    bad = sorted(r for r, _ in _stored(tmp_path / "whole").items())[0]
    monkeypatch.setenv("ACTCONV_FAULT", f"raise-once:{bad}:{tmp_path / 'once'}")
    assert main(argv(tmp_path / "c")) == 1
    out, err = capsys.readouterr()
    assert "search: stopped before telling trial " in out and "nothing confirmed" in out
    # its trial's two seeds train as one ensemble unit, which fails whole
    assert err.count("\n") == 1 and err.startswith("actconv: 2 run(s) failed; first ")
    failed = {r for r, status in _stored(tmp_path / "c").items() if status == "failed"}
    assert bad in failed and err.split("first ")[1].split(":")[0] in failed
    assert err.rstrip().endswith("run the same command again to retry them and resume the search")
    assert main(argv(tmp_path / "c")) == 0
    assert "search: 1 cells x 2 trials (tpe) on seeds 1,2; 1 cells confirmed on seeds 7" in capsys.readouterr().out
    assert "1 cells confirmed" in whole and _stored(tmp_path / "c") == _stored(tmp_path / "whole")


def test_scrambled_test_losses_change_no_choice_and_train_nothing(tmp_path):
    first = run_search(_study(name="scramble"), tmp_path, progress=False)
    with sqlite3.connect(tmp_path / "actconv.sqlite") as conn:
        conn.execute("UPDATE epochs SET test_loss = abs(random() % 1000) / 100.0, test_accuracy = 0.5")
    again = run_search(_study(name="scramble"), tmp_path, progress=False)
    assert again.executed == 0
    assert [(t.params, t.value) for t in again.trials] == [(t.params, t.value) for t in first.trials]
    assert {c: t.number for c, t in again.best.items()} == {c: t.number for c, t in first.best.items()}


def test_the_cli_searches_and_confirms_on_fresh_seeds(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["run", "--out", str(out), *tiny("--validation", "100", "--epochs", "2", "--n-train", "128",
                                              "--search", "lr=log(0.05,1)", "--trials", "2",
                                              "--tune-seeds", "1,2", "--confirm-seeds", "101-103")])
    assert code == 0
    assert "search: 1 cells x 2 trials (tpe) on seeds 1,2; 1 cells confirmed on seeds 101-103" in capsys.readouterr().out
    with sqlite3.connect(out / "actconv.sqlite") as conn:
        rows = conn.execute("SELECT seed, COUNT(DISTINCT lr) FROM runs GROUP BY seed").fetchall()
    assert rows == [(1, 2), (2, 2), (101, 1), (102, 1), (103, 1)]


def test_the_report_opens_with_the_users_activation_and_names_a_choice_at_the_edge(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["run", "--out", str(out), *tiny(
        "--activations", "relu,ptanh=where(x > 0, tanh(x), 0.25 * tanh(x))", "--validation", "100",
        "--epochs", "2", "--n-train", "128", "--search", "lr=[0.1, 0.5]", "--trials", "2",
        "--sampler", "random", "--tune-seeds", "1,2", "--confirm-seeds", "5-7")]) == 0
    assert main(["report", str(out)]) == 0
    tuned = pd.read_csv(out / "report" / "tuned.csv")
    assert set(tuned["n_confirm_seeds"]) == {3} and tuned["at_edge"].all()  # two values: both edges
    assert {"winners_curse", "tune_test_loss", "edge"} <= set(tuned.columns)
    f = pd.read_csv(out / "report" / "focus.csv")
    assert list(f["focus"]) == ["ptanh"] and list(f["best_builtin"]) == ["relu"] and f["n_seeds"][0] == 3
    # every test number reads the confirm runs: one condition per cell, the 3 confirm seeds
    ranking = pd.read_csv(out / "report" / "ranking.csv")
    assert set(ranking["model"]) == {"mlp"} and set(ranking["n_seeds"]) == {3} and len(ranking) == 2
    summary = pd.read_csv(out / "report" / "summary.csv")
    assert set(summary.loc[summary["metric"] == "final_test_loss", "n_seeds"]) == {3}
    page = (out / "report" / "index.html").read_text()
    first = page[page.index("<ol class='answers'>"):].split("</li>")[0]
    assert "ptanh (mlp): n=128: rank" in first
    assert "widen the range" in page
    # the curve figures draw the confirmed view, one set per model, not one per trial's setting
    drawn = {f.stem for f in (out / "report" / "figures").glob("*.png")}
    assert "mlp-loss" in drawn and not [f for f in drawn if "lr" in f]
    assert main(["report", str(out), "--focus", "selu"]) == 2
    assert "--focus selu: no finished run of that activation" in capsys.readouterr().err


def test_a_trial_scores_its_mean_validation_metric_and_a_bad_run_scores_worst():
    from actconv.run.search import _value
    ok = [("done", 0.5, 1.0, 2.0, 0.8), ("done", 0.7, 1.1, 2.0, 0.6)]
    assert _value(ok) == pytest.approx(0.6) and _value(ok, "val_accuracy") == pytest.approx(-0.7)
    assert _value([*ok, ("diverged", 0.1, 1.0, 2.0, 0.9)]) == math.inf
    assert _value([*ok, ("done", 0.1, 2.5, 2.0, 0.9)]) == math.inf  # ended above its start
    assert _value([*ok, ("failed", None, None, None, None)]) is None and _value([*ok, None]) is None
    st = config.with_overrides(config.study_from_dict(SEARCHED), select="val_accuracy")
    assert st.search.select == "val_accuracy"
    assert s.from_dict(__import__("dataclasses").asdict(st.search)) == st.search
    with pytest.raises(ConfigError, match="unknown selection metric 'test_loss'"):
        config.with_overrides(st, select="test_loss")


def test_the_example_search_study_loads():
    from pathlib import Path
    st = config.load_study(Path(__file__).resolve().parents[1] / "examples" / "search.toml")
    assert st.search.axes == ("lr", "momentum") and st.search.confirm_seeds == tuple(range(101, 111))
    assert len(cells(st)) == 8  # 4 activations x 2 sizes


def test_perturbed_siblings_are_trained_for_the_confirm_runs_only(tmp_path):
    out = tmp_path / "p"
    assert main(["run", "--out", str(out), *tiny("--validation", "100", "--epochs", "2", "--n-train", "128",
                                              "--search", "lr=log(0.05,1)", "--trials", "2", "--tune-seeds", "1,2",
                                              "--confirm-seeds", "5,6", "--perturb", "init", "--replicas", "2")]) == 0
    with sqlite3.connect(out / "actconv.sqlite") as conn:
        rows = conn.execute("SELECT seed, COUNT(*) FROM runs WHERE config_json LIKE '%\"perturb\":\"init\"%' "
                            "GROUP BY seed").fetchall()
    assert rows == [(5, 2), (6, 2)]


def test_a_batch_of_trials_per_cell_trains_as_one_unit_and_changes_no_number(tmp_path):
    # the random sampler does not look at results, so batch 1 and batch 3 ask the same trials;
    # batch 3 trains each cell's 3 trials x 2 seeds as one mixed ensemble unit, bitwise the same
    def study(batch):
        d = {**SEARCHED, "name": "batched", "n_train": [128], "epochs": 2, "activations": ["relu", "tanh"],
             "search": {"space": {"lr": "log(0.05, 1)", "momentum": [0, 0.5]}, "trials": 3, "batch": batch,
                        "sampler": "random", "tune_seeds": [1, 2], "confirm_seeds": [7]}}
        return config.with_overrides(config.study_from_dict(d), dataset="digits", device="cpu")
    one = run_search(study(1), tmp_path / "one", progress=False)
    three = run_search(study(3), tmp_path / "three", progress=False)
    assert [(t.cell, t.number, t.params, t.value) for t in three.trials] == \
        [(t.cell, t.number, t.params, t.value) for t in one.trials]
    from actconv.run.queue import plan_units
    tune = [sp for sp in run_search_mod._study(study(3), [run_search_mod._grid(t.cell, (1, 2), t.params)
                                                       for t in three.trials], False).runs()]
    assert sorted(map(len, plan_units(tune))) == [6, 6]  # a cell's 3 trials x 2 seeds: one unit
    with pytest.raises(ConfigError, match=r"batch must be 1 to trials \(3\), got 4"):
        config.with_overrides(study(1), trial_batch=4)


@pytest.mark.parametrize("sampler", ["random", "qmc"])
def test_samplers_that_ignore_results_ask_the_same_trials_whatever_the_batch(sampler):
    one, four = (ask_and_tell(s.build("x", "known", space=SPACE, trials=12, sampler=sampler, batch=b),
                              list(BOWLS), _evaluate, 12) for b in (1, 4))
    assert [(t.cell, t.number, t.params) for t in one] == [(t.cell, t.number, t.params) for t in four]
