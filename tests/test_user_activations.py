"""Activations from the user: parametric built-ins, safe expressions and module:attr objects,
through the loop, the ensemble, the process pool and Ray; their run ids; every bad input."""
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

from actconv.study import activations as acts
from actconv.study import config
from actconv.study import expressions
from actconv.errors import ConfigError
from actconv.run.store import load_results

PTANH_EXPR = "where(x > 0, tanh(x), 0.25 * tanh(x))"
MODULE = '''
import torch

def penalized_tanh(x):
    """Eger et al.'s penalized tanh."""
    return torch.where(x > 0, torch.tanh(x), 0.25 * torch.tanh(x))

class Learned(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.25))
    def forward(self, x):
        return torch.where(x > 0, x, self.a * x)

def softmax(x):
    return torch.softmax(x, -1)

def first_row(x):
    return x[0]

def tanh_factory():
    return torch.nn.Tanh()

NOT_CALLABLE = 3
'''
STUDY = f'''
name = "ptanh"
seeds = [1, 2]
n_train = [64]
epochs = 1
[models.m]
kind = "mlp"
hidden_units = 8
[activations.ptanh]
expr = "{PTANH_EXPR}"
family = "penalized"
[activations.ptanh_mod]
object = "ptanh_mod:penalized_tanh"
init = "xavier_uniform"
[[grid]]
models = ["m"]
activations = ["ptanh", "ptanh_mod", "leaky_relu(0.2)", "relu"]
'''


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A study folder with the user's module and study file; the working directory elsewhere."""
    (tmp_path / "ptanh_mod.py").write_text(MODULE)
    (tmp_path / "study.toml").write_text(STUDY)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield tmp_path
    sys.modules.pop("ptanh_mod", None)


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "actconv.cli", "run", *args, "--quiet"], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


# -- parametric built-ins --------------------------------------------------------------

def test_parametric_spellings_are_canonical_and_build_the_torch_class():
    assert acts.canonical("elu(0.5)") == acts.canonical("elu( alpha = 0.50 )") == "elu(alpha=0.5)"
    assert acts.canonical("celu(alpha=2)") == "celu(alpha=2.0)"
    assert acts.canonical("hardtanh(-2, 2)") == "hardtanh(min_val=-2.0, max_val=2.0)"
    assert acts.canonical("softplus(beta=2)") == "softplus(beta=2.0, threshold=20.0)"
    assert acts.canonical("leaky_relu(0.2)") == "leaky_relu(negative_slope=0.2)"
    m = acts.make_activation("hardtanh(min_val=-2.0, max_val=2.0)")
    assert isinstance(m, torch.nn.Hardtanh) and (m.min_val, m.max_val) == (-2.0, 2.0)
    assert acts.expand(["elu(0.5)", "relu"]) == ["elu(alpha=0.5)", "relu"]
    assert acts.recommended_init("elu(alpha=0.5)") == "kaiming_normal"


@pytest.mark.parametrize("text, words", [
    ("elu(beta=2)", ["unknown parameter 'beta'", "alpha=1.0"]),
    ("elu(1, 2)", ["at most 1", "alpha=1.0"]),
    ("softplus(beta='a')", ["number literal", "beta=1.0, threshold=20.0"]),
    ("hardtanh(2, -2)", ["torch refuses"]),
    ("relu(1)", ["unknown parametric activation 'relu'", "leaky_relu"]),
    ("elu(alpha=x)", ["number literal"]),
    ("elu(1e400)", ["number literal"]),
])
def test_bad_parametric_spellings_are_refused_listing_the_parameters(text, words):
    with pytest.raises(ConfigError) as e:
        acts.canonical(text)
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value)


# -- expressions -------------------------------------------------------------------------

def test_an_expression_computes_what_it_says():
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    f = expressions.compile_expression(PTANH_EXPR)
    assert torch.equal(f(x), torch.where(x > 0, torch.tanh(x), 0.25 * torch.tanh(x)))
    g = expressions.compile_expression("clamp(x, -1, 1) ** 2 + maximum(x, 0) - 2 * (0 < x < 1)")
    assert torch.equal(g(x), x.clamp(-1, 1) ** 2 + x.clamp(min=0) - 2 * ((x > 0) & (x < 1)))
    assert expressions.canonical("where( x>0 , tanh(x),0.250*tanh(x))") == PTANH_EXPR


FORBIDDEN = ["__import__('os')", "x.__class__", "(lambda: 1)()", "[x for x in x]", "open('f')", "x[0]",
             "'a'*10**9", "9**9**9", "x ** 9 ** 9 ** 9", "y", "exp(x, 1)", "tanh(x=x)", "x if x else 0",
             "1e400", "x @ x", "not x", "{x}", "f'{x}'", "tanh(" * 60 + "x" + ")" * 60, "2"]


@pytest.mark.parametrize("text", FORBIDDEN[:-1])
def test_forbidden_expressions_are_refused_naming_the_piece(text):
    with pytest.raises(ConfigError) as e:
        expressions.parse(text)
    assert "\n" not in str(e.value)


