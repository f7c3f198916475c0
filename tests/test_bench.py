"""`make bench` runs end to end on tiny grids and prints its tables (speed is the benchmark's to show)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench.py"


def reference_loop():
    path = Path(os.environ.get("ACTCONV_REFERENCE", ROOT.parent / "shared" / "bench" / "seed_style.py"))
    if not path.exists():
        pytest.skip(f"the reference loop is not at {path} (set ACTCONV_REFERENCE)")
    return path


def test_bench_runs_end_to_end_on_tiny_grids(tmp_path):
    out = tmp_path / "bench.json"
    # One grid keeps it to three programs started (each imports torch); the other is the same code.
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--grids", "bench-mlp", "--jobs", "1",
                           "--reference", str(reference_loop()), "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    for header in ("wall s", "samples/s", "ratio", "peak PSS MB", "peak RSS MB", "ensemble/loop",
                   "--engine auto", "GFLOP/step", "MFU", "paired t p", "Welch p"):
        assert header in text, header
    assert "bench-mlp" in text and "target >= 10.0x" in text and "target >= 75%" in text
    report = json.loads(out.read_text())
    programs = [r["program"] for r in report["grids"]]
    assert programs[0] == "reference" and programs[1].startswith("actconv (ensemble")
    assert [r["samples"] for r in report["grids"]] == [256, 256]  # 2 activations x 2 seeds x 64 x 1 epoch
    assert {r["model"] for r in report["agree"]} == {"mlp", "tinyvgg"}
    assert report["seed_preset"]["runs"] == 17 and report["seed_preset"]["peak_pss_mb"] > 0
    assert 0 < report["mfu"][0]["gflop_per_step"] < 20


def test_missing_reference_is_one_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--reference", str(tmp_path / "nope.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "reference loop not found" in proc.stderr
