"""What running one work unit needs, wherever it runs (the driver, a pool worker, a Ray task,
`actconv verify`): the data to load, the unit trained, a failure caught, the heap handed back."""
import ctypes
import os
import signal
import traceback
from dataclasses import dataclass

from ..study.config import RunSpec
from ..train.result import RunResult

# torch, the data and the training loop are imported where a unit is trained, never at the
# top: a driver that hands its units to workers holds none of them (~400 MB a process).

FAULT_ENV = "ACTCONV_FAULT"  # test-only fault injection: see _inject_fault


@dataclass(frozen=True)
class DataArgs:
    """How a worker loads the study's data (once per process)."""
    dataset: str
    data_dir: str | None = None
    download: bool = False
    normalize: str = "none"

    def load(self):
        from ..study import data as datasets
        return datasets.load(self.dataset, self.data_dir, self.download, self.normalize)


@dataclass(frozen=True)
class Options:
    """What a backend may use of `run_study`'s arguments."""
    jobs: int = 1                  # worker processes (Ray: CPUs of a local Ray it starts)
    progress: bool = False         # a progress bar per run (serial only: workers stay quiet)
    ray_address: str | None = None  # an existing Ray cluster; None starts a local one


@dataclass(frozen=True)
class Lost:
    """A unit whose worker died before it returned.

    alone: it was the only unit on the workers that died, so it is the one to blame.
    """
    error: str
    alone: bool = True


def probe(data_args: DataArgs, cuda: bool, models=()) -> tuple[int, bool, tuple, int]:
    """The data loads (its pool size, input shape and class count), every model takes it
    (models: (name, ModelSpec, an activation, engine, its definition)) and, if asked, torch
    sees a CUDA device."""
    from ..study.activations import use
    from ..errors import ConfigError
    from ..study.models import check_fits
    data = data_args.load()
    for name, spec, activation, engine, definition in models:
        use(activation, definition)  # a user's activation, known to this process
        model = check_fits(name, spec, activation, data_args.dataset, data.input_shape, data.n_classes)
        if engine == "ensemble":  # the ensemble stacks only the layers it knows
            from ..train.ensemble import Stack
            try:
                Stack([model])
            except ConfigError as e:
                raise ConfigError(f"model {name}: {e}") from None
    if not cuda:
        return data.pool_size, False, data.input_shape, data.n_classes
    import torch
    return data.pool_size, torch.cuda.is_available(), data.input_shape, data.n_classes


def execute_unit(unit: list[RunSpec], data_args: DataArgs | None, progress: bool = False,
                 data=None, faults: str | None = None) -> list[RunResult]:
    """Train one work unit; a run that raises comes back as 'failed' with its error.

    faults: the driver's ACTCONV_FAULT (test-only), passed along because a worker's own
    environment is the one its pool or Ray started it with.
    """
    from ..train.seeding import set_threads
    faults = os.environ.get(FAULT_ENV, "") if faults is None else faults
    set_threads(unit[0].threads)
    data = data if data is not None else data_args.load()
    try:
        return _train_unit(unit, data, progress, faults)
    finally:
        _trim_heap()


def _train_unit(unit: list[RunSpec], data, progress: bool, faults: str) -> list[RunResult]:
    from ..train.loop import train_run
    if unit[0].engine == "ensemble":
        from ..train.ensemble import train_ensemble
        try:
            for spec in unit:
                _inject_fault(spec, faults)
            return train_ensemble(unit, data)
        except Exception as e:  # noqa: BLE001 -- one unit's failure must not end the study
            return [_failed(s, e) for s in unit]
    results = []
    for spec in unit:
        try:
            _inject_fault(spec, faults)
            results.append(train_run(spec, data, progress=progress))
        except Exception as e:  # noqa: BLE001 -- recorded as the run's error, the study goes on
            results.append(_failed(spec, e))
    return results


def _trim_heap() -> None:
    """Hand the heap's free pages back to the system after a unit: a long-lived worker
    otherwise keeps the high-water mark of its largest run (~80 MB after a TinyVGG)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _inject_fault(spec: RunSpec, faults: str) -> None:
    """Test-only: ACTCONV_FAULT="raise:RUN_ID,kill:RUN_ID,kill-once:RUN_ID:MARKER" fails these runs.

    raise: the run raises; kill: its process gets SIGKILL; a "-once" kind acts only while the
    marker file does not exist yet (it creates it), so the retry succeeds.
    """
    for item in filter(None, faults.split(",")):
        kind, _, rest = item.partition(":")
        target, _, marker = rest.partition(":")
        if target != spec.run_id:
            continue
        if kind.endswith("-once"):
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            kind = kind[:-len("-once")]
        if kind == "raise":
            raise RuntimeError(f"fault injected by {FAULT_ENV}")
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)


def _failed(spec: RunSpec, e: BaseException) -> RunResult:
    where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    at = f" (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
    return RunResult(spec, "failed", error=f"{type(e).__name__}: {e}{at}")
