"""A one-bit perturbation changes exactly one weight by exactly one ulp."""
import torch

from actconv import perturb
from actconv.models import build_model
from actconv.seeding import derived_seed


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", "relu", "default", hidden_units=16, hidden_layers=2)


def test_flip_changes_one_weight_by_one_ulp():
    a, b = _model(), _model()
    name, index = perturb.flip_init_bit(b, seed=42, replica=1)
    changed = []
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        diff = (pa != pb).flatten().nonzero().flatten().tolist()
        changed += [(n, i) for i in diff]
    assert changed == [(name, index)]
    before = dict(a.named_parameters())[name].flatten()[index]
    after = dict(b.named_parameters())[name].flatten()[index]
    ulp = torch.nextafter(before.abs(), torch.tensor(float("inf"))) - before.abs()
    assert (after - before).abs() == ulp
    assert name.endswith("weight")


def test_replicas_flip_different_entries_and_repeat_exactly():
    picks = {perturb.flip_init_bit(_model(), seed=42, replica=r) for r in (1, 2, 3)}
    assert len(picks) == 3
    assert perturb.flip_init_bit(_model(), 42, 2) == perturb.flip_init_bit(_model(), 42, 2)


def test_stream_zero_keeps_the_original_seed():
    assert derived_seed(42, "shuffle", 0) == derived_seed(42, "shuffle")
    assert derived_seed(42, "shuffle", 1) != derived_seed(42, "shuffle")
