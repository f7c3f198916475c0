"""Lazy access to a store (Store.query, actconv.select) and several runs a transaction (Store.write_many)."""
import sqlite3

import numpy as np
import pandas as pd
import pytest

import actconv
from actconv.errors import ConfigError, StoreError
from actconv.run.store import Store, load_results
from actconv.study.config import BUILTIN_MODELS, RunSpec
from actconv.train.result import RunResult


def spec(activation="relu", seed=1, n_train=64, lr=0.1, model="mlp"):
    return RunSpec(model=model, model_spec=BUILTIN_MODELS[model], activation=activation, seed=seed,
                   n_train=n_train, lr=lr, epochs=2, batch_size=32)


def result(s: RunSpec, status="done") -> RunResult:
    """Two epochs of two steps; every loss is seed + step / 10, so each row's value is known."""
    if status == "failed":
        return RunResult(s, "failed", error="RuntimeError: boom")
    step = np.arange(1, 5)
    loss = s.seed + step / 10
    epochs = [dict(epoch=e, train_loss=float(s.seed + e), train_accuracy=0.5, test_loss=float(s.seed + e + 0.5),
                   test_accuracy=0.25) for e in range(3)]
    diagnostics = [(e, 2 * e, "layer1", "act_mean", float(s.seed * 10 + e)) for e in range(3)]
    return RunResult(s, status, epochs, dict(epoch=(step - 1) // 2 + 1, step=step, loss=loss,
                                             accuracy=np.full(4, 0.5)), diagnostics, wall_s=1.0)


SPECS = [spec("relu", 1), spec("relu", 2), spec("tanh", 1), spec("tanh", 1, lr=0.01), spec("selu", 3)]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("select")
    with Store(out) as store:
        store.register("t", "{}", SPECS)
        store.write_many([result(s) for s in SPECS[:4]])
        store.write(result(SPECS[4], "failed"))
    return out


def test_select_one_condition_gives_exactly_its_rows(store_dir):
    b = actconv.select(store_dir, "batches", activation="relu", seed=2)
    assert b["run_id"].unique().tolist() == [SPECS[1].run_id]
    assert b["step"].tolist() == [1, 2, 3, 4]
    assert b["loss"].tolist() == pytest.approx([2.1, 2.2, 2.3, 2.4])
    assert b["epoch"].tolist() == [1, 1, 2, 2]


def test_select_matches_run_settings_the_table_lacks_through_runs(store_dir):
    d = actconv.select(store_dir, "diagnostics", activation="tanh", lr=0.01)  # diagnostics has neither
    assert d["run_id"].unique().tolist() == [SPECS[3].run_id]
    assert d["value"].tolist() == [10.0, 11.0, 12.0]
    e = actconv.select(store_dir, "epochs", activation=["tanh", "relu"], seed=1, columns=["run_id", "test_loss"])
    assert list(e.columns) == ["run_id", "test_loss"]
    assert len(e) == 9 and sorted(e["run_id"].unique()) == sorted(s.run_id for s in SPECS[:4] if s.seed == 1)


def test_select_agrees_with_load_results_and_status_conditions(store_dir):
    whole = load_results(store_dir)
    runs = actconv.select(store_dir, "runs")
    pd.testing.assert_frame_equal(runs, whole.runs)
    pd.testing.assert_frame_equal(actconv.select(store_dir, "batches"), whole.batches)
    failed = actconv.select(store_dir, "runs", status="failed")
    assert failed["run_id"].tolist() == [SPECS[4].run_id] and failed["error"].tolist() == ["RuntimeError: boom"]
    assert actconv.select(store_dir, "runs", diverged_step=None, status="done")["activation"].tolist() == \
        ["relu", "relu", "tanh", "tanh"]
    assert actconv.select(store_dir, "batches", seed=[]).empty


def test_values_are_parameters_never_sql(store_dir):
    evil = "relu' OR '1'='1"
    assert actconv.select(store_dir, "runs", activation=evil).empty
    with Store(store_dir, create=False) as store:
        q = store.query("SELECT activation, COUNT(*) AS n FROM runs WHERE seed = ? GROUP BY activation "
                        "ORDER BY activation", (1,))
        assert q.to_dict("list") == {"activation": ["relu", "tanh"], "n": [1, 2]}
        assert store.query("SELECT COUNT(*) AS n FROM batches WHERE loss > :x", {"x": 2.25})["n"][0] == 2


