"""A user's data and models: digits, CIFAR-10 from its own pickle batches, npz arrays, model
factories named module:attr; and every bad input through the CLI (one line, exit 2, no store)."""
import os
import pickle
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from actconv.study import config
from actconv.study import models
from actconv.study import data as datasets
from actconv.run.store import STORE_NAME

MODULE = textwrap.dedent('''
    import math
    from torch import nn

    WIDTH = 3

    def make(make_activation, input_shape, n_classes, width=8):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), make_activation(),
                             nn.Linear(width, width), make_activation(), nn.Linear(width, n_classes))

    class Branchy(nn.Module):
        def __init__(self, make_activation, input_shape, n_classes):
            super().__init__()
            self.a, self.b = nn.Linear(math.prod(input_shape), n_classes), make_activation()

        def forward(self, x):
            return self.b(self.a(x.flatten(1))) + 1

    def not_a_module(make_activation, input_shape, n_classes):
        return 42
''')


def cli(*args, cwd=None):
    """`actconv ARGS` in a fresh process; (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "actconv.cli", *map(str, args)], cwd=cwd,
                       capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def stored_runs(out):
    with sqlite3.connect(out / STORE_NAME) as conn:
        return conn.execute("SELECT run_id, status, model, dataset, input_shape, n_classes FROM runs "
                            "ORDER BY rowid").fetchall()


def tiny(*extra):
    return ["--seeds", "1", "--n-train", "20", "--epochs", "1", "--hidden-units", "4",
            "--activations", "relu", "--quiet", *extra]


# -- digits -----------------------------------------------------------------------------

def test_digits_has_the_documented_split():
    d = datasets.load("digits")
    assert d.train_x.shape == (1497, 1, 8, 8) and d.test_x.shape == (300, 1, 8, 8)
    assert d.n_classes == 10 and d.input_shape == (1, 8, 8)
    assert torch.bincount(d.test_y).tolist() == [30] * 10
    assert d.train_x.min() == 0 and d.train_x.max() == 1  # 0..16 scaled by 16
    from sklearn.datasets import load_digits
    raw = load_digits()
    assert sorted((d.train_x * 16).round().sum((1, 2, 3)).tolist() + (d.test_x * 16).round().sum((1, 2, 3)).tolist()) \
        == sorted(raw.images.sum((1, 2)).tolist())


def test_digits_trains_one_tiny_run_per_model(tmp_path):
    code, out, err = cli("run", "--out", tmp_path, "--dataset", "digits", "--models", "mlp,tinyvgg", *tiny())
    assert code == 0, err
    rows = stored_runs(tmp_path)
    assert [(r[1], r[2], r[3], r[4], r[5]) for r in rows] == [
        ("done", "mlp", "digits", "1x8x8", 10), ("done", "tinyvgg", "digits", "1x8x8", 10)]


# -- CIFAR-10 from its own pickle batches ------------------------------------------------

def write_cifar(root, per_batch=4, n_test=6, seed=0):
    """CIFAR-10's python batches (data_batch_1..5, test_batch, batches.meta), small."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)  # 1024 red, 1024 green, 1024 blue
        labels = rng.integers(0, 10, size=n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels, "filenames": []}, f)
        written[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                     "horse", "ship", "truck"], "num_vis": 3072}, f)
    return written


def test_cifar10_is_read_through_torchvision_from_its_batches(tmp_path):
    written = write_cifar(tmp_path)
    d = datasets.load("cifar10", str(tmp_path))
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (6, 3, 32, 32)
    assert d.n_classes == 10 and d.input_shape == (3, 32, 32)
    data, labels = written["data_batch_2"]
    expect = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float() / 255
    assert torch.equal(d.train_x[4:8], expect) and d.train_y[4:8].tolist() == labels
    assert d.test_y.tolist() == written["test_batch"][1]


def test_cifar10_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(datasets.DataError, match="data_batch_1..5.*--download"):
        datasets.load("cifar10", str(tmp_path / "empty"))


def test_cifar10_through_mlp_and_tinyvgg(tmp_path):
    write_cifar(tmp_path / "data")
    code, out, err = cli("run", "--out", tmp_path / "out", "--dataset", "cifar10", "--data-dir",
                         tmp_path / "data", "--models", "mlp,tinyvgg", *tiny("--n-train", "12"))
    assert code == 0, err
    rows = stored_runs(tmp_path / "out")
    assert [(r[1], r[2], r[4], r[5]) for r in rows] == [("done", "mlp", "3x32x32", 10),
                                                        ("done", "tinyvgg", "3x32x32", 10)]