# -- identity ---------------------------------------------------------------------------

# Built-in activations keep their run ids: tests/test_validation.py pins every preset's ids.


def test_editing_the_source_or_the_expression_gives_new_run_ids(folder):
    before = {r.activation: r.run_id for r in config.load_study(folder / "study.toml").runs()}
    (folder / "ptanh_mod.py").write_text(MODULE.replace("0.25 *", "0.2 *"))
    after = {r.activation: r.run_id for r in config.load_study(folder / "study.toml").runs()}
    assert before["ptanh_mod"] != after["ptanh_mod"]
    assert {a: i for a, i in before.items() if a != "ptanh_mod"} == {a: i for a, i in after.items() if a != "ptanh_mod"}
    (folder / "study.toml").write_text(STUDY.replace("0.25 * tanh", "0.3 * tanh"))
    assert {r.activation: r.run_id for r in config.load_study(folder / "study.toml").runs()}["ptanh"] != after["ptanh"]


def test_a_definition_records_its_probe_and_metadata(folder):
    study = config.load_study(folder / "study.toml")
    defs = {k: acts.Definition.from_json(v) for k, v in study.activation_defs}
    assert defs["ptanh"].range == (-0.25, 1.0) and defs["ptanh"].range_estimated
    assert defs["ptanh"].elementwise and defs["ptanh"].family == "penalized"
    assert defs["ptanh_mod"].path == str(folder) and defs["ptanh_mod"].init == "xavier_uniform"
    assert acts.recommended_init("ptanh_mod") == "xavier_uniform"
    assert {r.activation: r.engine for r in study.runs()}["ptanh_mod"] == "ensemble"


def test_not_elementwise_activations_run_in_the_loop(folder):
    base = {"name": "x", "models": {"m": {"kind": "mlp", "hidden_units": 8}}, "seeds": [1], "n_train": [64]}
    for obj in ["ptanh_mod:Learned", "ptanh_mod:softmax"]:
        s = config.study_from_dict({**base, "activations": {"a": {"object": obj}},
                                    "grid": [{"models": ["m"], "activations": ["a"]}]}, base=folder)
        assert [r.engine for r in s.runs()] == ["loop"]
        with pytest.raises(ConfigError, match="elementwise"):
            config.study_from_dict({**base, "engine": "ensemble", "activations": {"a": {"object": obj}},
                                    "grid": [{"models": ["m"], "activations": ["a"]}]}, base=folder).runs()
    s = config.study_from_dict({**base, "activations": {"a": {"object": "ptanh_mod:tanh_factory"}},
                                "grid": [{"models": ["m"], "activations": ["a"]}]}, base=folder)
    assert [r.engine for r in s.runs()] == ["ensemble"]


# -- training -----------------------------------------------------------------------------

def _test_losses(out):
    r = load_results(out)
    e = r.epochs.merge(r.runs[["run_id", "engine"]], on="run_id")
    return {(a, g, s): v for a, g, s, v in e[e.epoch == 1][["activation", "engine", "seed", "test_loss"]]
            .itertuples(index=False)}


def test_module_and_expression_train_the_same_numbers_in_loop_ensemble_and_pool(folder):
    for engine, jobs in (("loop", "1"), ("ensemble", "1"), ("auto", "2")):
        out = folder / f"out-{engine}"
        p = run_cli(str(folder / "study.toml"), "--out", str(out), "--engine", engine, "--jobs", jobs,
                    "--activations", f"ptanh,ptanh_mod,leaky_relu(0.2),pt2={PTANH_EXPR}", cwd=folder / "work")
        assert p.returncode == 0, p.stderr
        loss = _test_losses(out)
        assert len(loss) == 8
        eng = "loop" if engine == "loop" else "ensemble"
        for s in (1, 2):
            assert loss[("ptanh", eng, s)] == loss[("pt2", eng, s)]
        # ptanh_mod differs only in its init (xavier_uniform vs default): not the same numbers
        assert ("leaky_relu(negative_slope=0.2)", eng, 1) in loss
    same_init = folder / "same"
    p = run_cli("--out", str(same_init), "--models", "mlp", "--seeds", "1", "--n-train", "64", "--epochs", "1",
                "--activations", f"ptanh_mod:penalized_tanh,pt={PTANH_EXPR}", "--engine", "loop", cwd=folder)
    assert p.returncode == 0, p.stderr
    loss = _test_losses(same_init)
    assert loss[("penalized_tanh", "loop", 1)] == loss[("pt", "loop", 1)]
    assert _test_losses(folder / "out-auto") == {k: v for k, v in _test_losses(folder / "out-ensemble").items()}


