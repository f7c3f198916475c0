"""The claims registry, the seed vote and the thresholds: known answers, loud errors."""
import dataclasses
import json

import pandas as pd
import pytest

from actconv import claims
from actconv.claims import Claim, Thresholds, Verdict, vote
from test_analysis import supported_study


def test_vote_known_answers():
    assert vote(4, 5, 0.8) == "supported" and vote(3, 5, 0.8) == "inconclusive"
    assert vote(1, 5, 0.8) == "not supported" and vote(0, 5, 0.8) == "not supported"
    assert vote(3, 3, 0.8, min_n=3) == "supported" and vote(2, 2, 0.8, min_n=3) == "inconclusive"
    assert vote(0, 0, 0.8) == "inconclusive"
    assert vote(3, 4, 0.75) == "supported" and vote(1, 4, 0.75) == "not supported"


def test_thresholds_are_frozen_and_change_verdicts():
    t = Thresholds()
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.margin = 1.0
    study = supported_study()
    base = claims.evaluate(study, ["a"]).set_index("scope")
    assert base.loc["mlp", "verdict"] == "supported"
    # SELU starts about 0.5 nats higher: a 5-nat margin makes that "no difference"
    strict = claims.evaluate(study, ["a"], Thresholds(margin=5.0)).set_index("scope")
    assert strict.loc["mlp", "verdict"] == "not supported"
    assert "under 5 nats" in strict.loc["mlp", "evidence"]


def test_user_claim_registers_and_evaluates_by_id():
    def check(results, t):
        done = results.runs[results.runs["status"] == "done"]
        n = int(done["activation"].eq("relu").sum())
        return [Verdict("relu-ran", "all runs", "supported" if n else "not supported",
                        f"{n} finished ReLU runs", {"runs": n})]
    claims.register(Claim("relu-ran", "ReLU was run", check))
    try:
        with pytest.raises(ValueError, match="registered already"):
            claims.register(Claim("relu-ran", "again", check))
        v = claims.evaluate(supported_study(), ["relu-ran", "f"])
        assert list(v["id"]) == ["relu-ran", "f"]
        assert list(v.columns) == ["id", "claim", "scope", "verdict", "evidence", "numbers"]
        row = v.iloc[0]
        assert row["claim"] == "ReLU was run" and row["verdict"] == "supported"
        assert json.loads(row["numbers"]) == {"runs": 9}  # 3 seeds x 3 models
        assert "relu-ran" in set(claims.evaluate(supported_study())["id"])
    finally:
        claims.unregister("relu-ran")
    with pytest.raises(ValueError, match="unknown claim.*'relu-ran'.*registered: a, b"):
        claims.evaluate(supported_study(), ["relu-ran"])


def test_verdicts_use_one_vocabulary():
    with pytest.raises(ValueError, match="unknown verdict 'reproduced'"):
        Verdict("x", "all", "reproduced", "")
    assert claims.labels(claims.PAPERS)["gelu-paper"]["supported"] == "reproduced"
