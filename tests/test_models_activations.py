"""Pinned shapes and parameter counts; fresh activations; init schemes."""
import math

import pytest
import torch
from torch import nn

from actconv.study import activations as acts
from actconv.errors import ConfigError
from actconv.study.models import build_model, count_parameters


def test_original_mlp_shape_and_parameters():
    model = build_model("mlp", "relu", hidden_units=64, activate_logits=True)
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    assert count_parameters(model) == 784 * 64 + 64 + 64 * 10 + 10 == 50890
    assert isinstance(model[-1], nn.ReLU)  # the activation on the logits, as the original


def test_linear_logits_mlp_ends_in_linear():
    model = build_model("mlp", "sigmoid", hidden_units=64)
    assert isinstance(model[-1], nn.Linear)


def test_deep_mlp_with_batchnorm():
    model = build_model("mlp", "relu", hidden_units=128, hidden_layers=8, batchnorm=True)
    assert sum(isinstance(m, nn.Linear) for m in model) == 9
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model) == 8
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_tinyvgg_shape_and_parameters():
    model = build_model("tinyvgg", "relu", hidden_units=64)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    convs = 1 * 64 * 9 + 64 + 3 * (64 * 64 * 9 + 64)
    assert count_parameters(model) == convs + 64 * 7 * 7 * 10 + 10 == 142794
    assert count_parameters(build_model("tinyvgg", "relu", hidden_units=10)) == 100 + 3 * 910 + 4910


def test_prelu_is_fresh_per_layer_and_per_model():
    a = build_model("mlp", "prelu", activate_logits=True)
    b = build_model("mlp", "prelu", activate_logits=True)
    prelus = [m for m in list(a) + list(b) if isinstance(m, nn.PReLU)]
    assert len(prelus) == 4 and len({id(p.weight) for p in prelus}) == 4


def test_families_expand_in_order_without_repeats():
    got = acts.expand(["relu_family", "modern_family", "sigmoid_tanh_family"])
    assert len(got) == 21 and set(got) == set(acts.ACTIVATIONS)
    assert acts.expand(["common_activations"]) == acts.FAMILIES["common_activations"]


def test_unknown_activation_lists_choices():
    with pytest.raises(ConfigError, match="unknown activation 'swishy'.*relu.*common_activations"):
        acts.expand(["swishy"])


def test_auto_init_lecun_for_selu():
    torch.manual_seed(0)
    model = build_model("mlp", "selu", init="auto", hidden_units=512)
    w = model[1].weight
    assert abs(w.std().item() - 1 / math.sqrt(784)) < 0.002
    assert torch.all(model[1].bias == 0)


def test_uniform_fan_in_bound():
    """U[-1/sqrt(n), 1/sqrt(n)] with zero biases. PyTorch's own default draws the weights from
    the same distribution (kaiming_uniform, a = sqrt(5)) but the biases uniform too, so the
    zero biases tell the scheme was applied; the spread checks it is uniform over the bound."""
    model = build_model("mlp", "sigmoid", init="uniform_fan_in", hidden_units=32)
    w, bound = model[1].weight, 1 / math.sqrt(784)
    assert w.abs().max().item() <= bound
    assert model[1].bias.abs().max().item() == 0 and model[3].bias.abs().max().item() == 0
    # uniform on [-b, b]: standard deviation b / sqrt(3); 25,088 draws pin it within 2%
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_config_names_the_registries_it_validates_against():
    # config keeps the names so that a driver validates a study without importing torch
    from actconv.study import config
    from actconv.study import data
    from actconv.study import models
    assert config.MODELS == list(models.MODELS)
    assert config.DATASETS == list(data.DATASETS)
    assert all(build_model("mlp", "relu", init=i) is not None for i in config.INITS)
