"""Report and export: written from a real store with failed, diverged and missing runs; text escaped."""
import json
import re

import numpy as np
import pandas as pd
import pytest

from actconv import cli, load_results
from actconv.study.config import ModelSpec, RunSpec
from actconv.errors import ActconvError
from actconv.report import export, write_report
from actconv.run.store import Store
from actconv.train.result import RunResult
from test_analysis import synth

EVIL = "<script>alert('x')</script>&study"


def small_study(study="synthetic"):
    """One model (few figures keep the test fast), a spike, one failed, diverged, pending run."""
    return synth({"relu": (2.3, 0.3, 1.0), "selu": (3.0, 0.2, 1.2), "sigmoid": (2.3, 1.6, 0.01)},
                 model="mlp_original", logits=1, seeds=(1, 2, 3), study=study,
                 statuses={("relu", 2, 600): "failed", ("selu", 2, 600): "diverged",
                           ("sigmoid", 2, 600): "pending"},
                 spikes={("relu", 1, 600): (15, 3.5e11)})


def to_store(results, out_dir, study):
    """Write synthetic results through the real store, as a study would."""
    specs, stored = [], []
    for r in results.runs.itertuples():
        spec = RunSpec(model=r.model, model_spec=ModelSpec(r.model_kind,
                                                           activate_logits=bool(r.activate_logits)),
                       activation=r.activation, seed=int(r.seed), n_train=int(r.n_train),
                       epochs=int(r.epochs))
        specs.append(spec)
        if r.status in ("pending", "running"):
            continue
        e = results.epochs[results.epochs["run_id"] == r.run_id]
        b = results.batches[results.batches["run_id"] == r.run_id]
        stored.append(RunResult(
            spec, r.status,
            epochs=e[["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]]
            .to_dict("records"),
            batches={c: b[c].to_numpy() for c in ("epoch", "step", "loss", "accuracy")},
            diverged_step=None if pd.isna(r.diverged_step) else int(r.diverged_step),
            error=r.error, wall_s=1.0,
            env=dict(torch_version="t", device="cpu", threads=1, dtype="float32")))
    with Store(out_dir) as store:
        store.register(study, "{}", specs)
        for res in stored:
            store.write(res)


@pytest.fixture
def report_dir(report_written):
    return report_written  # conftest: written once per session, shared with the browser test


def test_store_round_trip_keeps_statuses(report_dir):
    out, _ = report_dir
    r = load_results(out)
    assert r.runs["status"].value_counts().to_dict() == {"done": 6, "failed": 1, "diverged": 1,
                                                         "pending": 1}
    assert np.isinf(r.batches["loss"]).sum() == 1


def test_report_files(report_dir):
    out, index = report_dir
    assert index == out / "report" / "index.html"
    pngs = sorted((out / "report" / "figures").glob("*.png"))
    svgs = sorted((out / "report" / "figures").glob("*.svg"))
    assert pngs and [p.stem for p in pngs] == [s.stem for s in svgs]
    page = index.read_text()
    imgs = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert len(imgs) == len(pngs) and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)  # opens offline
    summary = pd.read_csv(out / "report" / "summary.csv")
    assert {"model", "activation", "n_train", "metric", "mean", "low", "high",
            "n_seeds"} <= set(summary.columns)
    assert "final_test_loss" in set(summary["metric"])


def test_report_shows_failed_diverged_and_missing(report_dir):
    _, index = report_dir
    page = index.read_text()
    assert "6 done, 1 diverged, 1 failed, 0 running, 1 pending" in page
    assert "1 failed run(s)" in page and "1 diverged run(s)" in page
    assert "1 runs are not finished" in page
    assert "boom &lt;b&gt;" in page and "boom <b>" not in page  # the error text, escaped


def test_user_text_is_escaped(report_dir):
    _, index = report_dir
    page = index.read_text()
    assert "<script>alert" not in page and "alert('x')" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;study" in page
    # the page's own scripts only: the bundle, the figures' JSON (which cannot close its element)
    # and the one that draws them
    tags = re.findall(r"<script[^>]*>", page)
    assert tags[0] == "<script src='plotly.min.js'>" and tags[-1] == "<script>"
    assert all(re.fullmatch(r"<script type='application/json' id='spec-[\w.-]+'>", t) for t in tags[1:-1])
    specs = re.findall(r"<script type='application/json'[^>]*>(.*?)</script>", page, re.S)
    assert len(specs) == len(tags) - 2 and all(json.loads(x) for x in specs)


def test_findings_table_has_a_verdict_per_claim(report_dir):
    _, index = report_dir
    page = index.read_text()
    table = page.split("<table id='findings'")[1].split("</table>")[0]
    for claim in "abcdef":
        assert f"<strong>({claim})</strong>" in table
    assert len(re.findall(r"class='verdict (supported|not-supported|inconclusive)'", table)) >= 6


def test_report_without_finished_runs(tmp_path):
    out = tmp_path / "a<b>&c"  # a path is user text too
    r = small_study()
    pending = r.runs.assign(status="pending")
    to_store(type(r)(pending, r.epochs.iloc[:0], r.batches.iloc[:0], r.diagnostics), out, "s")
    with Store(out) as store:  # a run whose driver was killed stays 'running'
        store.conn.execute("UPDATE runs SET status='running' WHERE rowid=1")
    page = write_report(out).read_text()
    assert "No finished runs yet" in page and "1 running, 8 pending" in page
    assert "9 runs are not finished" in page
    assert "a&lt;b&gt;&amp;c" in page and "a<b>&c" not in page
    assert set(pd.read_csv(out / "report" / "findings.csv")["verdict"]) == {"inconclusive"}


def test_report_without_a_store_is_a_clear_error(tmp_path):
    with pytest.raises(ActconvError, match="no actconv results"):
        write_report(tmp_path / "nothing")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trip(report_dir, tmp_path, fmt):
    out, _ = report_dir
    dest = export(out, fmt, dest=tmp_path / fmt)
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    r = load_results(out)
    for name in ("runs", "epochs", "batches", "diagnostics"):
        back = read(dest / f"{name}.{fmt}")
        assert len(back) == len(getattr(r, name))
        assert list(back.columns) == list(getattr(r, name).columns)
    assert read(dest / f"epochs.{fmt}")["test_loss"].sum() == pytest.approx(r.epochs["test_loss"].sum())


def test_export_unknown_format_lists_choices(report_dir):
    with pytest.raises(ActconvError, match="choose from: csv, parquet"):
        export(report_dir[0], "xlsx")


def test_cli_report_and_export(report_dir, tmp_path, monkeypatch, capsys):
    out, index = report_dir
    calls = []
    monkeypatch.setattr("actconv.report.write_report",  # the wiring, not a rerun
                        lambda d, **kw: calls.append(kw) or index)
    assert cli.main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(index)
    assert calls[-1] == {"select": "val_loss", "tune": ["lr"], "reference_lr": None}
    assert cli.main(["report", str(out), "--select", "val_accuracy", "--tune", "lr,batch_size",
                     "--reference-lr", "0.3"]) == 0
    assert calls[-1] == {"select": "val_accuracy", "tune": ["lr", "batch_size"], "reference_lr": 0.3}
    capsys.readouterr()
    assert cli.main(["export", str(out), "--format", "csv", "--dest", str(tmp_path / "x")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "x")
    assert (tmp_path / "x" / "batches.csv").exists()


@pytest.mark.parametrize("argv, message", [
    (["report", "{tmp}/missing"], "no actconv results"),
    (["export", "{out}", "--format", "xlsx"], "choose from: csv, parquet"),
    (["report", "{out}", "--select", "test_loss"], "unknown selection metric"),
    (["report", "{out}", "--tune", "activation"], "cannot tune")])
def test_cli_errors_are_one_line_exit_2(report_dir, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, out=report_dir[0]) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_model_run_under_two_engines_is_reported_once_per_engine(tmp_path):
    # engines round differently: the same seed under both is not two seeds of one configuration
    import actconv
    from actconv.analysis import conditions
    from actconv.study import config
    grid = {"name": "both", "models": {"m": {"kind": "mlp", "hidden_units": 8}}, "activations": ["relu"],
            "seeds": [1, 2], "n_train": [64], "epochs": 1}
    for engine in ("loop", "ensemble"):
        actconv.run_study(config.study_from_dict({**grid, "engine": engine}), tmp_path, progress=False)
    split = conditions.separate_conditions(load_results(tmp_path))
    assert sorted(split.runs.model) == ["m engine=ensemble"] * 2 + ["m engine=loop"] * 2
    assert set(split.batches.model) == set(split.epochs.model) == {"m engine=ensemble", "m engine=loop"}
    same = conditions.separate_conditions(split)
    assert same.runs.model.tolist() == split.runs.model.tolist()  # nothing left to split
    summary = pd.read_csv(write_report(tmp_path).parent / "summary.csv")
    final = summary[summary.metric == "final_train_loss"]
    assert sorted(final.model) == ["m engine=ensemble", "m engine=loop"] and set(final.n_seeds) == {2}


def test_runs_that_differ_in_lr_are_never_pooled_as_seeds(tmp_path):
    # the bug this replaces: two [[grid]] blocks at lr 0.1 and 0.001 gave n_seeds 4, one mean
    import actconv
    from actconv.study import config
    study = config.study_from_dict({
        "name": "two-lrs", "epochs": 1, "models": {"m": {"kind": "mlp", "hidden_units": 8}},
        "grid": [{"models": ["m"], "activations": ["relu"], "seeds": [1, 2], "n_train": [64], "lr": 0.1},
                 {"models": ["m"], "activations": ["relu"], "seeds": [1, 2], "n_train": [64], "lr": 0.001}]})
    actconv.run_study(study, tmp_path, progress=False)
    summary = pd.read_csv(write_report(tmp_path).parent / "summary.csv")
    final = summary[summary.metric == "final_train_loss"].set_index("model")
    assert sorted(final.index) == ["m lr=0.001", "m lr=0.1"] and set(final.n_seeds) == {2}
    assert final.loc["m lr=0.1", "mean"] != final.loc["m lr=0.001", "mean"]
    acc = summary[summary.metric.str.contains("accuracy")]
    assert (acc["low"].dropna() >= 0).all() and (acc["high"].dropna() <= 1).all()


def test_the_report_process_never_loads_torch(report_dir, tmp_path):
    # torch is ~480 MB a process: the activations' derivatives (the gallery) come from a child
    import shutil
    import subprocess
    import sys
    out, _ = report_dir
    shutil.copy(out / "actconv.sqlite", tmp_path / "actconv.sqlite")
    code = ("import sys; from actconv.report import write_report; write_report(sys.argv[1], jobs=2); "
            "print('torch loaded' if 'torch' in sys.modules else 'no torch')")
    got = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         timeout=600)
    assert got.returncode == 0, got.stderr[-2000:]
    assert got.stdout.strip().splitlines()[-1] == "no torch"
    gallery = tmp_path / "report" / "figures" / "activation-gallery.png"
    assert gallery.exists() and gallery.read_bytes() == (out / "report" / "figures" / "activation-gallery.png").read_bytes()
