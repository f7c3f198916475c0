"""A study's search: per cell (model, activation, n_train and the settings not searched), the
same budget of trials asked of Optuna, each trained on the tuning seeds through `run_study`
and scored by its mean final validation loss; then each cell's best on the confirm seeds
(and, with `reference`, each cell at the study's reference setting on the same seeds).

Every trial is a set of ordinary runs with their own ids in the same store. Trials are asked
in batches (every cell's trial k at once, so the executors get parallel work) and told in
cell order once the batch is stored, so the results never depend on which run finished
first. A search started again asks the same trials: the sampler is seeded from the study's
name, and every finished trial is found in the store (not trained again) and told in the
same order as before, which replays the sampler's history exactly.

The told history holds only what a stored, finished run fixes for good: a trial is told
its score once every run of it is done or diverged (a bad run scores inf, the worst), never
"failed". A failure can be transient (a lost worker, memory), and a failed run is trained
again by the next call: had the first call told Optuna FAIL and gone on, its later trials
(and its confirm runs) would follow a history that the rerun, telling a number, no longer
has. So when a batch still has failed runs after `run_study`'s own retries, the search stops
before telling it: nothing of that batch is told, no later trial is asked, nothing is
confirmed, and the outcome says where (`stopped_at`). The same command again retries those
runs and then tells that batch as an uninterrupted search would: a search killed, or
stopped by failures, and resumed asks exactly the trials of one that never was. (A run that
fails every time holds its search there until its cause is fixed, rather than being scored.)
"""
import contextlib
import itertools
import math
import warnings
from dataclasses import dataclass, field, replace

from ..errors import StoreError
from ..study.config import Grid, StudySpec
from ..study.search import SearchSpec
from .queue import StudyOutcome, resolve_jobs, run_study
from .store import FINISHED, Store


@dataclass(frozen=True)
class Cell:
    """What a search tunes one setting for: a model, an activation, a size and the other settings."""
    model: str
    activation: str
    n_train: int
    train: tuple[tuple[str, object], ...] = ()  # the grid's settings, searched axes left out


@dataclass
class Trial:
    """One asked setting of one cell and how its runs scored on validation."""
    cell: Cell
    number: int
    params: dict
    run_ids: tuple[str, ...]
    value: float | None = None  # mean final val_loss (or minus val_accuracy); inf: a run went bad; None: a run unfinished


@dataclass
class SearchOutcome(StudyOutcome):
    """What one `run_search` call did: the study outcome summed over its batches, every trial
    told and each cell's best (the one confirmed)."""
    trials: list = field(default_factory=list)
    best: dict = field(default_factory=dict)  # Cell -> Trial
    stopped_at: int | None = None  # the first trial not told: a run of its batch failed (rerun to resume)


def cells(study: StudySpec) -> list[Cell]:
    """The study's cells in grid order: one per model, activation, n_train and value of each
    list axis that is not searched."""
    out = []
    axes = set(study.search.axes)
    for g in study.grids:
        t = {k: v for k, v in {**dict(study.train), **dict(g.train)}.items() if k not in axes}
        keys = sorted(t)
        for values in itertools.product(*(t[k] if isinstance(t[k], tuple) else (t[k],) for k in keys)):
            fixed = tuple(zip(keys, values))
            out += [Cell(m, a, n, fixed) for m in g.models for a in g.activations for n in g.n_train]
    return list(dict.fromkeys(out))


