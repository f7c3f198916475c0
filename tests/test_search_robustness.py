"""After a search the robustness tables read the confirm runs at each cell's chosen setting and
their perturbed siblings, never the tuning trials: MLP on digits, tiny n, 2 activations, 2
confirm seeds with 2 `init` siblings each."""
import sqlite3

import pandas as pd
import pytest

from actconv.analysis import robustness
from actconv.cli import main
from actconv.study.config import BUILTIN_MODELS, RunSpec

FLAGS = ["--dataset", "digits", "--models", "mlp", "--hidden-units", "8", "--activations", "relu,tanh",
         "--n-train", "128", "--batch-size", "8", "--epochs", "2", "--validation", "100",
         "--search", "lr=[0.05,0.3]", "--trials", "2", "--sampler", "random", "--tune-seeds", "1,2",
         "--confirm-seeds", "5,6", "--perturb", "init", "--replicas", "2", "--jobs", "1", "--quiet"]
ORIGINAL = "config_json NOT LIKE '%\"perturb\":\"init\"%'"


def rows(out, sql):
    with sqlite3.connect(out / "actconv.sqlite") as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The search's store with a tuning-seed run that spikes and tests badly, and its report."""
    out = tmp_path_factory.mktemp("robust") / "s"
    assert main(["run", "--out", str(out), *FLAGS]) == 0
    with sqlite3.connect(out / "actconv.sqlite") as conn:
        # every tuning-seed run ends with test loss 50 (the choice reads validation: unchanged),
        # one of them spikes in its last epoch, and one confirm original spikes at the same step
        conn.execute("UPDATE epochs SET test_loss = 50 WHERE epoch = 2 AND run_id IN "
                     "(SELECT run_id FROM runs WHERE seed IN (1, 2))")
        (lr,) = conn.execute(f"SELECT lr FROM runs WHERE seed = 5 AND activation = 'relu' AND {ORIGINAL}").fetchone()
        for seed in (1, 5):
            conn.execute(f"""UPDATE batches SET loss = 1000 WHERE step = 28 AND run_id = (SELECT run_id
                FROM runs WHERE seed = {seed} AND activation = 'relu' AND lr = {lr} AND {ORIGINAL})""")
    assert main(["report", str(out)]) == 0
    return out


def test_the_robustness_verdicts_are_the_confirm_views_verdicts(report):
    rob = pd.read_csv(report / "report" / "robustness.csv")
    judged = pd.concat([pd.read_csv(report / "report" / f"{name}.csv") for name in ("findings", "samples")])
    # one label per model (the confirm view's), not one per lr the tuning trials tried
    assert not rob["scope"].str.contains("lr=").any()
    verdicts = dict(zip(zip(judged["id"], judged["scope"]), judged["verdict"]))
    assert {(i, s): v for i, s, v in zip(rob["id"], rob["scope"], rob["verdict"])} == \
        {k: verdicts[k] for k in zip(rob["id"], rob["scope"])}
    assert set(rob["sets"]) == {2}  # init 1 and init 2


def test_the_perturbation_variance_reads_the_confirm_seeds_only(report):
    pv = pd.read_csv(report / "report" / "perturbation_variance.csv").set_index("activation")
    assert set(pv["model"]) == {"mlp"} and set(pv["n_seeds"]) == {2} and set(pv["seeds_with_siblings"]) == {2}
    tuned = pd.read_csv(report / "report" / "tuned.csv").set_index("activation")
    for act in ("relu", "tanh"):  # the across-seed variance by hand: the 2 confirm originals' final test loss
        final = [v for (v,) in rows(report, f"""SELECT e.test_loss FROM runs r JOIN epochs e ON e.run_id = r.run_id
            WHERE e.epoch = 2 AND r.activation = '{act}' AND r.seed IN (5, 6) AND r.lr = {tuned.loc[act, 'best_lr']}
            AND {ORIGINAL.replace('config_json', 'r.config_json')}""")]
        assert len(final) == 2 and pv.loc[act, "across_seed_var"] == pytest.approx(pd.Series(final).var(), rel=1e-9)


def test_the_recurrence_table_names_the_confirm_originals_by_their_view_label(report):
    rec = pd.read_csv(report / "report" / "recurrence.csv")
    spiked = rows(report, f"SELECT run_id FROM runs WHERE seed = 5 AND activation = 'relu' AND {ORIGINAL}")
    assert set(rec["run_id"]) == {spiked[0][0]}
    assert set(rec["model"]) == {"mlp"} and set(rec["event"]) == {"spike"} and set(rec["of"]) == {3}


def test_siblings_of_a_mapped_original_carry_its_label():
    def spec(seed, perturb="", replica=0):
        return RunSpec(model="mlp", model_spec=BUILTIN_MODELS["mlp"], activation="relu", seed=seed, n_train=64,
                       perturb=perturb, replica=replica)
    chosen, sib, tuning, stray = spec(5), spec(5, "init", 1), spec(1), spec(6, "order", 1)
    runs = pd.DataFrame(dict(run_id=[s.run_id for s in (chosen, sib, tuning, stray)],
                             config_json=[s.to_json() for s in (chosen, sib, tuning, stray)]))
    assert robustness.with_siblings(runs, {chosen.run_id: "mlp"}) == {chosen.run_id: "mlp", sib.run_id: "mlp"}
    assert robustness.with_siblings(runs, {}) == {}
