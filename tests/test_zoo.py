"""The field's networks: timm models built with the study's activation (act_layer), torchvision
models with their activations swapped; counted, trained, stored and refused in one line."""
import sqlite3
import subprocess
import sys

import pytest
import timm
import torch
import torchvision
from torch import nn

from actconv.cli import main
from actconv.errors import ConfigError
from actconv.run.store import STORE_NAME
from actconv.study import config, models
from actconv.study import data as datasets
from actconv.study.config import RunSpec
from actconv.train.loop import train_run
from actconv.train.recorder import layers

RESNET10T = {"kind": "timm:resnet10t"}


def spec_of(table: dict) -> config.ModelSpec:
    return config.zoo_model_spec("test", table)


def tiny_data(shape=(3, 16, 16), n=24, classes=4) -> datasets.Data:
    g = torch.Generator().manual_seed(0)
    return datasets.Data("synthetic", torch.rand(n, *shape, generator=g), torch.arange(n) % classes,
                         torch.rand(8, *shape, generator=g), torch.arange(8) % classes, classes)


def run_spec(model_spec, activation: str, **kw) -> RunSpec:
    return RunSpec(model="net", model_spec=model_spec, activation=activation, seed=3, n_train=16,
                   epochs=1, batch_size=8, lr=0.05, dataset="synthetic", **kw)


def test_timm_builds_every_activation_fresh_from_the_study():
    # resnet10t: three in its deep stem, two in each of its four basic blocks
    model = models.build_for(spec_of(RESNET10T), "prelu", (1, 28, 28), 7)
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == 11 == models.count_activations(model, "prelu")
    assert len({id(m) for m in prelus}) == 11  # one module per layer, never shared
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())  # timm's default is gone
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 7)
    # a PReLU's slope is one parameter per module on top of the ReLU network's
    relu = models.build_for(spec_of(RESNET10T), "relu", (1, 28, 28), 7)
    assert models.count_parameters(model) == models.count_parameters(relu) + 11
    assert models.facts(model, "prelu") == {"parameters": models.count_parameters(model),
                                            "activation_modules": 11, "replaced_activations": None}


def test_torchvision_swaps_every_activation_module_and_adapts_the_input():
    spec = spec_of({"kind": "torchvision:resnet18"})
    model = models.build_for(spec, "silu", (1, 28, 28), 7)
    # resnet18: the stem's ReLU and one per basic block (8 blocks)
    assert model.actconv_replaced == ("ReLU x9",)
    assert models.count_activations(model, "silu") == 9
    assert not any(type(m) is nn.ReLU for m in model.modules())
    assert model.conv1.in_channels == 1 and model.fc.out_features == 7
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 7)
    # squeeze-excitation gates keep their sigmoid: they scale channels, they are not a layer's activation
    mobile = models.build_for(spec_of({"kind": "torchvision:mobilenet_v3_small"}), "elu", (3, 32, 32), 5)
    assert sum(type(m) is nn.ELU for m in mobile.modules()) == sum(
        int(r.split(" x")[1]) for r in mobile.actconv_replaced)
    assert any(type(m) is nn.Hardsigmoid for m in mobile.modules())
    assert {r.split(" x")[0] for r in mobile.actconv_replaced} == {"Hardswish", "ReLU"}


def test_the_run_id_holds_the_library_version_the_name_and_the_options():
    plain, wide = spec_of(RESNET10T), spec_of({**RESNET10T, "drop_rate": 0.1})
    assert plain.fingerprint == f"timm {timm.__version__}"
    assert spec_of({"kind": "torchvision:resnet18"}).fingerprint == f"torchvision {torchvision.__version__}"
    assert wide.options == (("drop_rate", 0.1),)
    assert spec_of({**RESNET10T, "pretrained": False}) == plain  # the default: the same runs
    ids = {run_spec(s, "relu").run_id for s in (plain, wide, spec_of({"kind": "timm:resnet14t"}))}
    assert len(ids) == 3
    assert timm.__version__ in run_spec(plain, "relu").to_json(identity=True)
    r = run_spec(wide, "relu")
    assert RunSpec.from_json(r.to_json()) == r  # the store's JSON gives the same spec back


