"""TensorBoard and MLflow exports, read back with each tool's own reader; names; errors on one line."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from actconv import cli, load_results
from actconv.study.config import ModelSpec, RunSpec
from actconv.report.exports import export, path_names, run_configs, run_names
from actconv.run.store import Results, Store
from actconv.train.result import RunResult
from test_report import small_study, to_store

# The synthetic study: 9 runs, of which 1 failed, 1 diverged (its last batch loss inf), 1 pending.
EXPORTED = 8


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("export_study")
    to_store(small_study("syn"), out, "syn")
    return out


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # tests never reach for the network
    monkeypatch.setenv("DO_NOT_TRACK", "true")


def test_run_names_are_the_condition_then_activation_seed_and_size():
    specs = [RunSpec("mlp", ModelSpec("mlp"), "relu", 1, 600, lr=0.1),
             RunSpec("mlp", ModelSpec("mlp"), "relu", 1, 600, lr=0.3),
             RunSpec("vgg", ModelSpec("tinyvgg", hidden_units=8), "leaky_relu", 2, 1200, lr=0.3),
             RunSpec("vgg", ModelSpec("tinyvgg", hidden_units=8), "a/b c", 2, 1200, lr=0.3),
             RunSpec("vgg", ModelSpec("tinyvgg", hidden_units=8), "a b/c", 2, 1200, lr=0.3)]
    runs = pd.DataFrame({"run_id": [s.run_id for s in specs], "model": [s.model for s in specs],
                         "config_json": [s.to_json() for s in specs]})
    configs = run_configs(runs)
    assert configs[specs[2].run_id]["model_spec.hidden_units"] == 8 and configs[specs[2].run_id]["lr"] == 0.3
    names = run_names(runs, configs)
    # lr varies between the mlp's runs, so it names their condition; nothing varies for vgg but the activation
    assert [names[s.run_id] for s in specs] == [
        "mlp lr=0.1 relu seed=1 n_train=600", "mlp lr=0.3 relu seed=1 n_train=600",
        "vgg leaky_relu seed=2 n_train=1200", "vgg a/b c seed=2 n_train=1200", "vgg a b/c seed=2 n_train=1200"]
    folders = path_names(names)
    assert folders[specs[0].run_id] == "mlp_lr=0.1_relu_seed=1_n_train=600"
    # two names that sanitise alike stay apart by their run ids
    assert folders[specs[3].run_id] == f"vgg_a_b_c_seed=2_n_train=1200_{specs[3].run_id[:8]}"
    assert folders[specs[4].run_id] == f"vgg_a_b_c_seed=2_n_train=1200_{specs[4].run_id[:8]}"
    assert path_names({"x": "../../etc"})["x"] == "etc" and path_names({"x": "..."})["x"] == "run"


def test_tensorboard_export_reads_back_with_tensorboards_own_reader(store, tmp_path):
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.plugins.hparams import metadata
    res = load_results(store)
    # Any other numeric epoch column is exported too (a validation loss, where a study stores one).
    res = Results(res.runs, res.epochs.assign(val_loss=res.epochs["test_loss"] + 0.5), res.batches,
                  res.diagnostics)
    dest = export(store, "tensorboard", dest=tmp_path / "tb", results=res)
    names = path_names(run_names(res.runs, run_configs(res.runs)))
    exported = res.runs[res.runs.status != "pending"]
    assert len(exported) == EXPORTED
    assert sorted(p.name for p in dest.iterdir() if p.is_dir()) == sorted(names[r] for r in exported.run_id)
    assert names[exported.run_id.iloc[0]] == "mlp_original_relu_seed=1_n_train=600"

    for r in exported.itertuples():
        acc = ea.EventAccumulator(str(dest / names[r.run_id]), size_guidance={ea.SCALARS: 0}).Reload()
        b = res.batches[res.batches.run_id == r.run_id]
        e = res.epochs[res.epochs.run_id == r.run_id]
        tags = acc.Tags()["scalars"]
        if r.status == "failed":
            assert tags == []
        else:
            got = acc.Scalars("batch/loss")
            assert [s.step for s in got] == b.step.tolist() and len(got) > 0
            assert np.array_equal([s.value for s in got], b.loss.to_numpy(np.float32))  # inf stays inf
            for m in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "val_loss"):
                got = acc.Scalars(f"epoch/{m}")
                assert [s.step for s in got] == e.epoch.tolist()
                assert np.array_equal([s.value for s in got], e[m].to_numpy(np.float32))
        content = acc.PluginTagToContent("hparams")
        assert list(content) == ["_hparams_/session_start_info"]
        info = metadata.parse_session_start_info_plugin_data(content["_hparams_/session_start_info"])
        assert info.hparams["activation"].string_value == r.activation
        assert info.hparams["seed"].number_value == r.seed and info.hparams["lr"].number_value == 0.1
        assert info.hparams["model_spec.activate_logits"].bool_value is True
        assert info.group_name == r.run_id

    root = ea.EventAccumulator(str(dest)).Reload()
    experiment = metadata.parse_experiment_plugin_data(
        root.PluginTagToContent("hparams")["_hparams_/experiment"])
    infos = {h.name: h for h in experiment.hparam_infos}
    assert [v.string_value for v in infos["activation"].domain_discrete.values] == ["relu", "selu", "sigmoid"]
    assert [m.name.tag for m in experiment.metric_infos] == [
        "batch/loss", "epoch/train_loss", "epoch/train_accuracy", "epoch/test_loss", "epoch/test_accuracy",
        "epoch/val_loss"]

    export(store, "tensorboard", dest=tmp_path / "tb", results=res)  # again: replaced, not doubled
    assert all(len(list(d.glob("events.out.tfevents.*"))) == 1 for d in dest.iterdir() if d.is_dir())


MLFLOW_CLI = """
import json, sys
from actconv.cli import main
code = main(sys.argv[1:])
print(json.dumps([code, "torch" in sys.modules]))
"""


def test_mlflow_export_reads_back_with_mlflows_client_and_twice_adds_nothing(store, tmp_path):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient
    out = tmp_path / "s"
    out.mkdir()
    (out / "actconv.sqlite").write_bytes((store / "actconv.sqlite").read_bytes())
    proc = subprocess.run([sys.executable, "-c", MLFLOW_CLI, "export", str(out), "--format", "mlflow"],
                          capture_output=True, text=True, timeout=600)
    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    assert proc.stdout.strip().splitlines() == [uri, json.dumps([0, False])], proc.stderr[-2000:]  # no torch

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("syn")
    assert exp.artifact_location == (out / "mlflow-artifacts").resolve().as_uri()
    found = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
    res = load_results(out)
    exported = res.runs[res.runs.status != "pending"]
    assert len(found) == EXPORTED
    by_id = {m.data.tags["actconv_run_id"]: m for m in found}
    assert set(by_id) == set(exported.run_id)
    names = run_names(res.runs, run_configs(res.runs))
    for r in exported.itertuples():
        run = by_id[r.run_id]
        assert run.data.tags["actconv_status"] == r.status and run.info.run_name == names[r.run_id]
        assert run.info.status == ("FAILED" if r.status == "failed" else "FINISHED")
        spec = json.loads(r.config_json)
        assert run.data.params["activation"] == r.activation and run.data.params["seed"] == str(r.seed)
        assert run.data.params["model_spec.hidden_units"] == str(spec["model_spec"]["hidden_units"])
        assert len(run.data.params) == len(run_configs(res.runs)[r.run_id])
        b = res.batches[res.batches.run_id == r.run_id]
        history = sorted(client.get_metric_history(run.info.run_id, "batch/loss"), key=lambda m: m.step)
        assert [m.step for m in history] == b.step.tolist()
        # MLflow stores an infinite value as the largest double
        want = np.where(np.isinf(b.loss), np.finfo(float).max, b.loss.to_numpy())
        assert [m.value for m in history] == want.tolist()
        e = res.epochs[res.epochs.run_id == r.run_id]
        history = sorted(client.get_metric_history(run.info.run_id, "epoch/test_accuracy"), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == list(zip(e.epoch, e.test_accuracy))

    assert export(out, "mlflow") == uri  # twice: nothing added
    assert len(client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)) == EXPORTED

    # The pending run finishes: the next export adds it, and only it.
    pending = res.runs[res.runs.status == "pending"].iloc[0]
    spec = RunSpec.from_json(pending.config_json)
    with Store(out) as s:
        s.write(RunResult(spec, "done", epochs=[dict(epoch=0, train_loss=2.0, train_accuracy=0.1, test_loss=2.1,
                                                     test_accuracy=0.1)],
                          batches={"epoch": np.array([1]), "step": np.array([1]), "loss": np.array([1.5]),
                                   "accuracy": np.array([0.2])}, wall_s=1.0,
                          env=dict(torch_version="t", device="cpu", threads=1, dtype="float32")))
    export(out, "mlflow")
    found = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
    assert len(found) == EXPORTED + 1
    new = [m for m in found if m.data.tags["actconv_run_id"] == pending.run_id]
    assert [m.value for m in client.get_metric_history(new[0].info.run_id, "batch/loss")] == [1.5]


@pytest.mark.parametrize("argv, message", [
    (["--format", "xlsx"], "unknown export format 'xlsx'; choose from: csv, parquet, tensorboard, mlflow"),
    (["--format", "mlflow", "--out", "x"], "an MLflow export goes to --tracking-uri, not to a folder"),
    (["--format", "csv", "--tracking-uri", "sqlite:///x.db"], "--tracking-uri is for --format mlflow, not csv"),
    (["--format", "mlflow", "--tracking-uri", "nosuch://x"], "MLflow export to nosuch://x failed"),
])
def test_cli_export_errors_are_one_line_exit_2(store, capsys, argv, message):
    assert cli.main(["export", str(store), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("fmt, module", [("tensorboard", "tensorboard"), ("mlflow", "mlflow"),
                                         ("parquet", "pyarrow")])
def test_a_missing_package_names_the_extra_to_install(store, tmp_path, monkeypatch, capsys, fmt, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    assert cli.main(["export", str(store), "--format", fmt]) == 2
    assert capsys.readouterr().err == (f"actconv: error: {fmt} export needs the {module} package: "
                                       f"pip install 'actconv[{'parquet' if fmt == 'parquet' else fmt}]'\n")
    assert not (store / "tensorboard").exists() and not (store / "mlflow.db").exists()


def test_cli_tensorboard_export_prints_its_folder(store, tmp_path, capsys):
    assert cli.main(["export", str(store), "--format", "tensorboard", "--out", str(tmp_path / "tb")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "tb")
    assert len([d for d in (tmp_path / "tb").iterdir() if d.is_dir()]) == EXPORTED
    assert os.path.exists(tmp_path / "tb") and not (store / "tensorboard").exists()
