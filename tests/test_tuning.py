"""Conditions and tuning on hand-built tables: selection follows validation, never test."""
import numpy as np
import pandas as pd
import pytest

from actconv.analysis import conditions
from actconv.analysis import tuning
from actconv.study.config import BUILTIN_MODELS, RunSpec


def _spec(act, seed, lr, n=600, model="mlp", **kw):
    return RunSpec(model=model, model_spec=BUILTIN_MODELS[model], activation=act, seed=seed,
                   n_train=n, lr=lr, **kw)


def _tables(rows):
    """runs and epochs from (spec, status, start, final train, val, test loss, test acc)."""
    runs, epochs = [], []
    for spec, status, start, train, val, test, acc in rows:
        runs.append(dict(run_id=spec.run_id, model=spec.model, activation=spec.activation,
                         seed=spec.seed, n_train=spec.n_train, lr=spec.lr, status=status,
                         engine=spec.engine, config_json=spec.to_json()))
        base = dict(run_id=spec.run_id, model=spec.model, activation=spec.activation,
                    seed=spec.seed, n_train=spec.n_train)
        epochs.append(dict(base, epoch=0, train_loss=start, train_accuracy=0.1, test_loss=start,
                           test_accuracy=0.1, val_loss=start, val_accuracy=0.1))
        epochs.append(dict(base, epoch=1, train_loss=train, train_accuracy=0.9, test_loss=test,
                           test_accuracy=acc, val_loss=val, val_accuracy=1 - val / 3))
    return pd.DataFrame(runs), pd.DataFrame(epochs)


def _grid():
    """relu: validation prefers lr 0.1, test prefers lr 1; tanh: lr 1 diverges in one seed."""
    rows = []
    for seed in (1, 2, 3):
        rows += [(_spec("relu", seed, 0.1), "done", 2.3, 0.5, 0.40 + seed / 100, 0.60, 0.80),
                 (_spec("relu", seed, 1.0), "done", 2.3, 0.4, 0.50 + seed / 100, 0.30, 0.90),
                 (_spec("tanh", seed, 0.1), "done", 2.3, 0.6, 0.70, 0.50, 0.85)]
        rows.append((_spec("tanh", seed, 1.0), "diverged" if seed == 2 else "done", 2.3, 0.3,
                     0.20, 0.20, 0.95))
    return _tables(rows)


def test_labels_name_only_the_settings_that_vary():
    runs, _ = _tables([(_spec("relu", 1, 0.1), "done", 1, 1, 1, 1, 0.5),
                       (_spec("relu", 1, 0.3), "done", 1, 1, 1, 1, 0.5),
                       (_spec("relu", 1, 0.1, model="tinyvgg"), "done", 1, 1, 1, 1, 0.5)])
    labels = conditions.labels(runs)
    assert sorted(labels) == ["mlp lr=0.1", "mlp lr=0.3", "tinyvgg"]


def test_a_missing_value_or_another_list_is_a_setting_that_varies():
    s = pd.DataFrame(dict(model="mlp", activation=["relu"] * 4 + ["tanh"], n_train=600,
                          lr=[0.1, np.nan, 0.1, 0.1, 0.1], hidden=[[64, 64], [64, 64], [32], [64, 64], [8]],
                          optimizer=["sgd", None, "sgd", "sgd", "sgd"], batch_size=[64, 64, 64, 64, 32]))
    # batch_size differs only between activations, never within one activation and size
    assert conditions.varying(s) == {"mlp": ["hidden", "lr", "optimizer"]}
    assert conditions.varying(s, exclude=("lr",)) == {"mlp": ["hidden", "optimizer"]}


def test_selection_follows_validation_not_test():
    runs, epochs = _grid()
    per_run = tuning.final_metrics(runs, epochs)
    t = tuning.tune(per_run).set_index("activation")
    assert t.loc["relu", "best_lr"] == 0.1          # test would have picked 1.0
    assert t.loc["relu", "val_loss"] == pytest.approx(0.42)
    assert t.loc["relu", "test_loss"] == pytest.approx(0.60)
    # tanh's lr 1 has the best validation loss but one seed diverged: never chosen
    assert t.loc["tanh", "best_lr"] == 0.1
    assert t.loc["tanh", "test_loss"] == pytest.approx(0.50)
    assert t.loc["tanh", "rank"] == 1 and t.loc["relu", "rank"] == 2


def test_selection_ignores_the_test_columns():
    runs, epochs = _grid()
    scrambled = epochs.assign(test_loss=np.random.default_rng(0).permutation(epochs["test_loss"]),
                              test_accuracy=0.5)
    a = tuning.candidates(tuning.final_metrics(runs, epochs))
    b = tuning.candidates(tuning.final_metrics(runs, scrambled))
    pd.testing.assert_frame_equal(a, b)


def test_a_run_that_ends_above_its_start_is_worst():
    runs, epochs = _tables([(_spec("relu", s, lr), "done", 1.0, 2.0 if lr == 1.0 else 0.5,
                             0.1 if lr == 1.0 else 0.5, 0.5, 0.8)
                            for s in (1, 2) for lr in (0.1, 1.0)])
    t = tuning.tune(tuning.final_metrics(runs, epochs))
    assert t["best_lr"].tolist() == [0.1]


def test_a_cell_where_every_value_went_bad_has_a_note_and_no_choice():
    # every run ends above its start: nothing may be chosen, and the table keeps its columns
    runs, epochs = _tables([(_spec(a, s, lr), "done", 1.0, 2.0, 0.5, 0.5, 0.8)
                            for a in ("relu", "tanh") for s in (1, 2) for lr in (0.1, 1.0)])
    t = tuning.tune(tuning.final_metrics(runs, epochs))
    assert t["note"].tolist() == ["every value diverged or ended above its start"] * 2
    assert t[["best_lr", "test_loss", "rank"]].isna().all().all()


def test_reference_ranking_and_its_shift():
    runs, epochs = _grid()
    per_run = tuning.final_metrics(runs, epochs)
    ref = tuning.at_reference(per_run)
    assert ref.set_index("activation")["rank"].to_dict() == {"relu": 2.0, "tanh": 1.0}
    shift = tuning.ranking_shift(ref, tuning.tune(per_run))
    assert shift["kendall_tau"].iloc[0] == pytest.approx(1.0) and shift["n_moved"].iloc[0] == 0


def test_tuning_needs_a_validation_split():
    runs, epochs = _grid()
    with pytest.raises(ValueError, match="--validation"):
        tuning.tune(tuning.final_metrics(runs, epochs.drop(columns=["val_loss", "val_accuracy"])))


def test_stability_counts_bad_runs_as_chance():
    runs, epochs = _grid()
    per_run = tuning.final_metrics(runs, epochs)
    s = tuning.stability(per_run, tuning.tune(per_run)).set_index("activation")
    # tanh over the grid: lr 0.1 three times 0.85, lr 1.0 two times 0.95 and one chance (0.1)
    assert s.loc["tanh", "mean_accuracy"] == pytest.approx((3 * 0.85 + 2 * 0.95 + 0.1) / 6)
    assert s.loc["relu", "mean_accuracy"] == pytest.approx((0.8 + 0.9) / 2)
