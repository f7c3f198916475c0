"""A store's results in other tools: the long tables as CSV or Parquet, every run in TensorBoard or MLflow."""
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ActconvError

TABLES = ("runs", "epochs", "batches", "diagnostics")
# A pending or running run has nothing final yet; a failed one still has its config to show.
EXPORTED = ("done", "diverged", "failed")
# Named in a run's name beside its condition; every other setting that varies names the condition.
NAMED = ("model", "activation", "seed", "n_train")
# Epoch-table columns that say which run and epoch a row is, not what it measured.
KEYS = {"run_id", "model", "activation", "seed", "n_train", "epoch"}
BATCH_LOSS = "batch/loss"
TAG_RUN_ID, TAG_STATUS, TAG_COMPLETE = "actconv_run_id", "actconv_status", "actconv_export_complete"
MLFLOW_CHUNK = 1000  # MLflow takes at most 1,000 metrics (and 100 params) in one log_batch


@dataclass(frozen=True)
class Format:
    """One export format: its writer, and the packages it needs with the extra that installs them."""
    write: Callable  # (results, out_dir, dest) -> where it went
    needs: tuple = ()
    extra: str = ""


def export(out_dir, fmt: str = "csv", dest=None, results=None, *, tracking_uri=None):
    """Write a store's results in one of FORMATS; return where they went.

    Args:
        out_dir: the study's output directory (holds the store).
        fmt: csv, parquet (the long tables), tensorboard (one run folder per run, with HParams)
            or mlflow (one experiment per study, one MLflow run per run).
        dest: the folder for csv and parquet (default DIR/export) and tensorboard (DIR/tensorboard).
        results: the long tables (`actconv.load_results(out_dir)` when None).
        tracking_uri: mlflow only; default sqlite:///DIR/mlflow.db (absolute).
    Returns:
        The folder written, or for mlflow the tracking URI.
    """
    if fmt not in FORMATS:
        raise ActconvError(f"unknown export format {fmt!r}; choose from: {', '.join(FORMATS)}")
    if fmt == "mlflow" and dest is not None:
        raise ActconvError("an MLflow export goes to --tracking-uri, not to a folder")
    if fmt != "mlflow" and tracking_uri is not None:
        raise ActconvError(f"--tracking-uri is for --format mlflow, not {fmt}")
    form = FORMATS[fmt]
    for module in form.needs:  # before the store is read: a missing package is the first thing to say
        try:
            __import__(module)
        except ImportError:
            raise ActconvError(f"{fmt} export needs the {module} package: "
                               f"pip install 'actconv[{form.extra}]'") from None
    if results is None:
        from ..run.store import load_results
        results = load_results(out_dir)
    if fmt == "mlflow":
        return form.write(results, out_dir, tracking_uri or f"sqlite:///{(Path(out_dir) / 'mlflow.db').resolve()}")
    default = "tensorboard" if fmt == "tensorboard" else "export"
    return form.write(results, out_dir, Path(dest) if dest is not None else Path(out_dir) / default)


def _tables(suffix):
    def write(results, out_dir, dest: Path) -> Path:
        """The long tables, one file each."""
        try:
            dest.mkdir(parents=True, exist_ok=True)
            for name in TABLES:
                df = getattr(results, name)
                path = dest / f"{name}.{suffix}"
                if suffix == "csv":
                    df.to_csv(path, index=False)
                else:
                    df.to_parquet(path, index=False)
        except OSError as e:
            raise ActconvError(f"cannot write the export into {dest}: {e.strerror}") from None
        return dest
    return write


# -- what every run is called and what it was -------------------------------------------------------

