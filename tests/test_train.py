"""The loop: epoch 0, batches and epochs recorded, reproducible, divergence caught."""
import math

import numpy as np
import pytest
import torch

from actconv.study.config import BUILTIN_MODELS, ModelSpec, RunSpec
from actconv.train.loop import train_run


def spec(**kw):
    base = dict(model="mlp", model_spec=ModelSpec("mlp", hidden_units=16), activation="relu",
                seed=3, n_train=100, epochs=2)
    return RunSpec(**{**base, **kw})


def test_records_epoch_zero_batches_and_epochs(mnist5k):
    r = train_run(spec(), mnist5k)
    assert r.status == "done"
    assert [e["epoch"] for e in r.epochs] == [0, 1, 2]
    steps = math.ceil(100 / 32)  # last batch partial, as DataLoader
    assert r.batches["step"].tolist() == list(range(1, 2 * steps + 1))
    assert r.batches["epoch"].tolist() == [1] * steps + [2] * steps
    # the epoch's train loss is the mean of its batch losses, as the original computed it
    assert r.epochs[1]["train_loss"] == pytest.approx(r.batches["loss"][:steps].mean(), rel=1e-6)
    assert abs(r.epochs[0]["test_loss"] - math.log(10)) < 0.2  # untrained: near chance
    assert r.env["threads"] == 1 and r.env["torch_version"] == torch.__version__


def test_same_seed_is_bitwise_identical_and_other_seed_differs(mnist5k):
    a, b = train_run(spec(), mnist5k), train_run(spec(), mnist5k)
    assert np.array_equal(a.batches["loss"], b.batches["loss"])
    assert a.epochs == b.epochs
    c = train_run(spec(seed=4), mnist5k)
    assert not np.array_equal(a.batches["loss"], c.batches["loss"])


def test_run_does_not_depend_on_runs_before_it(mnist5k):
    first = train_run(spec(activation="selu"), mnist5k)
    train_run(spec(activation="prelu", seed=99), mnist5k)  # would move a global RNG
    again = train_run(spec(activation="selu"), mnist5k)
    assert np.array_equal(first.batches["loss"], again.batches["loss"])


def test_learning_happens_on_real_mnist(mnist5k):
    r = train_run(spec(n_train=600, epochs=3, model_spec=BUILTIN_MODELS["mlp"]), mnist5k)
    assert r.epochs[-1]["test_accuracy"] > 0.7 > r.epochs[0]["test_accuracy"]


def test_sigmoid_on_logits_cannot_go_below_its_floor(mnist5k):
    r = train_run(spec(model_spec=BUILTIN_MODELS["mlp_original"], activation="sigmoid"), mnist5k)
    # logits in (0, 1): cross-entropy >= log(1 + 9 e^-1) - 1 + ... >= 1.46 on 10 classes
    floor = -math.log(math.e / (math.e + 9))
    assert floor == pytest.approx(1.4612, abs=1e-3)
    assert r.batches["loss"].min() >= floor - 1e-6


def test_divergence_is_recorded_with_its_step(mnist5k):
    r = train_run(spec(lr=1e6, activation="leaky_relu", epochs=3), mnist5k)
    assert r.status == "diverged"
    assert r.diverged_step == len(r.batches["loss"])
    assert not np.isfinite(r.batches["loss"][-1]) and np.isfinite(r.batches["loss"][:-1]).all()


def test_tinyvgg_and_adam(mnist5k):
    r = train_run(spec(model="tinyvgg", model_spec=ModelSpec("tinyvgg", hidden_units=4),
                       optimizer="adam", lr=1e-3, epochs=1, n_train=64), mnist5k)
    assert r.status == "done" and len(r.batches["loss"]) == 2


def test_test_accuracy_equals_torchmetrics(mnist5k):
    from torchmetrics.functional.classification import multiclass_accuracy

    from actconv.study.models import build_model
    from actconv.train.loop import evaluate
    torch.manual_seed(0)
    model = build_model("mlp", "relu", hidden_units=16)
    _, acc = evaluate(model, mnist5k.test_x, mnist5k.test_y, 64)
    with torch.no_grad():
        logits = model(mnist5k.test_x)
    want = multiclass_accuracy(logits, mnist5k.test_y, num_classes=10, average="micro").item()
    assert acc == pytest.approx(want, abs=1e-7) and 0 < acc < 1