def test_two_activations_give_different_losses_from_the_same_seed():
    data, spec = tiny_data(), spec_of(RESNET10T)
    relu, tanh = train_run(run_spec(spec, "relu"), data), train_run(run_spec(spec, "tanh"), data)
    again = train_run(run_spec(spec, "relu"), data)
    assert relu.status == tanh.status == "done"
    assert list(relu.batches["loss"]) == list(again.batches["loss"])  # the seed decides everything else
    assert relu.batches["loss"][0] != tanh.batches["loss"][0]
    assert relu.env["activation_modules"] == tanh.env["activation_modules"] == 11
    tv = spec_of({"kind": "torchvision:resnet18"})
    a, b = train_run(run_spec(tv, "relu"), data), train_run(run_spec(tv, "selu"), data)
    assert a.batches["loss"][0] != b.batches["loss"][0] and b.env["replaced_activations"] == "ReLU x9"


def test_auto_picks_the_loop_and_diagnostics_name_layers_by_module_path():
    assert config.resolve_engine("auto", "timm:resnet10t") == "loop"
    model = models.build_for(spec_of(RESNET10T), "relu", (3, 16, 16), 4)
    names = [n for n, _, _ in layers(model, by_path=True)]
    assert names[:4] == ["conv1.0", "conv1.3", "conv1.6", "layer1.0.conv1"] and names[-1] == "output"
    result = train_run(run_spec(spec_of(RESNET10T), "relu", diagnostics=True), tiny_data())
    recorded = {row[2] for row in result.diagnostics}
    assert {"conv1.0", "layer4.0.conv2", "output"} <= recorded


