"""Bad input, generated: study tables, study files and command lines give one clear line and
exit 2 (or run), never a traceback; nothing is written outside --out; nothing is unpickled."""
import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actconv.study import config
from actconv.run import queue as executors
from actconv.cli import main
from actconv.errors import ConfigError
from actconv.train.result import RunResult

WORDS = ["relu", "selu", "sigmoid", "common_activations", "relu_family", "mlp", "mlp_original", "tinyvgg",
         "m", "sgd", "adam", "mnist-5k", "mnist", "cifar", "cpu", "cuda", "auto", "loop", "ensemble",
         "default", "kaiming_normal", "none", "standard", "float32", "float64", "", "..", "../escape",
         "/abs/path", "a\\b", "name with spaces", ".hidden", "x\ny"]
SCALARS = st.one_of(st.booleans(), st.integers(-3, 5000), st.integers(-2**80, 2**80), st.floats(),
                    st.text(max_size=8), st.sampled_from(WORDS))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(WORDS) | st.text(max_size=4), inner, max_size=3),
                      max_leaves=6)
BASE = {"name": "fz", "activations": ["relu"], "seeds": [1], "n_train": [64], "epochs": 1}


@st.composite
def study_tables(draw):
    """A small valid study with a few keys replaced or added, at the top, in a model, in a grid."""
    d = dict(BASE)
    for key in draw(st.lists(st.sampled_from(sorted(config.STUDY_KEYS) + ["nmae"]), max_size=3)):
        d[key] = draw(VALUES)
    if draw(st.booleans()):
        model = {"kind": "mlp", "hidden_units": 8}
        for key in draw(st.lists(st.sampled_from(sorted(config.MODEL_KEYS) + ["width"]), max_size=2)):
            model[key] = draw(VALUES)
        d["models"] = {draw(st.sampled_from(["m", "mlp", "x y"])): model}
    if draw(st.booleans()):
        grid = {"models": draw(st.sampled_from([["m"], ["mlp"], [], ["nope"]]))}
        for key in draw(st.lists(st.sampled_from(sorted(config.GRID_KEYS)), max_size=2)):
            grid[key] = draw(VALUES)
        for key in draw(st.lists(st.sampled_from(config.AXES), max_size=2)):
            grid[key] = draw(AXIS_LISTS)
        d["grid"] = [grid]
    for key in draw(st.lists(st.sampled_from(config.AXES), max_size=2)):
        d[key] = draw(AXIS_LISTS)
    return d


# Lists for the training axes, mostly near-valid: empty, repeated, zero, negative, a wrong type.
AXIS_LISTS = st.lists(st.one_of(st.integers(-1, 3), st.floats(-1, 2), st.sampled_from(["sgd", "adam", "lion"]),
                                st.floats()), max_size=4)


