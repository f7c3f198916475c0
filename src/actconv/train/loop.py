"""One run: the training loop on one screen, returning every batch and epoch it saw."""
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..study import data as datasets
from ..study.activations import use as use_activation
from ..study.config import RunSpec
from ..study.models import build_for, facts
from ..study.streams import generator
from . import recorder
from .perturb import flip_init_bit
from .result import RunResult
from .seeding import set_seed, set_threads

# Test-set evaluation batch per model kind, measured on the 2-core reference CPU: bigger
# is not better there (TinyVGG(16) was fastest near 64 images per batch).
EVAL_BATCH = {"mlp": 1000, "tinyvgg": 64}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def environment(spec: RunSpec, model=None) -> dict:
    """What decides bitwise reproducibility besides the config, and what the built model was
    (parameters, activation modules: the runs table shows them)."""
    return {"torch_version": str(torch.__version__),  # a str: torch.TorchVersion unpickles only with torch
            "device": spec.device, "dtype": spec.dtype,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if spec.device == "cuda" else None,
            **(facts(model, spec.activation) if model is not None else {})}


def make_optimizer(spec: RunSpec, params):
    """SGD (lr, momentum, weight decay) or Adam."""
    if spec.optimizer == "sgd":  # foreach: one call a step for all tensors, the same kernels (bitwise; tested)
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
                               foreach=True)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def prepare(spec: RunSpec, data: datasets.Data):
    """Seeded subset on the device, fresh model and optimizer: identical for every engine."""
    set_threads(spec.threads)
    set_seed(spec.seed)
    device, dtype = torch.device(spec.device), DTYPES[spec.dtype]
    idx = datasets.subset_indices(data.train_y, spec.seed, spec.n_train, spec.stratify, spec.validation)
    x, y = data.train_x[idx].to(device, dtype), data.train_y[idx].to(device)
    torch.manual_seed(generator(spec.seed, "init").initial_seed())
    m = spec.model_spec
    use_activation(spec.activation, spec.activation_def)  # a user's activation, known to this worker
    model = build_for(m, spec.activation, data.input_shape, data.n_classes).to(device, dtype)
    if spec.perturb == "init":  # a sibling: one weight's lowest mantissa bit flipped
        flip_init_bit(model, spec.seed, spec.replica)
    if m.kind == "tinyvgg":  # channels_last halves TinyVGG's time on CPU
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y, model


def validation_set(spec: RunSpec, data: datasets.Data):
    """The seed's held-out validation images and labels on the device; None without a split."""
    if not spec.validation:
        return None
    idx = datasets.validation_indices(data.train_y, spec.seed, spec.validation, spec.stratify)
    x = data.train_x[idx].to(spec.device, DTYPES[spec.dtype])
    if spec.model_spec.kind == "tinyvgg":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, data.train_y[idx].to(spec.device)


def validate(model, val, batch: int) -> dict:
    """val_loss and val_accuracy on the validation split; none without one (stored as NULL)."""
    if val is None:
        return {}
    loss, acc = evaluate(model, *val, batch)
    return {"val_loss": loss, "val_accuracy": acc}


def shuffle_generator(spec: RunSpec) -> torch.Generator:
    """The run's batch-order stream; an `order` sibling draws from its own further stream."""
    return generator(spec.seed, "shuffle", spec.replica if spec.perturb == "order" else 0)


@torch.inference_mode()
def evaluate(model, x, y, batch: int) -> tuple[float, float]:
    """Mean loss and accuracy over a whole set, in evaluation mode."""
    was_training = model.training
    model.eval()
    logits = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
    model.train(was_training)
    loss = F.cross_entropy(logits.float(), y).item()
    # Fraction correct (torchmetrics' micro accuracy, without its import: 260 MB and seconds per worker).
    acc = (logits.argmax(1) == y).float().mean().item()
    return loss, acc


def until_nonfinite(losses: np.ndarray, accs: np.ndarray, epoch: int, steps: int):
    """An epoch's batch losses and accuracies up to and including the first non-finite loss,
    and the step where the run diverged there (None while every loss is finite)."""
    bad = np.flatnonzero(~np.isfinite(losses))
    if not len(bad):
        return losses, accs, None
    return losses[:bad[0] + 1], accs[:bad[0] + 1], (epoch - 1) * steps + int(bad[0]) + 1