def test_query_is_read_only_and_bad_input_is_one_line(store_dir):
    with Store(store_dir, create=False) as store:
        with pytest.raises(ConfigError, match="readonly"):
            store.query("DELETE FROM runs")
        with pytest.raises(ConfigError, match="no such column"):
            store.query("SELECT nope FROM runs")
        store.write(result(SPECS[0]))  # the connection still writes afterwards
    assert len(actconv.select(store_dir, "runs")) == 5
    with pytest.raises(ConfigError, match="choose from: runs, epochs, batches, diagnostics"):
        actconv.select(store_dir, "nope")
    with pytest.raises(ConfigError, match="no column 'colour'"):
        actconv.select(store_dir, "batches", colour="red")
    with pytest.raises(ConfigError, match="has no column 'colour'"):
        actconv.select(store_dir, "batches", columns=["colour"])
    with pytest.raises(StoreError):
        actconv.select(store_dir / "missing", "runs")


def test_write_many_is_one_transaction_each_run_whole(tmp_path):
    specs = [spec("relu", s) for s in (1, 2, 3)]
    with Store(tmp_path) as store:
        store.register("t", "{}", specs)
        bad = result(specs[2])
        bad.diagnostics = [(0, 0, "layer1")]  # too few values: the insert fails midway
        with pytest.raises(sqlite3.Error):
            store.write_many([result(specs[0]), result(specs[1]), bad])
        assert store.statuses() == {s.run_id: "pending" for s in specs}  # nothing half-written
        assert store.conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0] == 0
        store.write_many([result(specs[0]), result(specs[1])])
        store.write_many([result(specs[1])])  # a second try replaces the first
    r = load_results(tmp_path)
    assert sorted(r.runs["status"]) == ["done", "done", "pending"]
    assert len(r.batches) == 8 and len(r.diagnostics) == 6


def test_load_results_reads_in_chunks_what_one_read_gives(tmp_path, monkeypatch):
    from actconv.run import store as store_module
    specs = [spec("relu", s) for s in range(1, 8)]
    with Store(tmp_path) as store:
        store.register("t", "{}", specs)
        runs = [result(s) for s in specs]
        runs[5].status, runs[5].diverged_step = "diverged", 3  # a number in a column of NULLs
        runs[5].batches["loss"][2] = np.nan
        runs[5].env = dict(torch_version="2.x", device="cpu")  # text in a column of NULLs
        store.write_many(runs[:6])
    monkeypatch.setattr(store_module, "READ_CHUNK", 3)  # chunks of NULLs only, and of numbers
    chunked = load_results(tmp_path)
    with sqlite3.connect(tmp_path / "actconv.sqlite") as conn:
        for table in ("runs", "epochs", "batches", "diagnostics"):
            whole = pd.read_sql_query(f"SELECT * FROM {table} ORDER BY {store_module.ORDER[table]}", conn)
            got = getattr(chunked, table)[list(whole.columns)]
            pd.testing.assert_frame_equal(got, whole, check_exact=True)
    assert chunked.runs["diverged_step"].dtype == np.float64 and chunked.runs["diverged_step"].notna().sum() == 1
    assert chunked.runs["error"].isna().all()


def test_the_report_leaves_histogram_rows_in_the_store_and_reads_one_runs_back(tmp_path):
    from actconv.report.loading import report_results, run_diagnostics
    specs = [spec("relu", s) for s in (1, 2)]
    with Store(tmp_path) as store:
        store.register("t", "{}", specs)
        runs = [result(s) for s in specs]
        for r in runs:
            r.diagnostics += [(e, 2 * e, "layer1", f"preact_hist_{i:02d}", i / 34) for e in range(3) for i in range(34)]
            r.diagnostics += [(1, 3, "layer1", "preact_histogram_other", 7.0)]  # not the prefix: kept
        store.write_many(runs)
    whole, lean = load_results(tmp_path), report_results(tmp_path)
    assert len(whole.diagnostics) == 2 * (3 + 102 + 1)
    # the report leaves batches and diagnostics in the store and reads selections of them
    assert sorted(lean.diagnostics.frame()["metric"].unique()) == ["act_mean", "preact_histogram_other"]
    pd.testing.assert_frame_equal(lean.runs, whole.runs)
    pd.testing.assert_frame_equal(lean.batches.frame(), whole.batches)
    rid = specs[1].run_id
    want = whole.diagnostics[whole.diagnostics["run_id"] == rid].reset_index(drop=True)
    pd.testing.assert_frame_equal(run_diagnostics(lean, rid).reset_index(drop=True), want, check_exact=True)
    pd.testing.assert_frame_equal(run_diagnostics(whole, rid).reset_index(drop=True), want)
