"""One run: the training loop on one screen, returning every batch and epoch it saw."""
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import data as datasets
from . import diagnostics
from .config import RunSpec
from .models import build_for
from .seeding import generator, set_seed, set_threads
from .store import RunResult

# Test-set evaluation batch per model kind, measured on the 2-core reference CPU: bigger
# is not better there (TinyVGG(16) was fastest near 64 images per batch).
EVAL_BATCH = {"mlp": 1000, "tinyvgg": 64}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def environment(spec: RunSpec) -> dict:
    """What decides bitwise reproducibility besides the config."""
    return {"torch_version": str(torch.__version__),  # a str: torch.TorchVersion unpickles only with torch
            "device": spec.device, "dtype": spec.dtype,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if spec.device == "cuda" else None}


def make_optimizer(spec: RunSpec, params):
    """SGD (lr, momentum, weight decay) or Adam."""
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def prepare(spec: RunSpec, data: datasets.Data):
    """Seeded subset on the device, fresh model and optimizer: identical for every engine."""
    set_threads(spec.threads)
    set_seed(spec.seed)
    device, dtype = torch.device(spec.device), DTYPES[spec.dtype]
    idx = datasets.subset_indices(data.train_y, spec.seed, spec.n_train, spec.stratify)
    x, y = data.train_x[idx].to(device, dtype), data.train_y[idx].to(device)
    torch.manual_seed(generator(spec.seed, "init").initial_seed())
    m = spec.model_spec
    model = build_for(m, spec.activation, data.input_shape, data.n_classes).to(device, dtype)
    if m.kind == "tinyvgg":  # channels_last halves TinyVGG's time on CPU
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y, model


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
    shuffle = generator(spec.seed, "shuffle")
    n, bs = spec.n_train, spec.batch_size
    steps = math.ceil(n / bs)  # the last batch is partial, as DataLoader's default
    diag = diagnostics.Recorder(spec, model, data) if spec.diagnostics else None  # probes epoch 0

    train_loss, train_acc = evaluate(model, x, y, eval_batch)
    test_loss, test_acc = evaluate(model, test_x, test_y, eval_batch)
    epochs = [dict(epoch=0, train_loss=train_loss, train_accuracy=train_acc,
                   test_loss=test_loss, test_accuracy=test_acc)]
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
        bad = np.flatnonzero(~np.isfinite(epoch_losses))
        if len(bad):  # keep the batches up to and including the first non-finite one
            losses.append(epoch_losses[:bad[0] + 1])
            accs.append(epoch_accs[:bad[0] + 1])
            status, diverged_step = "diverged", (epoch - 1) * steps + int(bad[0]) + 1
            break
        losses.append(epoch_losses)
        accs.append(epoch_accs)
        test_loss, test_acc = evaluate(model, test_x, test_y, eval_batch)
        epochs.append(dict(epoch=epoch, train_loss=float(epoch_losses.mean(dtype=np.float64)),
                           train_accuracy=float(epoch_accs.mean(dtype=np.float64)),
                           test_loss=test_loss, test_accuracy=test_acc))
    loss_arr = np.concatenate(losses) if losses else np.empty(0, np.float32)
    step = np.arange(1, len(loss_arr) + 1)
    batches = dict(epoch=(step - 1) // steps + 1, step=step, loss=loss_arr.astype(np.float64),
                   accuracy=np.concatenate(accs).astype(np.float64) if accs else np.empty(0))
    return RunResult(spec, status, epochs, batches, diagnostics=diag.rows if diag else [],
                     diverged_step=diverged_step, wall_s=time.perf_counter() - start, env=environment(spec))