def run_configs(runs) -> dict:
    """{run_id: flat config} from each run's stored RunSpec JSON (model_spec.kind, lr, ...)."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            elif v is not None:
                out[prefix + k] = v if isinstance(v, (bool, int, float, str)) else json.dumps(v, sort_keys=True)
        return out
    return {rid: flat(json.loads(text)) for rid, text in zip(runs["run_id"], runs["config_json"])}


def _show(v) -> str:
    return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)


def run_names(runs, configs: dict) -> dict:
    """{run_id: "mlp lr=0.3 relu seed=1 n_train=600"}: the condition (the model and the settings
    that vary between its runs), then the activation, seed and training-set size."""
    names = {}
    for model, group in runs.groupby("model", sort=False):
        cfgs = [configs[r] for r in group["run_id"]]
        keys = sorted({k for c in cfgs for k in c} - set(NAMED))
        varying = [k for k in keys if len({json.dumps(c.get(k)) for c in cfgs}) > 1]
        for rid, c in zip(group["run_id"], cfgs):
            setting = [f"{k.rsplit('.', 1)[-1]}={_show(c.get(k))}" for k in varying]
            names[rid] = " ".join([str(model), *setting, str(c.get("activation")),
                                   f"seed={c.get('seed')}", f"n_train={c.get('n_train')}"])
    return names


def path_names(names: dict) -> dict:
    """{run_id: a safe, unique folder name}: letters, digits and ._=+,- only, at most 120 characters."""
    safe = {rid: re.sub(r"[^A-Za-z0-9._=+,-]+", "_", n).strip("._")[:120] or "run" for rid, n in names.items()}
    seen = {}
    for s in safe.values():
        seen[s] = seen.get(s, 0) + 1
    return {rid: s if seen[s] == 1 else f"{s}_{rid[:8]}" for rid, s in safe.items()}


def _exported(runs):
    return runs[runs["status"].isin(EXPORTED)]


def _seconds(value, default: float) -> float:
    """A stored time (None or NaN where the run never stored one) or the default."""
    return float(value) if value is not None and value == value else default


def _epoch_metrics(epochs) -> list:
    """Every numeric column of the epochs table that measures something (val_loss too, where stored)."""
    return [c for c in epochs.columns if c not in KEYS and epochs[c].dtype.kind in "fiu"]


# -- TensorBoard ----------------------------------------------------------------------------------

def _tensorboard(results, out_dir, dest: Path) -> Path:
    """One run folder per run: batch loss by step, epoch metrics by epoch, its config as HParams."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    configs = run_configs(results.runs)  # names from every run: they stay put as a study goes on
    folders = path_names(run_names(results.runs, configs))
    runs = _exported(results.runs)
    metrics = _epoch_metrics(results.epochs)
    epochs = dict(tuple(results.epochs.groupby("run_id")))
    batches = dict(tuple(results.batches.groupby("run_id")))
    now = time.time()

    def scalars(step, wall, values):
        return event_pb2.Event(wall_time=wall, step=int(step), summary=summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values]))

    def write(folder: Path, events):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("events.out.tfevents.*"):  # an earlier export of the same run
                old.unlink()
        except OSError as e:
            raise ActconvError(f"cannot write the export into {folder}: {e.strerror}") from None
        writer = EventFileWriter(str(folder), max_queue_size=1000)
        for event in events:
            writer.add_event(event)
        writer.close()

    # The experiment, once at the top: which hparams and metrics the HParams tab offers.
    values = {}
    for rid in runs["run_id"]:
        for k, v in configs[rid].items():
            values.setdefault(k, set()).add(v)
    tags = [BATCH_LOSS] + [f"epoch/{m}" for m in metrics]
    experiment = hp.hparams_config_pb([hp.HParam(k, _domain(hp, v)) for k, v in sorted(values.items())],
                                      [hp.Metric(t) for t in tags], time_created_secs=now)
    write(dest, [event_pb2.Event(wall_time=now, summary=experiment)])
    for r in runs.itertuples():
        wall = _seconds(r.started_at, now)
        events = [event_pb2.Event(wall_time=wall, summary=hp.hparams_pb(
            configs[r.run_id], trial_id=r.run_id, start_time_secs=wall))]
        if r.run_id in batches:
            b = batches[r.run_id]
            events += [scalars(s, wall, [(BATCH_LOSS, v)]) for s, v in zip(b["step"], b["loss"])]
        if r.run_id in epochs:
            e = epochs[r.run_id]
            events += [scalars(row[0], wall, [(f"epoch/{m}", v) for m, v in zip(metrics, row[1:]) if v == v])
                       for row in e[["epoch", *metrics]].itertuples(index=False)]
        write(dest / folders[r.run_id], events)
    return dest


