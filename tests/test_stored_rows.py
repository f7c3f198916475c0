"""Rows left in the store (`StoredRows`): selections read only their runs, per-run analyses run a
chunk of runs at a time and equal the whole-table answer, and the report computed from them
equals the report of the same store loaded whole."""
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from actconv.analysis import stats
from actconv.analysis.tables import has_rows, only, per_run, relabel, rows, run_keys
from actconv.run import rows as rows_module
from actconv.run.store import Store, load_results, stored_results
from test_select import SPECS, result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from compare_reports import compare  # noqa: E402


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("stored_rows")
    with Store(out) as store:
        store.register("t", "{}", SPECS)
        store.write_many([result(s) for s in SPECS[:4]])
        store.write(result(SPECS[4], "failed"))
        # a histogram row, which the report leaves to the one figure that draws it
        store.conn.execute("INSERT INTO diagnostics VALUES (?, 0, 0, 'layer1', 'preact_hist_00', 0.5)",
                           (SPECS[0].run_id,))
    return out


def test_a_selection_reads_exactly_what_the_whole_table_filtered_gives(store_dir):
    whole, lazy = load_results(store_dir), stored_results(store_dir, skip_metrics=("preact_hist_",))
    ids = [SPECS[1].run_id, SPECS[3].run_id]
    want = whole.batches[whole.batches["run_id"].isin(ids)].reset_index(drop=True)
    pd.testing.assert_frame_equal(rows(only(lazy.batches, ids)), want)
    # narrowing twice intersects; the failed run has no rows; nothing of other runs is read
    assert sorted(only(only(lazy.batches, ids), [SPECS[1].run_id, SPECS[0].run_id]).frame()["run_id"].unique()) \
        == [SPECS[1].run_id]
    assert lazy.batches.run_ids() == sorted(s.run_id for s in SPECS[:4])
    assert not has_rows(only(lazy.batches, [SPECS[4].run_id])) and has_rows(lazy.batches)
    # the histogram row stays in the store; a metric filter reads only that metric
    d = rows(lazy.diagnostics)
    assert "preact_hist_00" not in set(d["metric"]) and len(d) == 12
    assert set(rows(lazy.diagnostics, metrics=["act_mean"])["metric"]) == {"act_mean"}
    assert "preact_hist_00" in set(whole.diagnostics["metric"])


def test_a_large_selection_reads_through_a_temporary_table_alike(store_dir, monkeypatch):
    lazy = stored_results(store_dir)
    ids = [SPECS[0].run_id, SPECS[2].run_id, SPECS[3].run_id]
    small = rows(only(lazy.diagnostics, ids), metrics=["act_mean"])
    monkeypatch.setattr(rows_module, "IN_LIST", 1)  # more than one run: the temporary table
    pd.testing.assert_frame_equal(rows(only(lazy.diagnostics, ids), metrics=["act_mean"]), small)
    assert sorted(small["run_id"].unique()) == sorted(ids) and len(small) == 9


def test_relabelled_rows_read_under_their_condition(store_dir):
    lazy = stored_results(store_dir)
    label = {SPECS[3].run_id: "mlp lr=0.01"}
    b = rows(relabel(lazy.batches, label))
    assert set(b.loc[b["run_id"] == SPECS[3].run_id, "model"]) == {"mlp lr=0.01"}
    assert set(b.loc[b["run_id"] != SPECS[3].run_id, "model"]) == {"mlp"}
    keys = run_keys(relabel(lazy.batches, label), lazy.runs)
    assert keys.set_index("run_id").loc[SPECS[3].run_id, "model"] == "mlp lr=0.01"
    assert len(keys) == 4


def test_a_per_run_analysis_is_read_a_chunk_at_a_time_once(store_dir, monkeypatch):
    monkeypatch.setattr(rows_module, "RUNS_PER_CHUNK", 1)
    whole, lazy = load_results(store_dir), stored_results(store_dir)
    seen = []

    def fits(b):
        seen.append(b["run_id"].nunique())
        return stats.batch_fit(whole.epochs, b)

    ids = [SPECS[0].run_id, SPECS[2].run_id]
    got = per_run(only(lazy.batches, ids), "fits", fits, stats.BATCH_COLUMNS)
    want = stats.batch_fit(whole.epochs, whole.batches[whole.batches["run_id"].isin(ids)])
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True))
    assert seen == [1, 1, 1, 1]  # every run of the store, one at a time
    # another selection of the same store reads the pass already made
    again = per_run(only(lazy.batches, [SPECS[1].run_id]), "fits", fits)
    assert seen == [1, 1, 1, 1] and again["run_id"].tolist() == [SPECS[1].run_id]
    # the slim read carries each run's keys from `runs`
    assert again.loc[0, ["model", "activation", "seed", "n_train"]].tolist() == ["mlp", "relu", 2, 64]


