"""`make bench` runs end to end on tiny grids and prints its tables (speed is the benchmark's to show)."""
import importlib.util
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
    for header in ("wall s", "samples/s", "ratio", "peak MB", "largest RSS MB", "ensemble/loop",
                   "--engine auto", "GFLOP/step", "MFU", "paired t p", "Welch p", "loop/ensemble"):
        assert header in text, header
    assert "bench-mlp" in text and "target >= 10.0x" in text and "target >= 75%" in text
    report = json.loads(out.read_text())
    programs = [r["program"] for r in report["grids"]]
    assert programs[0] == "reference" and programs[1].startswith("actconv (ensemble")
    assert [r["samples"] for r in report["grids"]] == [256, 256]  # 2 activations x 2 seeds x 64 x 1 epoch
    assert {r["model"] for r in report["agree"]} == {"mlp", "tinyvgg"}
    ours = report["grids"][1]
    assert 0 < ours["run_s"] and ours["ratio"] <= ours["ceiling"]  # no command beats its own runs' time
    prof = report["profile"]
    assert prof["runs"] == 2 and prof["families"]["convolution"] > 0 and "aten::elu" not in prof["ops"]
    assert [m["runs"] for m in report["seed_preset"]] == [17] and report["seed_preset"][0]["peak_mb"] > 0
    floor = report["memory_floor"]
    assert 0 < floor["torch"]["private_mb"] < floor["torch"]["rss_mb"] < floor["a worker"]["rss_mb"]
    assert floor["a driver"]["rss_mb"] < floor["torch"]["rss_mb"] / 2  # the driver's modules leave torch out
    assert 0 < report["mfu"][0]["gflop_per_step"] < 20
    diag = report["diagnostics_engines"]  # (7): the same command on either engine, every run recorded
    assert [r["engine"] for r in diag["rows"]] == ["loop", "ensemble"] and "--diagnostics" in diag["flags"]
    assert [r["runs"] for r in diag["rows"]] == [18, 18]  # smoke's grids with its two MLPs
    assert diag["rows"][0]["diagnostics_rows"] == diag["rows"][1]["diagnostics_rows"] > 0
    assert diag["rows"][1]["ratio"] == pytest.approx(diag["rows"][0]["wall_s"] / diag["rows"][1]["wall_s"])


def test_missing_reference_is_one_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--reference", str(tmp_path / "nope.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "reference loop not found" in proc.stderr


def test_grids_count_what_the_reference_counts():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    mlp, vgg = bench.GRIDS
    # as the reference prints them: "240 runs, 1680000 training samples seen"
    assert (mlp.runs(), mlp.samples()) == (240, 1_680_000)
    assert (vgg.runs(), vgg.samples()) == (40, 108_000)
    assert mlp.reference_flags()[-2:] == ["--mlp-hidden", "64"] and "--activate-logits" in mlp.actconv_flags()
    assert vgg.reference_flags()[-2:] == ["--vgg-hidden", "16"]