def distributions(search: SearchSpec) -> dict:
    """Optuna's distribution per searched axis."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    out = {}
    for axis, r in search.space:
        if r.kind == "list":
            out[axis] = CategoricalDistribution(r.values)
        elif r.kind == "int":
            out[axis] = IntDistribution(int(r.low), int(r.high))
        else:
            out[axis] = FloatDistribution(r.low, r.high, log=r.kind == "log")
    return out


def make_sampler(search: SearchSpec):
    """The seeded sampler. Every cell gets the same seed, so every activation is offered the
    same first trials (the random and qmc samplers: all of them)."""
    import optuna
    kinds = {"random": optuna.samplers.RandomSampler, "tpe": optuna.samplers.TPESampler,
             "qmc": optuna.samplers.QMCSampler}
    return kinds[search.sampler](seed=search.seed)


def _study(study: StudySpec, grids: list[Grid], perturb: bool) -> StudySpec:
    """A study of the given grids only: what run_study trains (siblings only where asked)."""
    return replace(study, grids=tuple(grids), train=(), **({} if perturb else {"perturb": ()}))


def _grid(cell: Cell, seeds, params: dict, evaluate: str = "every") -> Grid:
    # floats: an int(a,b) value of 1 and 1.0 would give other run ids
    train = {**dict(cell.train), **{k: float(v) for k, v in params.items()}}
    if evaluate != "every":  # left out at the default: the run ids of earlier searches stay
        train["evaluate"] = evaluate
    return Grid((cell.model,), (cell.activation,), tuple(seeds), (cell.n_train,), tuple(sorted(train.items())))


def run_search(study: StudySpec, out_dir, *, max_trials: int | None = None, **run_kwargs) -> SearchOutcome:
    """Search every cell of a study on its tuning seeds, then confirm each cell's best.

    Args:
        study: a study with a `search` (SearchSpec).
        out_dir: the output directory holding the store.
        max_trials: stop after this many trials per cell, unconfirmed (a budget for now;
            the same call with more asks the same first trials and trains only the rest).
        run_kwargs: passed to `run_study` (jobs, executor, progress, retries, ...).
    Returns:
        A SearchOutcome: counts summed over the batches, the trials told and each cell's best;
        where a batch ended with failed runs, `stopped_at` its first trial, nothing confirmed.
    """
    search = study.search
    outcome = SearchOutcome(str(out_dir), 0, 0, 0)

    def evaluate(batch: list[Trial]) -> None:
        grids = [_grid(t.cell, search.tune_seeds, t.params, search.tune_eval) for t in batch]
        for t, g in zip(batch, grids):
            t.run_ids = tuple(s.run_id for s in _study(study, [g], False).runs())
        _train(_study(study, grids, False), out_dir, outcome, run_kwargs)
        scores = _scores(out_dir, [i for t in batch for i in t.run_ids])
        for t in batch:
            t.value = _value([scores.get(i) for i in t.run_ids], search.select)

    n_trials = search.trials if max_trials is None else min(search.trials, max_trials)
    with contextlib.ExitStack() as stack:
        if run_kwargs.get("executor") == "ray":  # one Ray session for every batch, not a start per batch
            from . import ray_tasks
            stack.enter_context(ray_tasks.session(run_kwargs.get("ray_address"),
                                                  resolve_jobs(run_kwargs.get("jobs", 1))))
        todo = cells(study)
        outcome.trials = ask_and_tell(search, todo, evaluate, n_trials)
        if len(outcome.trials) < n_trials * len(todo):  # stopped on a batch with failed runs
            outcome.stopped_at = len(outcome.trials) // len(todo)
            return outcome
        outcome.best = best_trials(outcome.trials)
        if n_trials == search.trials:
            grids = [_grid(c, _confirm_seeds(study, c), t.params) for c, t in outcome.best.items()]
            if grids:
                _train(_study(study, grids, True), out_dir, outcome, run_kwargs)
            if search.reference:
                _train(_study(study, reference_grids(study), False), out_dir, outcome, run_kwargs)
    return outcome


def reference_setting(study: StudySpec) -> dict:
    """The searched axes at the study's reference setting: the notebook's lr (reference_lr),
    no momentum, no weight decay; an axis not searched keeps the grid's value."""
    ref = {"lr": study.reference_lr, "momentum": 0.0, "weight_decay": 0.0}
    return {a: ref[a] for a in study.search.axes}


def reference_grids(study: StudySpec) -> list[Grid]:
    """Every cell at the reference setting on the confirm seeds: ordinary runs, their own ids
    (the same ids as a confirm run where a cell chose the reference setting)."""
    params = reference_setting(study)
    return [_grid(c, _confirm_seeds(study, c), params) for c in cells(study)]


def _confirm_seeds(study: StudySpec, cell) -> tuple[int, ...]:
    """A cell's confirm seeds: its grid's own (TinyVGG on 10 in seed-fair), else the search's."""
    return study.confirm_seeds_of(cell.model, cell.activation, cell.n_train)