def test_diagnostics_and_the_gallery_take_a_users_activation(folder):
    from actconv.analysis import diagnostics
    out = folder / "diag"
    p = run_cli("--out", str(out), "--models", "mlp", "--seeds", "1", "--n-train", "64", "--epochs", "1",
                "--activations", f"pt={PTANH_EXPR}", "--diagnostics", cwd=folder)
    assert p.returncode == 0, p.stderr
    d = load_results(out).diagnostics
    sat = d[(d.metric == "saturated") & (d.layer == "layer1")]
    assert len(sat) > 0 and sat.value.between(0, 1).all()
    r = load_results(out)
    assert acts.use_stored_activations(r.runs) == {"pt"}
    t = diagnostics.activation_table(["pt"], -2, 2, 5)
    assert t.value.tolist() == pytest.approx([0.25 * torch.tanh(torch.tensor(-2.0)).item(),
                                              0.25 * torch.tanh(torch.tensor(-1.0)).item(), 0.0,
                                              torch.tanh(torch.tensor(1.0)).item(), torch.tanh(torch.tensor(2.0)).item()])
    assert t.derivative.iloc[-1] == pytest.approx(1 - torch.tanh(torch.tensor(2.0)).item() ** 2)


def test_every_report_section_takes_a_users_activation(folder):
    # on the logits its stated range bounds the loss: the floor finding names it; its own
    # family figures; a parametric spelling beside it
    (folder / "r.toml").write_text(f"""
name = "own"
epochs = 1
[activations.pt]
expr = "{PTANH_EXPR}"
range = [-0.25, 1.0]
[models.o]
kind = "mlp"
hidden_units = 8
activate_logits = true
[[grid]]
models = ["o"]
activations = ["pt", "relu", "leaky_relu(0.2)"]
seeds = [1, 2]
n_train = [64, 128, 256]
""")
    out = folder / "own"
    p = run_cli(str(folder / "r.toml"), "--out", str(out), cwd=folder)
    assert p.returncode == 0, p.stderr
    from actconv.report import write_report
    page = write_report(out, jobs=1)
    mech = pd.read_csv(page.parent / "mechanisms.csv")
    assert "o, logits in (-0.25, 1)" in set(mech.scope)
    assert (page.parent / "figures" / "o-your_activations-test.png").exists()
    lc = pd.read_csv(page.parent / "learning_curves.csv")
    assert {"pt", "leaky_relu(negative_slope=0.2)"} <= set(lc.activation)
    assert "pt" in set(pd.read_csv(page.parent / "ranking.csv").activation)


# -- bad input -------------------------------------------------------------------------------

BAD = {"nosuch_mod:f": "cannot import module 'nosuch_mod'", "broken_mod:f": "ImportError: boom",
       "ptanh_mod:nothere": "has no attribute 'nothere'", "ptanh_mod:NOT_CALLABLE": "is not callable",
       "ptanh_mod:first_row": "changes the shape", **{f"p={t}": "activation expression" for t in FORBIDDEN[:-1]}, "p=2": "changes the shape",
       "elu(beta=2)": "alpha=1.0", "relu=tanh(x)": "no built-in one"}


@pytest.mark.parametrize("entry", sorted(BAD))
def test_bad_activations_exit_2_in_one_line_storing_nothing(folder, entry):
    (folder / "broken_mod.py").write_text("raise ImportError('boom')\n")
    out = folder / "bad"
    p = run_cli("--out", str(out), "--seeds", "1", "--n-train", "64", "--epochs", "1",
                "--activations", entry, cwd=folder)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and BAD[entry] in p.stderr, p.stderr
    assert not out.exists()


def test_bad_definitions_in_a_study_file_exit_2(folder):
    for table, words in [('expr = "x.__class__"', "Attribute"), ('object = "ptanh_mod:first_row"', "shape"),
                         ('expr = "x"\nobject = "a:b"', "exactly one"), ('expr = "x"\nrange = [1, 0]', "range"),
                         ('expr = "x"\ninit = "nope"', "unknown init")]:
        (folder / "bad.toml").write_text(f'seeds = [1]\nn_train = [64]\n[activations.b]\n{table}\n')
        p = run_cli(str(folder / "bad.toml"), "--out", str(folder / "bad"), cwd=folder)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and words in p.stderr, p.stderr
        assert not (folder / "bad").exists()


# -- Ray ------------------------------------------------------------------------------------

@pytest.mark.ray
def test_a_users_module_runs_on_a_local_ray(folder):
    pytest.importorskip("ray")
    from faultkit import kill_session, start_ray_head
    proc, address = start_ray_head(num_cpus=2)
    try:
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        p = subprocess.run([sys.executable, "-m", "actconv.cli", "run", str(folder / "study.toml"), "--quiet",
                            "--out", str(folder / "ray"), "--executor", "ray", "--ray-address", address,
                            "--engine", "loop"], cwd=folder / "work", capture_output=True, text=True,
                           timeout=600, env=env)
        assert p.returncode == 0, p.stderr
        p = run_cli(str(folder / "study.toml"), "--out", str(folder / "local"), "--engine", "loop",
                    cwd=folder / "work")
        assert p.returncode == 0, p.stderr
        assert _test_losses(folder / "ray") == _test_losses(folder / "local")
        assert len(_test_losses(folder / "ray")) == 8
    finally:
        kill_session(proc.pid)