def _domain(hp, values: set):
    """The values an hparam took, typed, so the HParams tab can filter on them; None where types mix."""
    kinds = {bool if isinstance(v, bool) else float if isinstance(v, (int, float)) else str for v in values}
    if len(kinds) != 1:
        return None
    kind = kinds.pop()
    return hp.Discrete(sorted(kind(v) for v in values))


# -- MLflow ----------------------------------------------------------------------------------------

def _mlflow(results, out_dir, tracking_uri: str) -> str:
    """One experiment per study, one MLflow run per run; runs exported before are kept, not added again."""
    from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:"):  # mlflow-skinny reaches SQL stores through these
        for module in ("sqlalchemy", "alembic"):
            try:
                __import__(module)
            except ImportError:
                raise ActconvError(f"mlflow export to {tracking_uri} needs the {module} package: "
                                   "pip install 'actconv[mlflow]'") from None
    configs = run_configs(results.runs)
    names = run_names(results.runs, configs)
    runs = _exported(results.runs)
    metrics = _epoch_metrics(results.epochs)
    epochs = dict(tuple(results.epochs.groupby("run_id")))
    batches = dict(tuple(results.batches.groupby("run_id")))
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        for study, group in runs.groupby(runs["study"].fillna("actconv"), sort=False):
            exp = _experiment(client, str(study), out_dir, tracking_uri)
            have, token = {}, None
            while True:  # every run of the experiment once, not one search per run
                page = client.search_runs([exp], run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                          page_token=token)
                have.update({m.data.tags.get(TAG_RUN_ID): m for m in page})
                token = page.token
                if not token:
                    break
            for r in group.itertuples():
                old = have.get(r.run_id)
                if old is not None:
                    if old.data.tags.get(TAG_COMPLETE) == "1" and old.data.tags.get(TAG_STATUS) == r.status:
                        continue
                    client.delete_run(old.info.run_id)  # cut short, or its run has changed since
                ms = int(_seconds(r.started_at, time.time()) * 1000)
                run = client.create_run(exp, start_time=ms, run_name=names[r.run_id],
                                        tags={TAG_RUN_ID: r.run_id, TAG_STATUS: r.status})
                rid = run.info.run_id
                params = [Param(k, str(v)) for k, v in sorted(configs[r.run_id].items())]
                for i in range(0, len(params), 100):
                    client.log_batch(rid, params=params[i:i + 100])
                values = []
                if r.run_id in batches:
                    b = batches[r.run_id]
                    values += [Metric(BATCH_LOSS, float(v), ms, int(s)) for s, v in zip(b["step"], b["loss"])]
                if r.run_id in epochs:
                    e = epochs[r.run_id]
                    values += [Metric(f"epoch/{m}", float(v), ms, int(row[0]))
                               for row in e[["epoch", *metrics]].itertuples(index=False)
                               for m, v in zip(metrics, row[1:]) if v == v]
                for i in range(0, len(values), MLFLOW_CHUNK):
                    client.log_batch(rid, metrics=values[i:i + MLFLOW_CHUNK])
                client.log_batch(rid, tags=[RunTag(TAG_COMPLETE, "1")])
                end = int(_seconds(r.finished_at, ms / 1000) * 1000)
                client.set_terminated(rid, RunStatus.to_string(RunStatus.FAILED if r.status == "failed"
                                                               else RunStatus.FINISHED), end_time=end)
    except MlflowException as e:
        raise ActconvError(f"MLflow export to {tracking_uri} failed: {e.message}") from None
    return tracking_uri


def _experiment(client, name: str, out_dir, tracking_uri: str) -> str:
    """The study's experiment, made (or restored) if need be; its artifacts beside the store, never in the cwd."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        where = (Path(out_dir).resolve() / "mlflow-artifacts").as_uri() if tracking_uri.startswith("sqlite:") else None
        return client.create_experiment(name, artifact_location=where)
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


FORMATS = {
    "csv": Format(_tables("csv")),
    "parquet": Format(_tables("parquet"), ("pyarrow",), "parquet"),
    "tensorboard": Format(_tensorboard, ("tensorboard",), "tensorboard"),
    "mlflow": Format(_mlflow, ("mlflow",), "mlflow"),
}