def toml(value) -> str:
    """A TOML rendering of generated values (inline tables, inf and nan as TOML writes them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + "}"


def toml_document(d: dict) -> str:
    return "\n".join(f"{json.dumps(k)} = {toml(v)}" for k, v in d.items()) + "\n"


def one_clear_line(err: str) -> bool:
    return err.startswith("actconv: error: ") and err.count("\n") == 1 and "Traceback" not in err


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(study_tables())
def test_generated_study_tables_give_a_study_or_one_config_error(d):
    try:
        study = config.study_from_dict(d)
        runs = study.runs()
    except ConfigError as e:
        assert "\n" not in str(e) and str(e)
        return
    # Every run has valid scalar settings, one per value of each list, and its own id.
    assert len({r.run_id for r in runs}) == len(runs)
    for r in runs:
        assert r.lr > 0 and math.isfinite(r.lr) and r.epochs > 0 and r.batch_size > 0 and r.validation >= 0
        assert r.optimizer in config.OPTIMIZERS and r.momentum >= 0 and r.weight_decay >= 0
    for key in config.AXES:
        if isinstance(d.get(key), list) and all(key not in g for g in d.get("grid", [{}])):
            assert {getattr(r, key) for r in runs} == set(d[key])  # a top-level list no grid overrides
    # A study that passed: its name is one visible path component, so it cannot leave a folder.
    base = Path("/out").resolve()
    assert (base / study.name).resolve().parent == base and study.name not in (".", "..")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.binary(max_size=200).map(lambda b: ("bytes", b)),
                 st.text(max_size=200).map(lambda t: ("text", t)),
                 study_tables().map(lambda d: ("text", toml_document(d)))))
def test_generated_study_files_load_or_give_one_config_error(content):
    kind, body = content
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.toml"
        if kind == "bytes":
            path.write_bytes(body)
        else:
            path.write_text(body, encoding="utf-8", errors="surrogatepass")
        try:
            config.load_study(path).runs()
        except ConfigError as e:
            assert "\n" not in str(e)


FLAG_VALUES = st.one_of(st.sampled_from(WORDS + ["0", "-1", "1", "2", "1,2", "1,,x", "nan", "inf", "-inf",
                                                 "1e400", "99999999999999999999999", "64,128", "0.1"]),
                        st.text(max_size=6))
GOOD = {"--models": ["mlp", "mlp_original", "tinyvgg"], "--activations": ["relu", "selu,tanh", "relu_family"],
        "--seeds": ["1", "1,2", "0"], "--n-train": ["64", "32,64"], "--epochs": ["1", "2"],
        "--batch-size": ["16", "1000", "16,32"], "--lr": ["0.1", "1e-3", "0.01,0.1", "0.1,-1", ","],
        "--momentum": ["0", "0.9", "0,0.9"], "--weight-decay": ["0", "1e-4"],
        "--optimizer": ["sgd", "adam", "sgd,adam", "sgd,lion"], "--validation": ["0", "16", "-1", "4000"], "--hidden-units": ["4", "8"],
        "--engine": ["auto", "loop", "ensemble"], "--dataset": ["mnist-5k"], "--device": ["cpu", "auto"],
        "--threads": ["1", "2"], "--jobs": ["1", "2"], "--retries": ["0", "1"], "--data-dir": ["."],
        "--preset": ["smoke", "demo"], "--executor": ["local"]}
FLAGS = sorted(GOOD)
SWITCHES = ["--activate-logits", "--no-activate-logits", "--stratify", "--diagnostics", "--quiet", "--bogus"]


@st.composite
def command_lines(draw):
    argv = []
    for _ in range(draw(st.integers(0, 4))):
        flag = draw(st.sampled_from(FLAGS + SWITCHES))
        if flag not in SWITCHES:  # mostly a good value, so runs get past the parser too
            value = draw(st.sampled_from(GOOD[flag]) if draw(st.integers(0, 9)) < 7 else FLAG_VALUES)
        argv += [flag] if flag in SWITCHES else [flag, value]
    study = draw(st.none() | study_tables())
    return argv, study


def _instant(backend):
    """The backend with its real checks, whose units all "finish" at once in this process."""
    @contextlib.contextmanager
    def start(options):
        yield lambda feed, data_args: ((u, [RunResult(s, "done") for s in u]) for u in iter(lambda: feed(0), None))
    return types.SimpleNamespace(probe=backend.probe, start=start)


def _train_nothing(mp):
    for name in ("serial", "local"):
        mp.setitem(executors.BACKENDS, name, _instant(executors.BACKENDS[name]))


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=command_lines())
def test_generated_command_lines_run_or_exit_2_with_one_line_and_write_only_under_out(case, capsys):
    argv, study = case
    if "--executor" in argv and argv[argv.index("--executor") + 1] == "ray":
        argv[argv.index("--executor") + 1] = "local"  # a real Ray start is test_ray's business
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        work = Path(tmp) / "cwd"
        work.mkdir()
        mp.chdir(work)
        # Nothing trains here: every run "finishes" at once, in this process.
        _train_nothing(mp)
        files = []
        if study is not None:
            (Path(tmp) / "s.toml").write_text(toml_document(study), encoding="utf-8", errors="surrogatepass")
            files = [str(Path(tmp) / "s.toml")]
        capsys.readouterr()
        code = main(["run", *files, "--out", str(Path(tmp) / "out"), *argv, "--quiet"])
        err = capsys.readouterr().err
        assert code in (0, 1, 2)
        if code == 2:
            assert one_clear_line(err), err
        else:
            assert "Traceback" not in err
        assert not list(work.iterdir())  # nothing written in the working directory
        written = {p.name for p in Path(tmp).iterdir()}
        assert written <= {"cwd", "out", "s.toml"}


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(argv=st.lists(st.sampled_from(["run", "status", "verify", "report", "export", "presets", "--out", "--runs",
                                 "--run-id", "-1", "0", "abc", "--format", "xml", "--seeds", "nope"])
                | st.text(max_size=5), max_size=5))
def test_any_command_line_gives_a_result_or_one_line(argv, capsys):
    argv = [a for a in argv if a not in ("-h", "--help")]  # help prints usage and exits 0, as it should
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        _train_nothing(mp)
        argv = [os.path.join(tmp, "missing") if a == "abc" else a for a in argv]
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's --help-like exits only
            assert e.code == 0
            return
        err = capsys.readouterr().err
        assert code in (0, 1, 2)
        if code == 2:
            assert one_clear_line(err), err


@pytest.mark.parametrize("name", ["../../escape", "/etc/cron.d/x", ".hidden", "a\\b", "tab\there", ""])
def test_study_names_that_could_leave_the_output_dir_are_refused(tmp_path, capsys, name):
    (tmp_path / "s.toml").write_text(f"name = {json.dumps(name)}\n")
    assert main(["run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "name must be" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_huge_numbers_are_clear_errors(tmp_path, capsys):
    (tmp_path / "s.toml").write_text("epochs = " + "9" * 5000 + "\n")
    assert main(["run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    for flags, message in ((["--seeds", "9" * 30], "seeds is out of range"), (["--lr", "inf"], "lr must be a finite"),
                           (["--threads", "100000"], "threads must be 1 to 256")):
        assert main(["run", "--out", str(tmp_path / "o"), *flags]) == 2
        assert message in capsys.readouterr().err


def test_nothing_is_loaded_with_pickle():
    """No pickle, no torch.load without weights_only, no np.load with allow_pickle, in the package."""
    src = Path(config.__file__).parent
    for path in src.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"\bimport pickle\b|\bpickle\.loads?\(|allow_pickle\s*=\s*True", text), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)