# -- npz ----------------------------------------------------------------------------------

def test_npz_uint8_hw_without_test_split_is_stratified(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(53, 5, 6), dtype=np.uint8)
    y = np.array([0] * 20 + [1] * 23 + [2] * 10)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    d = datasets.load(f"npz:{tmp_path / 'a.npz'}")
    assert d.input_shape == (1, 5, 6) and d.n_classes == 3
    assert torch.bincount(d.test_y).tolist() == [4, 4, 2]  # a fifth of each class, rounded down
    assert len(d.train_y) == 53 - 10
    seen = torch.cat([d.train_x, d.test_x]).flatten(1) * 255
    assert sorted(map(tuple, seen.round().int().tolist())) == sorted(map(tuple, x.reshape(53, -1).tolist()))
    again = datasets._npz(str(tmp_path / "a.npz"))  # the split is fixed
    assert torch.equal(again[3], d.test_y)


def test_npz_float_nchw_with_test_arrays_and_standard_normalize(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal([[[5.0]], [[-3.0]]], [[[2.0]], [[0.5]]], size=(40, 2, 4, 4)).astype(np.float64)
    x_test = rng.normal(size=(7, 2, 4, 4))
    np.savez(tmp_path / "b.npz", x=x, y=np.arange(40) % 4, x_test=x_test, y_test=np.arange(7) % 4)
    raw = datasets.load(f"npz:{tmp_path / 'b.npz'}")
    assert raw.input_shape == (2, 4, 4) and raw.n_classes == 4 and len(raw.test_y) == 7
    assert torch.equal(raw.train_x, torch.from_numpy(x).float())  # float as given
    d = datasets.load(f"npz:{tmp_path / 'b.npz'}", normalize="standard")
    for c in range(2):  # per channel, from the pool only
        assert abs(d.train_x[:, c].mean().item()) < 1e-5 and abs(d.train_x[:, c].std().item() - 1) < 1e-4
        mean, std = raw.train_x[:, c].mean(), raw.train_x[:, c].std()
        assert torch.allclose(d.test_x[:, c], (raw.test_x[:, c] - mean) / std)


def test_npz_study_run_and_its_bytes_in_the_run_id(tmp_path):
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "c.npz", x=rng.integers(0, 256, size=(60, 3, 6, 6), dtype=np.uint8),
             y=np.arange(60) % 3)
    (tmp_path / "s.toml").write_text('dataset = "npz:c.npz"\n[[grid]]\nmodels = ["mlp"]\n')
    run = ["run", tmp_path / "s.toml", "--out", tmp_path / "out", *tiny("--n-train", "30")]
    assert cli(*run, cwd="/")[0] == 0  # the path is the study file's folder's
    rows = stored_runs(tmp_path / "out")
    assert [(r[1], r[3], r[4], r[5]) for r in rows] == [("done", f"npz:{tmp_path / 'c.npz'}", "3x6x6", 3)]
    code, out, _ = cli(*run, cwd="/")
    assert code == 0 and "0 executed, 1 already stored" in out
    np.savez(tmp_path / "c.npz", x=rng.integers(0, 256, size=(60, 3, 6, 6), dtype=np.uint8),
             y=np.arange(60) % 3)
    code, out, _ = cli(*run, cwd="/")
    assert code == 0 and "1 executed, 0 already stored" in out
    assert len({r[0] for r in stored_runs(tmp_path / "out")}) == 2


# -- models from the user -------------------------------------------------------------

def test_tinyvgg_takes_any_channels_and_classes():
    m = models.build_model("tinyvgg", "relu", hidden_units=4, input_shape=(3, 32, 32), n_classes=7)
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert m.classifier[1].in_features == 4 * 8 * 8
    assert models.count_parameters(models.build_model("tinyvgg", "relu", hidden_units=4, input_shape=(1, 9, 5),
                                                      n_classes=2)) == (
        (1 * 9 * 4 + 4) + (4 * 9 * 4 + 4) * 3 + (4 * 2 * 1 * 2 + 2))
    with pytest.raises(config.ConfigError, match="at least 4x4 pixels.*3x8"):
        models.build_model("tinyvgg", "relu", input_shape=(1, 3, 8))
    mlp = models.build_model("mlp", "relu", hidden_units=5, input_shape=(3, 4, 4), n_classes=3)
    assert mlp[1].in_features == 48 and mlp[-1].out_features == 3


