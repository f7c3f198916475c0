"""Re-execute stored runs from their configs and compare every recorded loss bitwise."""
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..errors import ConfigError
from ..study.config import RunSpec
from .execution import DataArgs, execute_unit
from .store import FINISHED, Store

EPOCH_COLUMNS = ["train_loss", "train_accuracy", "test_loss", "test_accuracy"]


@dataclass(frozen=True)
class Check:
    """One run re-executed: whether every number matched, and the first that did not."""
    run_id: str
    label: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'DIFF'} {self.run_id} {self.label}: {self.detail}"


def verify_runs(out_dir, run_ids=None, n: int = 5, seed: int = 0, data_dir=None,
                download: bool = False) -> Iterator[Check]:
    """Re-execute stored runs and compare their batch and epoch numbers bitwise, one at a time.

    Args:
        out_dir: output directory holding the store.
        run_ids: runs to check; None draws a random sample of the finished runs.
        n: sample size when run_ids is None (0: every finished run).
        seed: seed of the sample.
        data_dir, download: where the runs' dataset is, as for `actconv run`.
    Returns:
        An iterator of Check, one per run, yielded as each finishes (bad input raises first).
    """
    with Store(out_dir, create=False) as store:
        rows = dict(store.conn.execute(
            f"SELECT run_id, status FROM runs WHERE status IN ({', '.join('?' * len(FINISHED))})",
            FINISHED).fetchall())
        known = dict(store.conn.execute("SELECT run_id, status FROM runs").fetchall())
    if run_ids:
        for rid in run_ids:
            if rid not in known:
                raise ConfigError(f"no run {rid!r} in {out_dir} (see `actconv status {out_dir}`)")
            if rid not in rows:
                raise ConfigError(f"run {rid} is {known[rid]}, not finished: nothing to compare")
        chosen = list(dict.fromkeys(run_ids))
    else:
        if n < 0:
            raise ConfigError(f"--runs must be zero or more, got {n}")
        if not rows:
            raise ConfigError(f"{out_dir} holds no finished runs to verify")
        ids = sorted(rows)
        chosen = ids if n == 0 or n >= len(ids) else random.Random(seed).sample(ids, n)
    return _checks(out_dir, chosen, data_dir, download)


def _checks(out_dir, run_ids, data_dir, download) -> Iterator[Check]:
    with Store(out_dir, create=False) as store:
        for rid in run_ids:
            yield _check(store, rid, data_dir, download)


def _check(store: Store, rid: str, data_dir, download) -> Check:
    status, config_json, torch_version, threads = store.conn.execute(
        "SELECT status, config_json, torch_version, threads FROM runs WHERE run_id=?", (rid,)).fetchone()
    spec = RunSpec.from_json(config_json)
    label = f"{spec.model}/{spec.activation} seed {spec.seed} n_train {spec.n_train}"
    if spec.run_id != rid:
        return Check(rid, label, False, "its stored config hashes to another run id: the row was edited")
    data_args = DataArgs(spec.dataset, str(data_dir) if data_dir else None, download, spec.normalize)
    result = execute_unit([spec], data_args)[0]
    env = ""
    if torch_version and torch_version != torch.__version__:
        env = f" (stored with torch {torch_version}, this is torch {torch.__version__})"
    if result.status == "failed":
        return Check(rid, label, False, f"failed when run again: {result.error}{env}")
    if result.status != status:
        return Check(rid, label, False, f"stored as {status}, {result.status} when run again{env}")
    stored = store.conn.execute("SELECT epoch, step, loss, accuracy FROM batches WHERE run_id=? ORDER BY step",
                                (rid,)).fetchall()
    b = result.batches
    if len(stored) != len(b["step"]):
        return Check(rid, label, False, f"{len(stored)} batches stored, {len(b['step'])} when run again{env}")
    for column, i in (("loss", 2), ("accuracy", 3)):
        old = _floats(r[i] for r in stored)
        at = _first_difference(old, np.asarray(b[column], np.float64))
        if at is not None:
            return Check(rid, label, False, f"first difference at step {stored[at][1]} (epoch {stored[at][0]}): "
                         f"batch {column} stored {old[at]!r}, {float(b[column][at])!r} now{env}")
    epochs = store.conn.execute(f"SELECT epoch, {', '.join(EPOCH_COLUMNS)} FROM epochs WHERE run_id=? "
                                f"ORDER BY epoch", (rid,)).fetchall()
    if len(epochs) != len(result.epochs):
        return Check(rid, label, False, f"{len(epochs)} epochs stored, {len(result.epochs)} when run again{env}")
    for i, column in enumerate(EPOCH_COLUMNS, start=1):
        old = _floats(r[i] for r in epochs)
        new = _floats(e[column] for e in result.epochs)
        at = _first_difference(old, new)
        if at is not None:
            return Check(rid, label, False, f"first difference at epoch {epochs[at][0]}: {column} stored "
                         f"{old[at]!r}, {new[at]!r} now{env}")
    return Check(rid, label, True, f"{len(stored)} batch losses and {len(epochs)} epochs match bitwise{env}")


def _floats(values) -> np.ndarray:
    """float64 array; SQLite stores NaN as NULL, so None reads back as NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _first_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    """Index of the first element whose bits differ (every NaN counts as one NaN)."""
    a, b = np.where(np.isnan(a), np.nan, a), np.where(np.isnan(b), np.nan, b)
    differ = np.flatnonzero(a.view(np.uint64) != b.view(np.uint64))
    return int(differ[0]) if len(differ) else None