def scored(spec: RunSpec, epoch: int) -> bool:
    """Whether the test set and validation split are scored after this epoch (0: before
    training): always after the last; `evaluate="last"` skips the others, about half of a
    small network's time (the training subset is scored at epoch 0 either way: the start)."""
    return spec.evaluate == "every" or epoch == spec.epochs


def epoch_row(epoch: int, losses: np.ndarray, accs: np.ndarray, test_loss: float, test_acc: float) -> dict:
    """An epoch's row: the mean of its batch losses and accuracies (float64), its test metrics."""
    return dict(epoch=epoch, train_loss=float(losses.mean(dtype=np.float64)),
                train_accuracy=float(accs.mean(dtype=np.float64)), test_loss=test_loss, test_accuracy=test_acc)


def batch_table(losses: list[np.ndarray], accs: list[np.ndarray], steps: int) -> dict:
    """Every batch of a run as columns (epoch, step, loss, accuracy) from its epochs' arrays."""
    loss_arr = np.concatenate(losses) if losses else np.empty(0, np.float32)
    step = np.arange(1, len(loss_arr) + 1)
    return dict(epoch=(step - 1) // steps + 1, step=step, loss=loss_arr.astype(np.float64),
                accuracy=np.concatenate(accs).astype(np.float64) if accs else np.empty(0))


def train_run(spec: RunSpec, data: datasets.Data, progress: bool = False) -> RunResult:
    """Train one run from its own seed; NaN or infinite loss ends it as 'diverged'."""
    start = time.perf_counter()
    x, y, model = prepare(spec, data)
    test_x = data.test_x.to(spec.device, DTYPES[spec.dtype])
    if spec.model_spec.kind == "tinyvgg":
        test_x = test_x.contiguous(memory_format=torch.channels_last)
    test_y = data.test_y.to(spec.device)
    eval_batch = EVAL_BATCH.get(spec.model_spec.kind, 64)  # a user's model: as the convolutional one
    optimizer = make_optimizer(spec, model.parameters())
    shuffle = shuffle_generator(spec)
    n, bs = spec.n_train, spec.batch_size
    steps = math.ceil(n / bs)  # the last batch is partial, as DataLoader's default
    diag = recorder.Recorder(spec, model, data) if spec.diagnostics else None  # probes epoch 0
    val = validation_set(spec, data)

    train_loss, train_acc = evaluate(model, x, y, eval_batch)  # the start, whatever is scored
    test_loss, test_acc = evaluate(model, test_x, test_y, eval_batch) if scored(spec, 0) else (None, None)
    epochs = [dict(epoch=0, train_loss=train_loss, train_accuracy=train_acc, test_loss=test_loss,
                   test_accuracy=test_acc, **(validate(model, val, eval_batch) if scored(spec, 0) else {}))]
    losses, accs = [], []
    status, diverged_step = "done", None
    for epoch in tqdm(range(1, spec.epochs + 1), desc=f"{spec.model}/{spec.activation}",
                      leave=False, disable=not progress, delay=2):
        order = torch.randperm(n, generator=shuffle).to(spec.device)
        # Kept on the device and copied out once per epoch: no host sync per step.
        loss_buf = torch.empty(steps, device=spec.device)
        acc_buf = torch.empty(steps, device=spec.device)
        for b in range(steps):
            idx = order[b * bs:(b + 1) * bs]
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if diag:
                diag.after_backward(b)
            optimizer.step()
            loss_buf[b] = loss.detach()
            acc_buf[b] = (logits.detach().argmax(1) == y[idx]).float().mean()
        epoch_losses, epoch_accs = loss_buf.cpu().numpy(), acc_buf.cpu().numpy()
        if diag:
            diag.end_epoch(epoch)
        epoch_losses, epoch_accs, diverged_step = until_nonfinite(epoch_losses, epoch_accs, epoch, steps)
        losses.append(epoch_losses)
        accs.append(epoch_accs)
        if diverged_step is not None:
            status = "diverged"
            break
        if not scored(spec, epoch):
            epochs.append(epoch_row(epoch, epoch_losses, epoch_accs, None, None))
            continue
        test_loss, test_acc = evaluate(model, test_x, test_y, eval_batch)
        epochs.append({**epoch_row(epoch, epoch_losses, epoch_accs, test_loss, test_acc),
                       **validate(model, val, eval_batch)})
    batches = batch_table(losses, accs, steps)
    return RunResult(spec, status, epochs, batches, diagnostics=diag.rows if diag else [],
                     diverged_step=diverged_step, wall_s=time.perf_counter() - start, env=environment(spec, model))