def test_a_zoo_network_trains_through_the_cli_and_the_store_lists_what_was_built(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["run", "--out", str(out), "--models", "timm:resnet10t,torchvision:resnet18", "--dataset", "digits",
            "--activations", "relu,elu", "--seeds", "1", "--n-train", "16", "--epochs", "1", "--jobs", "1",
            "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    with sqlite3.connect(out / STORE_NAME) as c:
        rows = c.execute("SELECT model, activation, engine, status, activation_modules, replaced_activations "
                         "FROM runs ORDER BY model, activation").fetchall()
    assert rows == [("timm:resnet10t", "elu", "loop", "done", 11, None),
                    ("timm:resnet10t", "relu", "loop", "done", 11, None),
                    ("torchvision:resnet18", "elu", "loop", "done", 9, "ReLU x9"),
                    ("torchvision:resnet18", "relu", "loop", "done", 9, "ReLU x9")]
    assert main(["report", str(out)]) == 0
    page = (out / "report" / "index.html").read_text()
    config_table = page[page.index("id='config'"):][:20000]
    assert "activation_modules" in config_table and "ReLU x9" in config_table
    assert str(models.count_parameters(models.build_for(spec_of(RESNET10T), "relu", (1, 8, 8), 10))) in config_table


def test_an_unknown_timm_model_exits_2_in_one_line_through_the_real_cli(tmp_path):
    p = subprocess.run([sys.executable, "-m", "actconv.cli", "run", "--out", str(tmp_path / "out"),
                        "--models", "timm:nonexistent", "--seeds", "1", "--n-train", "8", "--epochs", "1"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().count("\n") == 0 and "unknown timm model 'nonexistent'" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "out").exists()


BAD = {
    "pretrained": ('kind = "timm:resnet10t"\npretrained = true\n', "pretrained weights are not"),
    "no act_layer": ('kind = "timm:dla34"\n', "timm model 'dla34' does not take act_layer"),
    "reserved": ('kind = "timm:resnet10t"\nnum_classes = 3\n', "option num_classes is set by actconv"),
    "option": ('kind = "timm:resnet10t"\nwidth = 3\n', "refuses the options"),
    "list option": ('kind = "timm:resnet10t"\nlayers = [1, 2]\n', "option layers must be a string"),
    "torchvision name": ('kind = "torchvision:resnet_nope"\n', "unknown torchvision model 'resnet_nope'"),
    "weights": ('kind = "torchvision:resnet18"\nweights = "DEFAULT"\n', "option weights is set by actconv"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_zoo_input_is_one_line_exit_2_and_nothing_stored(case, tmp_path, capsys):
    table, message = BAD[case]
    (tmp_path / "s.toml").write_text(f'activations = ["relu"]\nseeds = [1]\nn_train = [8]\n[models.m]\n{table}')
    capsys.readouterr()
    assert main(["run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "out").exists()


def test_the_ensemble_refuses_a_zoo_network_in_one_line_before_the_store(tmp_path, capsys):
    capsys.readouterr()
    assert main(["run", "--out", str(tmp_path / "out"), "--models", "timm:resnet10t", "--engine", "ensemble",
                 "--dataset", "digits", "--activations", "relu", "--seeds", "1,2", "--n-train", "8",
                 "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "ensemble engine cannot run layer" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "out" / STORE_NAME).exists()


def test_zoo_kinds_validate_without_being_user_factories():
    with pytest.raises(ConfigError, match="unknown timm model"):
        config.with_overrides(config.load_preset("smoke"), models=["timm:nonexistent"])
    study = config.with_overrides(config.load_preset("smoke"), models=["timm:resnet10t"], hidden_units=8)
    assert dict(study.models)["timm:resnet10t"].hidden_units == 64  # its own architecture: flags leave it


def test_resnet20_is_he_et_als_cifar_network_with_a_fresh_activation_per_layer():
    model = models.build_model("resnet20", "prelu", input_shape=(3, 32, 32), n_classes=10)
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == 19 == len({id(m) for m in prelus})  # the stem's and two per block, 9 blocks
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 and [c.out_channels for c in convs[1::6]] == [16, 32, 64]  # option A: no 1x1
    relu = models.build_model("resnet20", "relu", input_shape=(3, 32, 32), n_classes=10)
    assert models.count_parameters(relu) == 269_722  # the paper's 0.27M
    assert models.count_parameters(model) == 269_722 + 19
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert models.build_model("resnet20", "relu", input_shape=(1, 8, 8), n_classes=3)(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    spec = config.BUILTIN_MODELS["resnet20"]
    data = tiny_data()
    a, b = train_run(run_spec(spec, "relu"), data), train_run(run_spec(spec, "elu"), data)
    assert a.batches["loss"][0] != b.batches["loss"][0] and a.env["activation_modules"] == 19
    assert config.resolve_engine("auto", "resnet20") == "loop"
    study = config.with_overrides(config.load_preset("smoke"), models=["resnet20"], hidden_units=8)
    assert dict(study.models)["resnet20"] == spec  # its widths are the paper's: the flag leaves it


def test_the_cifar_small_preset_runs_on_cifar_files(tmp_path, capsys):
    from test_user_data import write_cifar
    write_cifar(tmp_path / "data", per_batch=8, n_test=4)
    out = tmp_path / "out"
    assert main(["run", "--preset", "cifar-small", "--out", str(out), "--data-dir", str(tmp_path / "data"),
                 "--activations", "relu", "--seeds", "1", "--n-train", "16", "--epochs", "1", "--validation", "4",
                 "--jobs", "1", "--quiet"]) == 0, capsys.readouterr().err
    with sqlite3.connect(out / STORE_NAME) as c:
        assert c.execute("SELECT model, status, dataset, input_shape, activation_modules FROM runs "
                         "ORDER BY model").fetchall() == [
            ("resnet10t", "done", "torchvision:CIFAR10", "3x32x32", 11),
            ("resnet20", "done", "torchvision:CIFAR10", "3x32x32", 19)]


def applications(model, cls, shape) -> tuple[int, int]:
    """(modules of cls, their calls in one forward pass)."""
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules() if type(m) is cls]
    model.eval()(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return len(hooks), len(calls)


def test_the_readme_limit_of_the_swap_torchvision_resnet_reuses_its_relu_timm_does_not():
    tv = models.build_for(spec_of({"kind": "torchvision:resnet18"}), "silu", (3, 32, 32), 10)
    assert applications(tv, nn.SiLU, (3, 32, 32)) == (9, 17)
    tm = models.build_for(spec_of({"kind": "timm:resnet18"}), "prelu", (3, 32, 32), 10)
    assert applications(tm, nn.PReLU, (3, 32, 32)) == (17, 17)
    with pytest.raises(ConfigError, match="googlenet has no activation module to swap"):
        spec_of({"kind": "torchvision:googlenet"})  # its ReLUs are F.relu calls


def test_a_learned_activation_on_a_reused_module_is_refused_before_the_store(tmp_path, capsys):
    # resnet18 applies 8 of its 9 relu modules twice: a PReLU's slope would be shared there
    capsys.readouterr()
    assert main(["run", "--out", str(tmp_path / "out"), "--models", "torchvision:resnet18", "--dataset", "digits",
                 "--activations", "relu,prelu,elu", "--seeds", "1", "--n-train", "8", "--epochs", "1",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "torchvision:resnet18 applies 8 of its activation modules in more than one place" in err
    assert "prelu's parameters would be shared" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "out").exists()
    # the same network without reuse (mobilenet) takes it: a module per place
    mobile = models.build_for(spec_of({"kind": "torchvision:mobilenet_v3_small"}), "prelu", (3, 32, 32), 10)
    assert applications(mobile, nn.PReLU, (3, 32, 32)) == (33, 33)


def test_a_grid_may_name_a_network_without_a_table():
    study = config.study_from_dict({"name": "g", "grid": [{"models": ["timm:resnet10t", "resnet20"],
                                                           "activations": ["relu"], "seeds": [1], "n_train": [8]}]})
    assert dict(study.models)["timm:resnet10t"] == spec_of(RESNET10T)
    assert [r.model for r in study.runs()] == ["timm:resnet10t", "resnet20"]
    with pytest.raises(ConfigError, match="unknown timm model 'nope'"):
        config.study_from_dict({"name": "g", "grid": [{"models": ["timm:nope"]}]})


def test_in_place_layers_after_a_swapped_activation_do_not_break_the_backward_pass():
    # mobilenet_v3's classifier: Hardswish then Dropout(inplace=True); with a ReLU swapped in, the
    # dropout overwrote the output that ReLU's backward needs (found by a CLI run)
    spec = spec_of({"kind": "torchvision:mobilenet_v3_small"})
    model = models.build_for(spec, "relu", (3, 32, 32), 10)
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    result = train_run(run_spec(spec, "relu"), tiny_data((3, 32, 32)))
    assert result.status == "done", result.error


def test_activation_modules_counts_what_actconv_put_in_not_a_timm_networks_own():
    # timm's mobilenetv3 takes act_layer for its 19 blocks' activations; its squeeze-excitation
    # blocks keep their own 14 ReLUs, whatever the study's activation
    spec = spec_of({"kind": "timm:mobilenetv3_small_050"})
    relu, tanh = (models.build_for(spec, a, (3, 32, 32), 10) for a in ("relu", "tanh"))
    assert models.count_activations(relu, "relu") == models.count_activations(tanh, "tanh") == 19
    assert sum(type(m) is nn.ReLU for m in relu.modules()) == 33
    assert sum(type(m) is nn.ReLU for m in tanh.modules()) == 14


def test_a_network_the_meta_device_cannot_build_is_validated_on_the_cpu():
    # torchvision's regnet computes its widths from tensor values, which meta tensors do not hold
    assert spec_of({"kind": "torchvision:regnet_x_400mf"}).kind == "torchvision:regnet_x_400mf"


NETWORKS = [("torchvision:squeezenet1_1", {}), ("torchvision:shufflenet_v2_x0_5", {}),
            ("torchvision:mobilenet_v2", {}), ("timm:convnext_atto", {}),
            ("timm:vit_tiny_patch16_224", {"img_size": 32}), ("timm:mobilenetv3_small_050", {})]


@pytest.mark.parametrize("kind, options", NETWORKS, ids=[k for k, _ in NETWORKS])
def test_networks_of_both_libraries_train_and_their_activation_changes_the_loss(kind, options):
    spec, data = spec_of({"kind": kind, **options}), tiny_data((3, 32, 32), n=16)
    relu, tanh = train_run(run_spec(spec, "relu"), data), train_run(run_spec(spec, "tanh"), data)
    assert relu.status == tanh.status == "done", (relu.error, tanh.error)
    assert relu.batches["loss"][0] != tanh.batches["loss"][0]
    assert relu.env["activation_modules"] == tanh.env["activation_modules"] > 0
