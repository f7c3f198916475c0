"""The report's opening answers: a few sentences, each built from verdicts and numbers.

`answers(t)` takes the report's analysis tables (the dict `report.write_report` builds) and
returns one `Answer(text, anchor)` per question the data can speak to: which activation
does best at the smallest n, with how few samples it reaches a target, whether that holds
as n grows and when lr is tuned, which of the notebook's findings hold, and whether they
survive a one-bit perturbation. A sentence without numbers behind it is never written;
where the data cannot decide, the sentence says "inconclusive".
"""
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..analysis.tables import fmt


@dataclass(frozen=True)
class Answer:
    """One sentence of the answers section and the section holding its evidence."""
    text: str
    anchor: str


def answers(t: dict) -> list[Answer]:
    """Three to eight sentences from the report's tables (see the module docstring)."""
    out = []
    for build in (_protocol_first, _best_at_smallest_n, _samples_to_target, _holds_as_n_grows, _holds_when_tuned,
                  _original_findings, _mechanism, _robust):
        out.extend(build(t))
    return out[:8]


def _protocol_first(t) -> list[Answer]:
    """The user's activation against the best built-in per n (focus.csv), then every tuned
    choice at the edge of its range (tuned.csv)."""
    out = []
    f = t.get("focus")
    for (name, cond), g in (f.groupby(["focus", "condition"], sort=False) if f is not None else []):
        parts = []
        for r in g.sort_values("n_train").itertuples():
            if not isinstance(r.best_builtin, str):
                parts.append(f"n={r.n_train}: rank {r.rank:.0f} of {r.n_activations}, no built-in beside it")
                continue
            verdict = "cannot tell against" if r.verdict == "cannot tell" else f"{r.verdict} than"
            parts.append(f"n={r.n_train}: rank {r.rank:.0f} of {r.n_activations}, {verdict} "
                         f"{r.best_builtin} (test loss difference {fmt(r.mean_diff)} [95% CI {fmt(r.diff_low)}, "
                         f"{fmt(r.diff_high)}] over {r.n_seeds:.0f} seeds, Holm p {fmt(r.p_holm)})")
        reach = g.dropna(subset=["n_to_80"]) if "n_to_80" in g else g.iloc[0:0]
        if len(reach):
            r = reach.iloc[0]
            parts.append(f"it reaches 80% test accuracy at about {r.n_to_80:.0f} images "
                         f"({r.best_builtin}: {fmt(r.builtin_n_to_80)})")
        out.append(Answer(f"{name} ({cond}): " + "; ".join(parts) + ".", "tuning"))
    tuned = t.get("tuned")
    if tuned is not None and "at_edge" in tuned and tuned["at_edge"].any():
        edge = tuned[tuned["at_edge"]]
        named = ", ".join(f"{r.activation} n={r.n_train} ({r.edge})" for r in edge.head(4).itertuples())
        more = f" and {len(edge) - 4} more" if len(edge) > 4 else ""
        out.append(Answer(f"{len(edge)} of {len(tuned)} tuned choices lie at the edge of the range "
                          f"searched: {named}{more}; widen the range.", "tuning"))
    return out


def _best_at_smallest_n(t) -> list[Answer]:
    if t.get("tuned") is not None and len(t["tuned"]):
        return _best_tuned(t["tuned"], t.get("tuning_axes", ["lr"]))
    summary = t.get("summary")
    if summary is None or summary.empty:
        return []
    loss = summary[summary["metric"] == "final_test_loss"]
    out = []
    for model, g in loss.groupby("model", sort=True):
        n = g["n_train"].min()
        at = g[g["n_train"] == n].sort_values("mean")
        if len(at) < 2 or not np.isfinite(at["mean"].iloc[0]):
            continue
        best, second = at.iloc[0], at.iloc[1]
        out.append(Answer(f"{model}, {n} training images: " + _lowest(
            best["activation"], best["mean"], best["low"], best["high"], best["n_seeds"],
            second["activation"], second["mean"], second["low"]), "ranking"))
    return out[:2]


def _lowest(act, mean, low, high, n_seeds, next_act, next_mean, next_low) -> str:
    """'<act> ends with the lowest test loss, m [CI] over n seeds, next ...; overlap or not'."""
    apart = np.isfinite(high) and np.isfinite(next_low) and high < next_low
    return (f"{act} ends with the lowest test loss, {fmt(mean)} [95% CI {fmt(low)}, {fmt(high)}] "
            f"over {int(n_seeds)} seeds, next {next_act} {fmt(next_mean)}"
            + ("; their intervals do not overlap." if apart else
               "; their intervals overlap, so which is lowest is inconclusive."))


