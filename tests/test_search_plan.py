"""A search study's plan: a grid's own confirm seeds, and the run count and time estimate that
`actconv presets` shows (trials x tune seeds + confirm seeds per cell, not the grid's runs)."""
import pytest

from actconv.cli import main
from actconv.errors import ConfigError
from actconv.study import config

MODELS = {"small": {"kind": "mlp", "hidden_units": 8}, "vgg": {"kind": "tinyvgg", "hidden_units": 4}}
STUDY = {"name": "plan", "epochs": 2, "validation": 100, "models": MODELS,
         "search": {"space": {"lr": "log(0.01, 1)", "momentum": "uniform(0, 0.9)"}, "trials": 3,
                    "tune_seeds": [1, 2], "confirm_seeds": "101-104"},
         "grid": [{"models": ["small"], "activations": ["relu", "tanh"], "seeds": [7], "n_train": [50, 100]},
                  {"models": ["vgg"], "activations": ["relu"], "seeds": [7], "n_train": [50],
                   "confirm_seeds": [201, 202]}]}


def test_a_grid_may_confirm_on_its_own_seeds():
    st = config.study_from_dict(STUDY)
    assert st.confirm_seeds_of("small", "tanh", 100) == (101, 102, 103, 104)
    assert st.confirm_seeds_of("vgg", "relu", 50) == (201, 202)
    assert st.search.confirm_seeds == (101, 102, 103, 104)  # the [search] table's, for the other grids
    flagged = config.with_overrides(st, confirm_seeds="301-303")  # the flag is every grid's
    assert flagged.confirm_seeds_of("vgg", "relu", 50) == (301, 302, 303)


@pytest.mark.parametrize("grid, words", [
    ({"confirm_seeds": [2, 9]}, "grid 2: confirm_seeds must be fresh seeds, disjoint from tune_seeds; both hold 2"),
    ({"confirm_seeds": "9-3"}, "reversed"),
    ({"confirm_seeds": []}, "confirm_seeds is empty"),
])
def test_bad_grid_confirm_seeds_are_one_line_errors(grid, words):
    d = {**STUDY, "grid": [STUDY["grid"][0], {**STUDY["grid"][1], **grid}]}
    with pytest.raises(ConfigError, match=words):
        config.study_from_dict(d)


def test_grid_confirm_seeds_need_a_search():
    with pytest.raises(ConfigError, match="grid 2 sets confirm_seeds, which only a search uses"):
        config.study_from_dict({k: v for k, v in STUDY.items() if k != "search"})
    with pytest.raises(ConfigError, match="unknown key 'confirm_seeds'"):  # the study level has [search]
        config.study_from_dict({**STUDY, "confirm_seeds": [5]})


def test_a_search_plans_trials_times_tune_seeds_plus_confirm_seeds_per_cell():
    st = config.study_from_dict(STUDY)
    counts = {(r.model, r.activation, r.n_train): n for r, n in config.planned(st)}
    # 4 MLP cells x (3 trials x 2 seeds + 4) and one TinyVGG cell x (3 x 2 + 2)
    assert counts == {("small", a, n): 10 for a in ("relu", "tanh") for n in (50, 100)} | {("vgg", "relu", 50): 8}
    # the same runs as a grid of 10 (MLP) and 8 (TinyVGG) seeds at one lr take the same estimate
    grid = {k: v for k, v in STUDY.items() if k != "search"}
    grid["grid"] = [{**STUDY["grid"][0], "seeds": list(range(10))},
                    {**{k: v for k, v in STUDY["grid"][1].items() if k != "confirm_seeds"}, "seeds": list(range(8))}]
    plain = config.study_from_dict(grid)
    assert sum(n for _, n in config.planned(plain)) == len(plain.runs()) == 48
    assert config.estimate_seconds(st) == pytest.approx(config.estimate_seconds(plain))


def test_perturbed_siblings_of_confirm_seeds_are_planned():
    st = config.study_from_dict({**STUDY, "perturb": ["init"], "replicas": 2, "perturb_seeds": [101, 201]})
    counts = {(r.model, r.activation, r.n_train): n for r, n in config.planned(st)}
    assert counts[("small", "relu", 50)] == 10 + 2 and counts[("vgg", "relu", 50)] == 8 + 2


def test_presets_count_seed_fairs_trials_and_confirm_runs(capsys):
    st = config.load_preset("seed-fair")
    # 2 MLPs x 21 activations x 6 sizes x (12 x 3 + 30) + TinyVGG x 21 x (12 x 3 + 10)
    assert sum(n for _, n in config.planned(st)) == 252 * 66 + 21 * 46 == 17_598
    assert st.confirm_seeds_of("tinyvgg16", "selu", 600) == tuple(range(101, 111))
    assert st.confirm_seeds_of("mlp", "selu", 3200) == tuple(range(101, 131))
    assert main(["presets"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("seed-fair "))
    assert " 17598 runs" in line


def test_a_grids_own_confirm_seeds_are_trained_and_read_as_its_confirm_runs(tmp_path):
    """Two MLP grids, one confirming on seeds of its own outside the search's: the store holds
    its confirm runs on those seeds, and tuned.csv reads them (n_confirm_seeds) for that grid only."""
    import pandas as pd
    from actconv.analysis import confirm, tuning
    from actconv.run.search import run_search
    from actconv.run.store import load_results
    d = {"name": "own-seeds", "epochs": 1, "validation": 100,
         "models": {"a": {"kind": "mlp", "hidden_units": 8}, "b": {"kind": "mlp", "hidden_units": 4}},
         "search": {"space": {"lr": "log(0.05, 0.5)"}, "trials": 2, "sampler": "random",
                    "tune_seeds": [1], "confirm_seeds": [11, 12, 13]},
         "grid": [{"models": ["a"], "activations": ["relu"], "seeds": [7], "n_train": [64]},
                  {"models": ["b"], "activations": ["relu"], "seeds": [7], "n_train": [64],
                   "confirm_seeds": [21, 22]}]}
    study = config.with_overrides(config.study_from_dict(d), dataset="digits", device="cpu")
    run_search(study, tmp_path, progress=False)
    runs = load_results(tmp_path).runs
    seeds = {m: set(g["seed"]) for m, g in runs.groupby("model")}
    assert seeds == {"a": {1, 11, 12, 13}, "b": {1, 21, 22}}
    r = load_results(tmp_path)
    per_run = tuning.final_metrics(r.runs, r.epochs)
    tuned = confirm.confirmed(per_run, study.search)
    assert dict(zip(tuned["condition"].str.split().str[0], tuned["n_confirm_seeds"])) == {"a": 3, "b": 2}
