"""benchmarks/compare_reports.py: two report folders, CSV cell for cell."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_reports.py"


def _folder(root: Path, name: str, files: dict) -> Path:
    d = root / name
    d.mkdir()
    for f, text in files.items():
        (d / f).write_text(text)
    return d


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_identical_folders_pass_and_a_changed_cell_fails(tmp_path):
    a = _folder(tmp_path, "a", {"x.csv": "k,v\nrelu,0.5\ntanh,0.25\n", "y.csv": "k\n1\n"})
    b = _folder(tmp_path, "b", {"x.csv": "k,v\nrelu,0.5\ntanh,0.25\n", "y.csv": "k\n1\n"})
    ok = _run(a, b)
    assert ok.returncode == 0 and "2 CSV files, 3 rows: identical" in ok.stdout
    (b / "x.csv").write_text("k,v\nrelu,0.5\ntanh,0.2500000000001\n")
    bad = _run(a, b)
    assert bad.returncode == 1 and "x.csv: row 2 differs" in bad.stdout
    assert _run(a, b, "--tol", "1e-9").returncode == 0  # a reordered sum's last digits
    (b / "x.csv").write_text("k,v\nrelu,0.5\nsigmoid,0.25\n")
    assert _run(a, b, "--tol", "1e-9").returncode == 1  # text is never within a tolerance
    (b / "y.csv").unlink()
    assert "only in one folder: y.csv" in _run(a, b).stdout


def test_numbers_inside_a_json_cell_match_within_the_tolerance_and_nothing_else_does(tmp_path):
    cell = '"{""slope"": 0.0536755986730659, ""n"": 3, ""who"": ""selu""}"'
    a = _folder(tmp_path, "a", {"f.csv": f"id,numbers\nc,{cell}\n"})
    b = _folder(tmp_path, "b", {"f.csv": f"id,numbers\nc,{cell.replace('0659', '0658')}\n"})
    assert _run(a, b).returncode == 1
    assert _run(a, b, "--tol", "1e-9").returncode == 0
    (b / "f.csv").write_text(f"id,numbers\nc,{cell.replace('selu', 'relu')}\n")  # text never within a tolerance
    assert _run(a, b, "--tol", "1e-9").returncode == 1