def _best_tuned(tuned: pd.DataFrame, axes) -> list[Answer]:
    """The same question when each activation has its own tuned setting."""
    out = []
    for cond, g in tuned.dropna(subset=["test_loss"]).groupby("condition", sort=True):
        at = g[g["n_train"] == g["n_train"].min()].sort_values("test_loss")
        if len(at) < 2:
            continue
        best, second = at.iloc[0], at.iloc[1]
        setting = ", ".join(f"{a} {best[f'best_{a}']:g}" if isinstance(best[f"best_{a}"], float)
                            else f"{a} {best[f'best_{a}']}" for a in axes)
        out.append(Answer(
            f"{cond}, {int(best['n_train'])} training images, each activation at its own best "
            f"{', '.join(axes)} (chosen on validation; the lowest at {setting}): " + _lowest(
                best["activation"], best["test_loss"], best["test_loss_low"], best["test_loss_high"],
                best["n_seeds"], second["activation"], second["test_loss"], second["test_loss_low"]),
            "tuning"))
    return out[:2]


def _samples_to_target(t) -> list[Answer]:
    lc = t.get("learning_curves")
    if lc is None or lc.empty:
        return []
    out = []
    for target in ("n_to_80", "n_to_90"):
        if target not in lc:
            continue
        for model, g in lc.groupby("model", sort=True):
            reached = g[g[f"{target}_status"] == "reached"].sort_values(target)
            if reached.empty:
                continue
            r = reached.iloc[0]
            out.append(Answer(
                f"{model}: {r['activation']} needs the fewest images to reach "
                f"{target[-2:]}% test accuracy, {fmt(r[target])} [{fmt(r[f'{target}_low'])}, "
                f"{fmt(r[f'{target}_high'])}] ({len(reached)} of {len(g)} activations reach it "
                f"within {int(g['n_max'].max())}); its loss falls as n^-{fmt(r['b'])} "
                f"[{fmt(r['b_low'])}, {fmt(r['b_high'])}].", "learning"))
        if out:
            break
    return out[:2]


def _verdict_rows(t, ids) -> pd.DataFrame:
    frames = [t[k] for k in ("findings", "samples", "fairness") if k in t and len(t[k])]
    if not frames:
        return pd.DataFrame(columns=["id", "scope", "verdict", "evidence"])
    allv = pd.concat(frames, ignore_index=True)
    return allv[allv["id"].isin(ids)]


def _holds_as_n_grows(t) -> list[Answer]:
    rows = _verdict_rows(t, ["n1"])
    out = []
    for r in rows.itertuples(index=False):
        if r.scope == "(none)" or r.evidence.startswith("needs"):
            continue
        x = _numbers(r)
        what = {"supported": "holds", "not supported": "does not hold",
                "inconclusive": "is inconclusive"}[r.verdict]
        moved = [f"{a} {s}->{e}" for a, s, e in x.get("moved", [])]
        out.append(Answer(
            f"{r.scope}: the ranking at n={x['n_small']} {what} at n={x['n_large']}: the activation x n "
            f"interaction has permutation p = {fmt(x['p'])} over {x['n_seeds']} seeds, Kendall's tau "
            f"between the two rankings is {fmt(x['tau'])}, and "
            + (f"{_count(len(moved), 'activation')} move 2 or more places ({_few(moved)})."
               if moved else "no activation moves 2 or more places."), "claims-samples"))
    return out[:2]


def _holds_when_tuned(t) -> list[Answer]:
    rows = _verdict_rows(t, ["r1"])
    rows = rows[~rows["scope"].isin(["(none)", "all models"])]
    if rows.empty:
        return []
    counts = rows["verdict"].value_counts()
    text = (f"With lr tuned per activation on the validation split, the ranking at the notebook's lr "
            f"holds in {counts.get('supported', 0)} of {len(rows)} conditions, fails in "
            f"{counts.get('not supported', 0)} and is inconclusive in {counts.get('inconclusive', 0)}")
    shift = t.get("ranking_shift")
    if shift is not None and len(shift) and shift["n_moved"].max() > 0:
        worst = shift.sort_values(["n_moved", "kendall_tau"], ascending=[False, True]).iloc[0]
        moved = [m.strip() for m in str(worst["moved"]).split(",") if m.strip()]
        text += (f"; the largest change is {worst['condition']}, n={int(worst['n_train'])}, where "
                 f"{_count(len(moved), 'activation')} move 2 or more places ({_few(moved)}) and "
                 f"Kendall's tau is {fmt(worst['kendall_tau'])}")
    return [Answer(text + ".", "tuning")]


