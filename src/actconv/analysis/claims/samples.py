"""Sample-size findings: does the comparison of activations change with n?

n1: the ranking at the smallest n holds at the largest (a permutation test of the
activation x n interaction, Kendall's tau between the two rankings, the activations that move);
n2: the notebook's "SELU ends among the lowest", judged at each n on its own.
"""
from ..learning import interaction_test, rank_change
from ..tables import fmt
from .common import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Claim, Verdict, register
from .original import _absent, _b, _finished

IDS = ["n1", "n2"]


def check_n1(results, t) -> list:
    _, _, per_run, _ = _finished(results)
    out = []
    for model, pr in per_run.groupby("model", sort=True):
        sizes = sorted(pr["n_train"].unique())
        if len(sizes) < 2 or pr["activation"].nunique() < 2:
            out.append(Verdict("n1", model, INCONCLUSIVE,
                               f"needs 2+ sizes and 2+ activations; has {len(sizes)} size(s) and "
                               f"{pr['activation'].nunique()} activation(s)"))
            continue
        test = interaction_test(pr, "final_test_loss", n_perm=t.permutations)
        shift = rank_change(pr, "final_test_loss", places=t.rank_places)
        moved = "; ".join(f"{a} {s}->{l}" for a, (s, l) in sorted(shift["moved"].items())) or "none"
        numbers = dict(p=test["p"], statistic=test["statistic"], n_seeds=test["n_seeds"],
                       tau=shift["tau"], n_small=shift["n_small"], n_large=shift["n_large"],
                       n_moved=len(shift["moved"]),
                       # who moved, from where to where: the answer names them
                       moved=[[a, int(s), int(l)] for a, (s, l) in sorted(shift["moved"].items())])
        ev = (f"activation x n interaction on final test loss: permutation p = {fmt(test['p'])} "
              f"({test['n_seeds']} seeds with every activation at every size, "
              f"{t.permutations} permutations); Kendall's tau between the rankings at n="
              f"{shift['n_small']} and n={shift['n_large']}: {fmt(shift['tau'])}; moving "
              f"{t.rank_places}+ places: {moved}")
        if test["n_seeds"] < 2:
            verdict = INCONCLUSIVE
            ev += "; fewer than 2 complete seeds: the interaction cannot be tested"
        elif test["p"] >= t.alpha and not shift["moved"]:
            verdict = SUPPORTED
        elif test["p"] < t.alpha and shift["moved"]:
            verdict = NOT_SUPPORTED
        else:
            verdict = INCONCLUSIVE
        out.append(Verdict("n1", model, verdict, ev, numbers))
    return out or [Verdict("n1", "(none)", INCONCLUSIVE, "no finished runs")]


def check_n2(results, t) -> list:
    runs, _, per_run, _ = _finished(results)
    out = []
    for (model, n), pr in per_run.groupby(["model", "n_train"], sort=True):
        if per_run.loc[per_run["model"] == model, "n_train"].nunique() < 2:
            continue  # one size: claim b already says it
        out.append(Verdict("n2", f"{model}, n={n}", *_b(pr, t, _absent(runs, model, "selu"))))
    return out


register(Claim("n1", "The ranking of activations at the smallest n holds at the largest", check_n1))
register(Claim("n2", "SELU ends among the lowest losses, at each training-set size", check_n2))