def test_user_factory_gets_a_fresh_activation_per_layer(tmp_path, monkeypatch):
    (tmp_path / "mynets_a.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    study = config.study_from_dict({"models": {"mine": {"kind": "mynets_a:make", "width": 6}}})
    spec = dict(study.models)["mine"]
    assert spec.options == (("width", 6),) and len(spec.fingerprint) == 16
    m = models.build_for(spec, "prelu", (2, 3, 3), 5)
    prelus = [layer for layer in m if isinstance(layer, nn.PReLU)]
    assert len(prelus) == 2 and prelus[0] is not prelus[1]
    assert m(torch.zeros(4, 2, 3, 3)).shape == (4, 5) and m[1].out_features == 6
    run = study.runs()[0]
    assert config.RunSpec.from_json(run.to_json()) == run  # options survive the store's JSON


def test_user_model_trains_and_an_edit_gives_new_runs(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mynets_b.py").write_text(MODULE)
    study = tmp_path / "models" / "s.toml"
    study.write_text('dataset = "digits"\n[models.mine]\nkind = "mynets_b:make"\nwidth = 5\n')
    run = ["run", study, "--out", tmp_path / "out", *tiny("--seeds", "1,2")]
    code, out, err = cli(*run, "--jobs", "2", cwd=tmp_path)  # imported from the study file's folder, in workers
    assert code == 0, err
    rows = stored_runs(tmp_path / "out")
    assert [(r[1], r[2]) for r in rows] == [("done", "mine")] * 2
    code, out, err = cli(*run, "--engine", "ensemble", cwd=tmp_path)  # plain layers: the ensemble runs them
    assert code == 0 and "2 executed" in out, err
    (tmp_path / "models" / "mynets_b.py").write_text(MODULE.replace("width=8", "width=9"))
    code, out, err = cli(*run, cwd=tmp_path)
    assert code == 0 and "2 executed, 0 already stored" in out, err
    assert len(stored_runs(tmp_path / "out")) == 6


def test_user_model_the_ensemble_cannot_run_is_refused_before_the_store(tmp_path):
    (tmp_path / "mynets_c.py").write_text(MODULE)
    (tmp_path / "s.toml").write_text('[models.b]\nkind = "mynets_c:Branchy"\n')
    code, out, err = cli("run", tmp_path / "s.toml", "--out", tmp_path / "out",
                         *tiny("--engine", "ensemble"), cwd=tmp_path)
    assert code == 2 and "ensemble engine cannot run layer Branchy" in err
    assert not (tmp_path / "out" / STORE_NAME).exists()
    code, out, err = cli("run", tmp_path / "s.toml", "--out", tmp_path / "out", *tiny(), cwd=tmp_path)
    assert code == 0, err  # auto: the loop


# -- bad input: one line, exit 2, nothing stored -------------------------------------

def bad_npz(path, **arrays):
    np.savez(path, **arrays)
    return f"npz:{path}"


BAD = {
    "module": ('[models.m]\nkind = "no_such_module_xyz:make"\n', "cannot import module 'no_such_module_xyz'"),
    "attribute": ('[models.m]\nkind = "mynets_d:nothing"\n', "has no attribute 'nothing'"),
    "callable": ('[models.m]\nkind = "mynets_d:WIDTH"\n', "is a int, not callable"),
    "not a module": ('[models.m]\nkind = "mynets_d:not_a_module"\n', "returned a int, not a torch.nn.Module"),
    "option": ('[models.m]\nkind = "mynets_d:make"\nwidth = [1, 2]\n', "option width must be a string, number"),
    "no x": ("npz-no-x", "has no array 'x'"),
    "no y": ("npz-no-y", "has no array 'y'"),
    "lengths": ("npz-lengths", "x has 10 images but y has shape (9,)"),
    "too small": ("npz-small", "tinyvgg needs images of at least 4x4 pixels"),
}


def main_in_process(args, cwd, monkeypatch, capsys):
    """`actconv ARGS` through cli.main in this process (a fresh one costs seconds of imports):
    (exit code, stdout, stderr); sys.path and PYTHONPATH are restored afterwards."""
    from actconv import cli as actconv_cli
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    capsys.readouterr()
    code = actconv_cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_no_store(tmp_path, case, monkeypatch, capsys):
    module = f"mynets_bad{list(BAD).index(case)}"  # one per case: this process imports each once
    (tmp_path / f"{module}.py").write_text(MODULE)
    table, message = BAD[case]
    table = table.replace("mynets_d", module)
    x, y = np.zeros((10, 3, 3), np.uint8), np.arange(10) % 2
    arrays = {"npz-no-x": dict(y=y), "npz-no-y": dict(x=x), "npz-lengths": dict(x=x, y=y[:9]),
              "npz-small": dict(x=x, y=y)}
    if table in arrays:
        dataset = bad_npz(tmp_path / "d.npz", **arrays[table])
        table = f'dataset = "{dataset}"\n[models.m]\nkind = "tinyvgg"\n'
    (tmp_path / "s.toml").write_text(table)
    args = ["run", tmp_path / "s.toml", "--out", tmp_path / "out", *tiny("--n-train", "4")]
    code, out, err = (cli(*args, cwd=tmp_path) if case == "module"  # one through a process of its own
                      else main_in_process(args, tmp_path, monkeypatch, capsys))
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("actconv: error: ") and message in err, err
    assert not (tmp_path / "out" / STORE_NAME).exists()


def test_npz_path_that_is_not_there_is_one_line(tmp_path, monkeypatch, capsys):
    code, out, err = main_in_process(["run", "--out", tmp_path / "out", "--dataset",
                                      f"npz:{tmp_path / 'nope.npz'}", *tiny()], tmp_path, monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "cannot read the npz file" in err
    assert not os.path.exists(tmp_path / "out" / STORE_NAME)


# -- the class count in the store and the analysis ------------------------------------

def test_a_store_from_before_the_data_columns_reads_as_mnist_and_takes_new_runs(tmp_path):
    import pandas as pd

    from actconv.run import store as st
    old_schema = st.SCHEMA.replace(", input_shape TEXT, n_classes INTEGER", "")
    assert old_schema != st.SCHEMA
    conn = sqlite3.connect(tmp_path / STORE_NAME)
    conn.executescript(old_schema)
    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(st.SCHEMA_VERSION),))
    old = config.study_from_dict({"grid": [{"models": ["mlp"], "activations": ["relu"], "seeds": [1], "n_train": [10]}]}).runs()[0]
    conn.execute("INSERT INTO runs (run_id, model, model_kind, activation, seed, n_train, config_json) "
                 "VALUES (?,?,?,?,?,?,?)", (old.run_id, "mlp", "mlp", "relu", 1, 10, old.to_json()))
    conn.commit()
    conn.close()
    runs = st.load_results(tmp_path).runs
    assert runs[["input_shape", "n_classes"]].values.tolist() == [["1x28x28", 10]]
    new = config.study_from_dict({"grid": [{"models": ["mlp"], "activations": ["relu"], "seeds": [2], "n_train": [10]}]}).runs()
    with st.Store(tmp_path) as store:
        store.register("new", "{}", new, (3, 32, 32), 4)
    runs = st.load_results(tmp_path).runs
    assert runs[["input_shape", "n_classes"]].values.tolist() == [["1x28x28", 10], ["3x32x32", 4]]
    assert st.n_classes_of(runs[runs["seed"] == 2]) == 4 and st.n_classes_of(pd.DataFrame({"x": [1]})) == 10
    assert st.chance_accuracy(4) == 0.25


def test_the_logit_floor_evidence_uses_the_stored_class_count():
    import pandas as pd

    from actconv import claims
    from actconv.study.activations import logit_loss_floor
    from actconv.run.store import Results
    runs, epochs = [], []
    for i, act in enumerate(["sigmoid", "relu"]):
        for seed in (1, 2):
            rid = f"{act}{seed}"
            runs.append(dict(run_id=rid, status="done", model="mlp_original", model_kind="mlp",
                             activate_logits=1, activation=act, seed=seed, n_train=100, n_classes=3))
            epochs += [dict(run_id=rid, model="mlp_original", activation=act, seed=seed, n_train=100,
                            epoch=e, train_loss=1.1 - 0.01 * e * (1 + i), train_accuracy=0.4,
                            test_loss=1.1 - 0.01 * e, test_accuracy=0.4) for e in range(4)]
    batches = pd.DataFrame(columns=["run_id", "model", "activation", "seed", "n_train", "epoch", "step",
                                    "loss", "accuracy"])
    results = Results(pd.DataFrame(runs), pd.DataFrame(epochs), batches, pd.DataFrame())
    f = claims.evaluate(results, ["d"])
    text = " ".join(f.loc[f["id"] == "d", "evidence"])
    assert f"below {logit_loss_floor(0, 1, 3):.3f} nats on 3 classes" in text


def test_cifar10_damaged_batch_is_a_clear_error(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(datasets.DataError, match="corrupt or unreadable"):
        datasets.load("cifar10", str(tmp_path))