def _original_findings(t) -> list[Answer]:
    f = t.get("findings")
    if f is None or f.empty:
        return []
    grid = verdict_grid({"findings": f, "per_run": t.get("per_run")})
    both = [c for c in grid.index if grid.loc[c].dropna().map(_all_are("supported")).all()]
    never = [c for c in grid.index if grid.loc[c].dropna().map(_all_are("not supported")).all()]
    rest = len(grid) - len(both) - len(never)
    text = (f"Of the notebook's {len(grid)} findings, judged per model in the table below, "
            + (f"{_count(len(both), 'holds', 'hold')} in every model where judged: {_few(both)}; "
               if both else "none holds in every model where judged; ")
            + (f"{_count(len(never), 'fails', 'fail')} in every model: {_few(never)}; " if never
               else "none fails in every model; ")
            + f"the other {rest} hold in some models and not in others, or cannot be decided.")
    return [Answer(text, "verdicts")]


def verdict_grid(t) -> pd.DataFrame:
    """Claims (rows, "(id) words") by model (columns): each cell the list of (sub-scope, verdict)
    of that claim in that model; a claim judged over all models fills every column."""
    frames = [t[k] for k in ("findings", "samples", "fairness", "mechanisms", "papers")
              if t.get(k) is not None and len(t[k])]
    if not frames:
        return pd.DataFrame()
    v = pd.concat(frames, ignore_index=True)
    v = v[~v["scope"].isin(["(none)"])]
    models = _models(t, v)
    cells: dict = {}
    for r in v.itertuples(index=False):
        row = f"({r.id}) {r.claim}"
        cells.setdefault(row, {})
        for model, rest in _scoped(r.scope, models):
            cells[row].setdefault(model, []).append((rest, r.verdict))
    return pd.DataFrame.from_dict(cells, orient="index").reindex(columns=models + [
        c for c in ("other",) if any("other" in d for d in cells.values())])


def _models(t, v) -> list:
    per_run = t.get("per_run")
    if per_run is not None and len(per_run):
        return sorted(map(str, per_run["model"].unique()))
    return sorted({s.split(",")[0].split(" (")[0] for s in v["scope"] if s != "all models"})


def _scoped(scope: str, models: list) -> list:
    """[(model, the rest of the scope)] a verdict's scope speaks of."""
    if scope == "all models":
        return [(m, "") for m in models]
    for m in sorted(models, key=len, reverse=True):  # mlp_original before mlp
        if scope == m or scope.startswith((m + ",", m + " ")):
            return [(m, scope[len(m):].lstrip(", ").strip())]
    return [("other", scope)]


def _all_are(verdict):
    return lambda cell: all(v == verdict for _, v in cell)


def _mechanism(t) -> list[Answer]:
    m = t.get("mechanisms")
    if m is None or m.empty:
        return []
    m1 = m[(m["id"] == "m1") & (m["verdict"] != "inconclusive")]
    out = []
    for r in m1.itertuples(index=False):
        x = _numbers(r)
        if not {"sigmoid_fall", "others_median_fall", "grad_ratio_rel"} <= set(x):
            continue
        what = {"supported": "measured", "not supported": "not measured"}[r.verdict]
        out.append(Answer(
            f"{r.scope}: sigmoid's flat loss put down to saturation or vanishing gradients is {what}: "
            f"its train loss falls {fmt(x['sigmoid_fall'])} nats against a median "
            f"{fmt(x['others_median_fall'])} for the {x['n_others']} other activations, and its "
            f"first-to-last-layer gradient-norm ratio is {fmt(x['grad_ratio_rel'])} times theirs "
            f"(vanishing means below {fmt(x['vanishing'])} times).", "mechanisms"))
    return out[:1]


def _robust(t) -> list[Answer]:
    rob = t.get("robustness")
    if rob is None or rob.empty or not (rob["sets"] > 0).any():
        return []
    judged = rob[rob["sets"] > 0]
    always = int((judged["share"] == 1).sum())
    fragile = judged[judged["share"] < 1].sort_values("share")
    text = (f"Under one-bit perturbations, {always} of {len(judged)} verdicts hold in every replica "
            f"set ({int(judged['sets'].max())} sets)")
    if len(fragile):
        r = fragile.iloc[0]
        text += (f"; the least robust is {r['id']} ({r['scope']}): {r['verdict']} in "
                 f"{int(r['holds'])}/{int(r['sets'])}")
    return [Answer(text + ".", "robustness")]


def _numbers(row) -> dict:
    """A verdict's numbers (JSON in the claims tables)."""
    x = row.numbers
    return json.loads(x) if isinstance(x, str) and x else (x if isinstance(x, dict) else {})


def _count(n: int, one: str, many: str | None = None) -> str:
    """'1 activation', '3 activations'; with `many`, a verb: '1 holds', '2 hold'."""
    return f"{n} {one}" if n == 1 else f"{n} {many or one + 's'}"


def _few(names, limit: int = 5) -> str:
    """Up to `limit` names in full, then 'and N more': a sentence that ends, and says who."""
    names = list(names)
    if len(names) <= limit:
        return ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1] if names else ""
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"
