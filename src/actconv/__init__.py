"""actconv: how the activation function changes how a small network converges on few samples."""
from .config import ModelSpec, RunSpec, StudySpec, load_preset, load_study, with_overrides
from .errors import ActconvError
from .executors import run_study
from .store import Results, load_results
from .train import RunResult, train_run

__version__ = "0.1.0"
__all__ = ["ActconvError", "ModelSpec", "Results", "RunResult", "RunSpec", "StudySpec",
           "load_preset", "load_results", "load_study", "run_study", "train_run", "with_overrides"]
