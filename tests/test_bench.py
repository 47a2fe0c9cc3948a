"""``autocompile bench``: the quick comparison runs and reports; it times nothing in CI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import run_cli


def test_bench_reports_both_sides_and_a_ratio(cache_dir: Path) -> None:
    completed = run_cli("bench", "--runs", "2", "--json", "--", sys.executable, "-c", "import json", cache_dir=cache_dir)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["runs"] == 2 and len(result["stock"]["samples"]) == len(result["autocompile"]["samples"]) == 2
    assert result["ratio"] > 0
    assert result["command"][-1] == "import json"


def test_bench_bad_runs_is_one_line(cache_dir: Path) -> None:
    result = run_cli("bench", "--runs", "0", cache_dir=cache_dir)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--runs" in result.stderr