def spiky(s, spike_at=None):
    """40 steps of a falling loss with a little noise and, where asked, one explosion."""
    from actconv.train.result import RunResult
    step = np.arange(1, 41)
    loss = 2.0 * np.exp(-step / 15) + np.random.default_rng(s.seed).normal(0, 0.01, 40)
    if spike_at:
        loss[spike_at - 1] = 50.0
    epochs = [dict(epoch=e, train_loss=2.0 - e / 4, train_accuracy=0.5, test_loss=2.1 - e / 4,
                   test_accuracy=0.3) for e in range(5)]
    return RunResult(s, "done", epochs, dict(epoch=(step - 1) // 10 + 1, step=step, loss=loss,
                                             accuracy=np.full(40, 0.5)), [], wall_s=1.0)


def test_spikes_and_steps_over_stored_rows_equal_the_whole_table(tmp_path, monkeypatch):
    monkeypatch.setattr(rows_module, "RUNS_PER_CHUNK", 2)
    with Store(tmp_path) as store:
        store.register("t", "{}", SPECS[:4])
        store.write_many([spiky(s, at) for s, at in zip(SPECS[:4], (25, None, 31, 12))])
    whole, lazy = load_results(tmp_path), stored_results(tmp_path)
    stats.batch_analyses(lazy.batches, lazy.epochs, threshold=0.5)
    a = stats.spikes(lazy.batches, lazy.epochs)
    b = stats.detect_spikes(whole.batches, whole.epochs)
    assert sorted(b["step"]) == [12, 25, 31]  # the three explosions, and nothing else
    pd.testing.assert_frame_equal(a, b)
    m = stats.run_metrics(lazy.epochs, lazy.batches, threshold=0.5)
    pd.testing.assert_frame_equal(m, stats.run_metrics(whole.epochs, whole.batches, threshold=0.5))
    assert m["reached"].all()


def test_the_report_from_stored_rows_equals_the_report_of_the_whole_tables(report_written, tmp_path,
                                                                          monkeypatch):
    from actconv.report import write_report
    out, _ = report_written  # written by `actconv report`'s path: batches and diagnostics left in the store
    copy = tmp_path / "whole"
    copy.mkdir()
    shutil.copy(out / "actconv.sqlite", copy / "actconv.sqlite")
    write_report(copy, results=load_results(copy))  # every row in memory, as before
    problems = compare(out / "report", copy / "report", tol=1e-9)
    assert not problems, problems
    names = {p.name for p in (out / "report").glob("*.csv")}
    assert {"per_run.csv", "batch_fits.csv", "spikes.csv", "mechanisms.csv", "findings.csv"} <= names
    fits = pd.read_csv(out / "report" / "batch_fits.csv")
    assert len(fits) and np.isfinite(fits["slope"]).any()


def test_the_arrow_read_of_a_chunk_equals_sqlite3s(tmp_path, monkeypatch):
    # The first run's loss is NULL (NaN) for its first 1,100 rows and infinite once: Arrow types
    # a column by its first batch of rows (1,024), so a naive read of it would come back as int.
    from actconv.train.result import RunResult
    monkeypatch.setattr(rows_module, "RUNS_PER_CHUNK", 3)
    runs = sorted(SPECS[:4], key=lambda s: s.run_id)
    results = [spiky(s, at) for s, at in zip(runs, (None, 25, None, 12))]
    step = np.arange(1, 1201)
    loss = np.linspace(3.0, 0.1, 1200)
    loss[:1100], loss[1150] = np.nan, np.inf
    results[0] = RunResult(runs[0], "diverged", results[0].epochs,
                           dict(epoch=(step - 1) // 300 + 1, step=step, loss=loss, accuracy=np.full(1200, 0.5)),
                           [], wall_s=1.0)
    with Store(tmp_path) as store:
        store.register("t", "{}", SPECS[:4])
        store.write_many(results)
    served = []
    arrow = rows_module.StoredRows._read_arrow

    def counted(self, ids, columns):
        got = arrow(self, ids, columns)
        served.append(got is not None)
        return got

    monkeypatch.setattr(rows_module.StoredRows, "_read_arrow", counted)
    fast = list(stored_results(tmp_path).batches.chunks(columns=stats.BATCH_COLUMNS))
    assert served == [True, True]  # both chunks read by the ADBC driver
    monkeypatch.setattr(rows_module.StoredRows, "_read_arrow", lambda self, ids, columns: None)
    slow = list(stored_results(tmp_path).batches.chunks(columns=stats.BATCH_COLUMNS))
    for a, b in zip(fast, slow, strict=True):
        pd.testing.assert_frame_equal(a, b)
    first = fast[0][fast[0]["run_id"] == runs[0].run_id]["loss"]
    assert len(first) == 1200 and first.isna().sum() == 1100 and np.isinf(first).sum() == 1
