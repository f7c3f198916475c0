"""A training process imports neither pandas nor scipy: the recorder is torch only."""
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("pandas", "scipy")

TRAIN = """
from actconv import data as datasets
from actconv.config import ModelSpec, RunSpec
from actconv.ensemble import train_ensemble
from actconv.train import train_run
data = datasets.load("mnist-5k")
spec = RunSpec(model="m", model_spec=ModelSpec("mlp", hidden_units=8), activation="relu", seed=1,
               n_train=32, epochs=1, batch_size=16, diagnostics=True)
assert train_run(spec, data).diagnostics
for r in train_ensemble([RunSpec(**{**spec.__dict__, "seed": s, "engine": "ensemble"}) for s in (1, 2)], data):
    assert r.diagnostics
"""


def loaded_after(code: str) -> list[str]:
    """The heavy modules in sys.modules of a fresh interpreter after running `code`."""
    probe = code + f"\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(probe)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [m for m in proc.stdout.strip().splitlines()[-1].split(",") if m] if proc.stdout.strip() else []


@pytest.mark.parametrize("code", [
    "import actconv.train, actconv.ensemble" + TRAIN,  # the loop and the ensemble, diagnostics on
    "import actconv.worker",                            # what the process pool's fork server imports
    "import actconv.ray_executor\nfrom actconv.execution import execute_unit",  # what a Ray task imports
], ids=["training", "pool-worker", "ray-task"])
def test_training_processes_import_neither_pandas_nor_scipy(code):
    assert loaded_after(code) == []


def test_the_probe_sees_pandas_where_it_is_imported():
    assert "pandas" in loaded_after("import actconv.diagnostics")  # the check can fail
