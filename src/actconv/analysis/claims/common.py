"""What every claim shares: the Claim and Verdict records, the one verdict vocabulary, the
seed vote, the thresholds (each with its why), "flat" and the logit floor, and the registry.

A claim is `Claim(id, text, check)`; `check(results, thresholds) -> list[Verdict]`, one
Verdict per scope it judges. `evaluate` runs registered claims on a study's results.
"""
import json
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ...study.activations import logit_loss_floor, output_range
from ..diagnostics import MEAN_TOL, VAR_BAND

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)
N_CLASSES = 10  # MNIST and its kin; a study's own count comes from its runs (store.n_classes_of)


@dataclass(frozen=True)
class Thresholds:
    """Every number a verdict turns on, named once."""
    # 95%: the usual interval; with 2-4 seeds a t-interval, bootstrap from 5 (analysis).
    confidence: float = 0.95
    # A start-loss difference under 0.05 nats is below seed-to-seed spread of epoch-0 losses.
    margin: float = 0.05
    # 0.1 nats of test-minus-train gap is the size of seed noise on a 1,000-image test set;
    # overfitting needs a gap above it that also grows.
    gap_tolerance: float = 0.1
    # "Flat": a slope or fall under a quarter of the other activations' median is visibly
    # flat on the original's figures (claim d's slopes and m1's falls share it).
    flat_share: float = 0.25
    # "Stagnates": the train loss falls by under 10% of where it started (TinyVGG's sigmoid
    # has no other curve drawn beside it in the original, so the bar is its own start).
    stagnation_drop: float = 0.1
    # A spike: above median + 10 x MAD of the previous 50 batch losses (about 7 robust
    # standard deviations: ordinary batch noise never gets there).
    spike_k: float = 10.0
    spike_window: int = 50
    # "Test loss unchanged" after a spike: up by at most 10% over the epoch before.
    spike_test_tolerance: float = 0.1
    # Spikes "leave the epoch losses unchanged" when at least half of them do.
    spike_kept_share: float = 0.5
    # "Among the lowest" (claim b): the lowest third, in 3 of 4 cells (1 in 4 or fewer: not).
    lowest_cells_share: float = 0.75
    # A seed vote: the claim must hold in 80% of the paired seeds (4 of 5), as papers report
    # a median of 5 runs; fewer than 3 seeds cannot decide.
    win_share: float = 0.8
    min_seeds: int = 3
    # Saturated layer: a tenth of its entries with derivative below 1% of the maximum.
    saturated_share: float = 0.10
    # Vanishing gradients: first/last gradient-norm ratio under a tenth of the others' median.
    vanishing: float = 0.1
    # Logit ranges whose floor is below 0.1 nats (relu6: 0.02) do not bound the loss.
    min_floor: float = 0.1
    # Pinned at the floor: less than a quarter of the possible fall (start - floor) is left.
    pinned_share: float = 0.25
    # SELU near its fixed point (0, 1): see diagnostics.MEAN_TOL and VAR_BAND.
    mean_tol: float = MEAN_TOL
    var_band: tuple = VAR_BAND
    # Self-normalising: 90% of (layer, epoch) cells near the fixed point; under half: not.
    near_supported: float = 0.9
    near_refuted: float = 0.5
    # Rankings "hold" when no activation moves 2 or more places and Kendall's tau is at least
    # 0.8 (with 10+ activations, one swap of neighbours costs about 0.05).
    rank_places: int = 2
    tau_holds: float = 0.8
    # The interaction test: 5% level, 2,000 permutations (p resolved to 1/2001).
    alpha: float = 0.05
    permutations: int = 2000
    # Tuning: what is tuned, on which validation metric, and the unfair reference setting
    # (the notebook's lr 0.1).
    tuned_axes: tuple = ("lr",)
    select: str = "val_loss"
    reference: tuple = (("lr", 0.1),)


DEFAULT = Thresholds()


@dataclass(frozen=True)
class Verdict:
    """One claim judged in one scope: the verdict, the sentence, and the sentence's numbers."""
    claim_id: str
    scope: str
    verdict: str
    evidence: str
    numbers: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; choose from: {', '.join(VERDICTS)}")


@dataclass(frozen=True)
class Claim:
    """A claim: its id, its sentence, and `check(results, thresholds) -> list[Verdict]`."""
    id: str
    text: str
    check: Callable
    label: dict = field(default_factory=dict)  # verdict -> how a report shows it ("reproduced")


REGISTRY: dict[str, Claim] = {}