def ask_and_tell(search: SearchSpec, todo: list, evaluate, n_trials: int) -> list[Trial]:
    """Every cell's trials 0..n_trials-1, asked a batch at a time (the next `search.batch`
    trials of every cell), scored by `evaluate(batch)` (which sets each trial's value) and
    told in cell order, then trial order. A batch with a trial left unscored (None) is not
    told and ends the search: the trials told before it are returned."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = distributions(search)
    with warnings.catch_warnings():  # the qmc sampler is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        studies = {c: optuna.create_study(sampler=make_sampler(search), direction="minimize") for c in todo}
    out = []
    for first in range(0, n_trials, search.batch):
        numbers = range(first, min(first + search.batch, n_trials))
        asked = [(c, k, studies[c].ask(dists)) for c in todo for k in numbers]
        batch = [Trial(c, k, dict(t.params), ()) for c, k, t in asked]
        evaluate(batch)
        if any(t.value is None for t in batch):  # never told FAIL: a rerun would tell a number
            break
        for (c, _, asked_trial), t in zip(asked, batch):  # in cell and trial order, whatever finished first
            studies[c].tell(asked_trial, t.value)
        out += batch
    return sorted(out, key=lambda t: t.number)  # trial k of every cell, then k + 1, as batch 1 asks


def best_trials(trials: list[Trial]) -> dict:
    """Cell -> its trial with the lowest finite score (ties: the earlier trial)."""
    best = {}
    for t in trials:
        if t.value is not None and math.isfinite(t.value):
            if t.cell not in best or t.value < best[t.cell].value:
                best[t.cell] = t
    return best


def _train(sub: StudySpec, out_dir, outcome: SearchOutcome, run_kwargs) -> None:
    """Run one batch unless the store holds every run of it finished (a resumed search)."""
    specs = sub.runs()
    try:
        with Store(out_dir, create=False) as store:
            done = {i for i, s in store.statuses([s.run_id for s in specs]).items() if s in FINISHED}
    except StoreError:  # no store yet
        done = set()
    if all(s.run_id in done for s in specs):
        outcome.total += len(specs)
        outcome.skipped += len(specs)
        return
    o = run_study(sub, out_dir, **run_kwargs)
    outcome.total += o.total
    outcome.skipped += o.skipped
    outcome.executed += o.executed
    outcome.wall_s += o.wall_s
    outcome.failed = o.failed
    outcome.counts = o.counts


def _scores(out_dir, run_ids) -> dict:
    """run_id -> (status, final val_loss, final train_loss, epoch-0 train_loss, final val_accuracy)."""
    with Store(out_dir, create=False) as store:
        marks = ",".join("?" * len(run_ids))
        rows = store.conn.execute(f"""
            SELECT r.run_id, r.status,
              (SELECT val_loss FROM epochs e WHERE e.run_id = r.run_id ORDER BY epoch DESC LIMIT 1),
              (SELECT train_loss FROM epochs e WHERE e.run_id = r.run_id ORDER BY epoch DESC LIMIT 1),
              (SELECT train_loss FROM epochs e WHERE e.run_id = r.run_id AND epoch = 0),
              (SELECT val_accuracy FROM epochs e WHERE e.run_id = r.run_id ORDER BY epoch DESC LIMIT 1)
            FROM runs r WHERE r.run_id IN ({marks})""", list(run_ids)).fetchall()
    return {r[0]: r[1:] for r in rows}


def _value(scores, select: str = "val_loss") -> float | None:
    """A trial's score, lower better: mean final val_loss over its seeds (or minus the mean
    val_accuracy); inf where a run diverged, ended non-finite or above its start (the
    analysis' `bad`: the worst, never chosen); None where a run failed or is missing (the
    search stops before telling its batch)."""
    if any(s is None or s[0] not in FINISHED for s in scores):
        return None
    vals = []
    for status, loss, last, start, accuracy in scores:
        val = loss if select == "val_loss" else None if accuracy is None else -accuracy
        bad = status != "done" or last is None or not math.isfinite(last) or (
            start is not None and last > start)
        if bad or val is None or not math.isfinite(val):
            return math.inf
        vals.append(val)
    return sum(vals) / len(vals)
