"""After a search, the reference-lr views read runs at the study's reference setting on the
confirm seeds (`reference = true`, `--search-reference`), and every claim reads the confirm
runs: MLP on digits, tiny n, 3 activations, 2 confirm seeds."""
import json
import shutil
import sqlite3

import pandas as pd
import pytest

from actconv.cli import main
from actconv.errors import ConfigError
from actconv.run.search import reference_grids
from actconv.study import config
from actconv.study import search as s

ACTS = ["relu", "tanh", "sigmoid"]


def flags(*extra):
    return ["--dataset", "digits", "--models", "mlp", "--hidden-units", "8", "--activations", ",".join(ACTS),
            "--n-train", "128", "--epochs", "2", "--validation", "100", "--search", "lr=[0.05,0.3]",
            "--search", "momentum=[0,0.5]", "--trials", "3", "--sampler", "random", "--tune-seeds", "1,2",
            "--confirm-seeds", "7,8", "--jobs", "1", "--quiet", *extra]


def rows(out, sql):
    with sqlite3.connect(out / "actconv.sqlite") as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A search with its reference runs, stored once; tests copy the store they change."""
    out = tmp_path_factory.mktemp("ref") / "s"
    assert main(["run", "--out", str(out), *flags("--search-reference")]) == 0
    return out


def copy(src, tmp_path):
    dest = tmp_path / "s"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("report"))
    return dest


def test_reference_is_off_by_default_and_checked():
    table = {"space": {"lr": "log(0.01, 1)"}, "confirm_seeds": [7]}
    assert s.from_table("t", table, "x").reference is False
    on = s.from_table("t", {**table, "reference": True}, "x")
    assert on.reference is True and s.from_dict(__import__("dataclasses").asdict(on)).reference is True
    with pytest.raises(ConfigError, match="reference must be true or false"):
        s.from_table("t", {**table, "reference": "yes"}, "x")
    st = config.study_from_dict({"name": "r", "validation": 100, "reference_lr": 0.2, "models": {"mlp": {"kind": "mlp", "hidden_units": 8}},
                                 "activations": ["relu", "tanh"], "n_train": [64],
                                 "search": {"space": {"lr": "[0.3, 0.5]", "momentum": "[0.5]"},
                                            "confirm_seeds": [7, 8], "reference": True}})
    grids = reference_grids(st)
    assert [(g.activations, g.seeds, dict(g.train)["lr"], dict(g.train)["momentum"]) for g in grids] == [
        (("relu",), (7, 8), 0.2, 0.0), (("tanh",), (7, 8), 0.2, 0.0)]
    off = config.with_overrides(st, search_reference=False)
    assert off.search.reference is False and config.with_overrides(off, trials=2).search.reference is False
    with pytest.raises(ConfigError, match="--search-reference needs a search"):
        config.with_overrides(config.study_from_dict({"name": "r"}), search_reference=True)


def test_the_store_holds_one_reference_run_per_cell_and_confirm_seed(searched, capsys):
    ref = rows(searched, "SELECT seed, lr, momentum, activation FROM runs WHERE lr = 0.1 ORDER BY 4, 1")
    assert ref == [(seed, 0.1, 0.0, a) for a in sorted(ACTS) for seed in (7, 8)]
    # the confirm seeds hold the 3 confirm runs and the 3 reference runs each, nothing else
    assert rows(searched, "SELECT seed, COUNT(*) FROM runs WHERE seed IN (7, 8) GROUP BY 1") == [(7, 6), (8, 6)]
    assert rows(searched, "SELECT COUNT(*) FROM runs WHERE lr = 0.1 AND seed NOT IN (7, 8)") == [(0,)]
    # resume-safe: the same search again trains nothing
    capsys.readouterr()
    assert main(["run", "--out", str(searched), *flags("--search-reference")]) == 0
    printed = capsys.readouterr().out
    assert "(0 executed" in printed and "3 cells at the reference setting (lr 0.1) on the same seeds" in printed


def test_without_reference_no_reference_run_is_trained(tmp_path):
    out = tmp_path / "off"
    assert main(["run", "--out", str(out), *flags()]) == 0
    assert rows(out, "SELECT COUNT(*) FROM runs WHERE lr = 0.1") == [(0,)]
    assert main(["report", str(out)]) == 0
    assert pd.read_csv(out / "report" / "reference_ranking.csv").empty
    r1 = pd.read_csv(out / "report" / "fairness.csv")
    assert list(r1["verdict"]) == ["inconclusive"]
    assert "not in the grid on the confirm seeds" in r1["evidence"][0] and "--search-reference" in r1["evidence"][0]


def test_r1_and_the_ranking_shift_read_the_reference_runs_on_the_confirm_seeds(searched, tmp_path):
    out = copy(searched, tmp_path)
    assert main(["report", str(out)]) == 0
    tuned = pd.read_csv(out / "report" / "tuned.csv")
    ref = pd.read_csv(out / "report" / "reference_ranking.csv")
    assert sorted(ref["activation"]) == sorted(ACTS) and set(ref["n_seeds"]) == {2}
    # the reference test losses are the lr 0.1 runs' final ones on seeds 7 and 8, by hand
    final = rows(out, """SELECT r.activation, AVG(e.test_loss) FROM runs r JOIN epochs e ON e.run_id = r.run_id
                         WHERE r.lr = 0.1 AND e.epoch = 2 GROUP BY 1""")
    assert dict(zip(ref["activation"], ref["test_loss"])) == pytest.approx(dict(final), rel=1e-9)
    # make the reference ranking the tuned one reversed: tau -1, the first and last move 2 places
    order = list(tuned.sort_values("rank")["activation"])
    assert len(set(tuned["rank"])) == 3
    with sqlite3.connect(out / "actconv.sqlite") as conn:
        for place, a in enumerate(order):
            conn.execute("UPDATE epochs SET test_loss = ? WHERE run_id IN (SELECT run_id FROM runs "
                         "WHERE lr = 0.1 AND activation = ?)", (10.0 - place, a))
    assert main(["report", str(out)]) == 0
    shift = pd.read_csv(out / "report" / "ranking_shift.csv")
    assert list(shift["kendall_tau"]) == [-1.0] and list(shift["n_activations"]) == [3]
    assert set(shift["moved"][0].split(", ")) == {f"{order[0]} 3->1", f"{order[2]} 1->3"}
    r1 = pd.read_csv(out / "report" / "fairness.csv")
    assert list(r1["verdict"]) == ["not supported"] and "lr 0.1, momentum 0" in r1["evidence"][0]
    side = pd.read_csv(out / "report" / "claims_reference_tuned.csv")
    assert {"verdict_reference", "verdict_tuned"} <= set(side.columns)
    # drop the reference runs: r1 has nothing to compare against
    with sqlite3.connect(out / "actconv.sqlite") as conn:
        ids = [r for (r,) in conn.execute("SELECT run_id FROM runs WHERE lr = 0.1")]
        for table in ("epochs", "batches", "runs"):
            conn.executemany(f"DELETE FROM {table} WHERE run_id = ?", [(i,) for i in ids])
    assert main(["report", str(out)]) == 0
    r1 = pd.read_csv(out / "report" / "fairness.csv")
    assert list(r1["verdict"]) == ["inconclusive"] and "not in the grid" in r1["evidence"][0]


def test_the_mechanisms_after_a_search_read_the_confirm_runs_only(searched, tmp_path):
    out = copy(searched, tmp_path)
    # every run that is not a confirm run gets a training loss falling 20 nats (still good runs, so
    # the choice on validation is the same): pooled with the confirm runs, it would swamp the falls
    with sqlite3.connect(out / "actconv.sqlite") as conn:
        conn.execute("UPDATE epochs SET train_loss = 100 - 10 * epoch WHERE run_id IN (SELECT run_id FROM runs "
                     "WHERE seed NOT IN (7, 8) OR lr = 0.1)")
    assert main(["report", str(out)]) == 0
    tuned = pd.read_csv(out / "report" / "tuned.csv")
    m = pd.read_csv(out / "report" / "mechanisms.csv")
    m1 = m[m["id"] == "m1"]
    assert list(m1["scope"]) == ["mlp"]  # one view: each activation at its own confirmed setting
    numbers = json.loads(m1["numbers"].iloc[0])
    # sigmoid's fall by hand: the confirm runs at its chosen setting, mean over the 2 confirm seeds
    row = tuned[tuned["activation"] == "sigmoid"].iloc[0]
    falls = rows(out, f"""SELECT AVG(a.train_loss - b.train_loss), COUNT(*) FROM runs r
        JOIN epochs a ON a.run_id = r.run_id AND a.epoch = 0 JOIN epochs b ON b.run_id = r.run_id AND b.epoch = 2
        WHERE r.activation = 'sigmoid' AND r.seed IN (7, 8) AND r.lr = {row['best_lr']}
        AND r.momentum = {row['best_momentum']}""")
    assert falls[0][1] == 2 and numbers["sigmoid_fall"] == pytest.approx(falls[0][0], rel=1e-9)
    assert numbers["n_others"] == 2
    # the papers' claims and the notebook's findings read the same view: no run of seed 1 or 2
    summary = pd.read_csv(out / "report" / "summary.csv")
    assert set(summary.loc[summary["metric"] == "final_test_loss", "n_seeds"]) == {2}