def register(claim: Claim) -> Claim:
    """Add a claim to the registry (its id must be new); returns it."""
    if not isinstance(claim, Claim):
        raise TypeError(f"register takes a Claim(id, text, check), got {type(claim).__name__}")
    if claim.id in REGISTRY:
        raise ValueError(f"a claim with id {claim.id!r} is registered already")
    REGISTRY[claim.id] = claim
    return claim


def unregister(claim_id: str) -> None:
    """Remove a claim from the registry (a user's claim, or a test's)."""
    REGISTRY.pop(claim_id, None)


def evaluate_verdicts(results, ids=None, thresholds: Thresholds | None = None) -> list:
    """(Claim, Verdict) for each verdict of the claims `ids` (default: every registered claim)."""
    ids = list(REGISTRY) if ids is None else list(ids)
    unknown = [i for i in ids if i not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown claim(s) {', '.join(map(repr, unknown))}; registered: "
                         f"{', '.join(REGISTRY)}")
    thresholds = thresholds or DEFAULT
    out = []
    for i in ids:
        claim = REGISTRY[i]
        for v in claim.check(results, thresholds):
            if not isinstance(v, Verdict):
                raise TypeError(f"claim {i!r}'s check returned {type(v).__name__}, not a Verdict")
            out.append((claim, v))
    return out


COLUMNS = ["id", "claim", "scope", "verdict", "evidence", "numbers"]


def evaluate(results, ids=None, thresholds: Thresholds | None = None) -> pd.DataFrame:
    """Verdicts of the registered claims on a study's results.

    Args:
        results: a `store.Results` (runs, epochs, batches, diagnostics).
        ids: claim ids to check, in this order (default: every registered claim).
        thresholds: a `Thresholds` (default: `Thresholds()`).
    Returns:
        One row per verdict: id, claim, scope, verdict (supported / not supported /
        inconclusive), evidence (a sentence), numbers (the sentence's figures as JSON).
    """
    return verdict_table(evaluate_verdicts(results, ids, thresholds))


def verdict_table(pairs) -> pd.DataFrame:
    """`evaluate`'s table from (Claim, Verdict) pairs."""
    rows = [(v.claim_id, c.text, v.scope, v.verdict, v.evidence, _json(v.numbers)) for c, v in pairs]
    return pd.DataFrame(rows, columns=COLUMNS)


def labels(ids) -> dict:
    """{claim id: {verdict: display label}} for claims that show their verdicts otherwise."""
    return {i: REGISTRY[i].label for i in ids if i in REGISTRY and REGISTRY[i].label}


def _json(numbers: dict) -> str:
    return json.dumps({k: _plain(v) for k, v in numbers.items()}, sort_keys=True)


def _plain(v):
    """A JSON-ready value: numpy scalars to Python, non-finite floats to None."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.integer, bool, np.bool_)):
        return v.item() if hasattr(v, "item") else v
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v


# -- shared rules ----------------------------------------------------------------------------

def vote(hits: int, n: int, share: float, min_n: int = 1) -> str:
    """A claim that holds in `hits` of `n` seeds (or cells): supported when it holds in at least
    `share` of them, not supported when it fails in at least `share`, else inconclusive;
    inconclusive below `min_n`."""
    if n < min_n or n == 0:
        return INCONCLUSIVE
    if hits >= share * n:
        return SUPPORTED
    if n - hits >= share * n:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def flat_band(reference: float, t: Thresholds) -> float:
    """Half-width of "flat": a slope or fall within this of 0 is flat next to `reference`
    (the other activations' median)."""
    return t.flat_share * abs(float(reference))


def is_flat(value: float, reference: float, t: Thresholds) -> bool:
    """A fall `value` is flat next to the others' median fall `reference` (never flat when the
    others did not fall)."""
    return bool(reference > 0 and value < flat_band(reference, t))


def bounding_floor(activation: str, t: Thresholds, n_classes: int = N_CLASSES) -> float | None:
    """The cross-entropy floor an activation on the logits imposes on `n_classes` classes, or
    None when its range does not bound the loss (unbounded, or a floor below `min_floor`)."""
    rng = output_range(activation)
    if not rng or not np.isfinite(rng[0]) or not np.isfinite(rng[1]):
        return None
    floor = logit_loss_floor(*rng, n_classes)
    return floor if floor >= t.min_floor else None


def pinned(start: float, final: float, floor: float, t: Thresholds) -> bool:
    """Did a loss that started at `start` end pinned at its floor (less than `pinned_share` of
    its possible fall left)?"""
    return bool(final - floor < t.pinned_share * (start - floor))


def seed_note(n: int) -> str:
    return {0: "no seeds; ", 1: "one seed: no interval; ",
            2: "two seeds: the interval is wide; "}.get(n, "")
