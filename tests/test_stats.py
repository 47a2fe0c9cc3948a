"""Counters: per process in memory, merged once at exit, never lost between concurrent processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from autocompile import _stats
from conftest import HOOK_PRELUDE, child_env, write_tree


def test_parse_and_format_round_trip() -> None:
    counts = {("cpython-311", "hit", "pkg"): 3, ("cpython-311", "compiled", "other"): 1}
    assert _stats.parse(_stats.format_counts(counts)) == counts
    assert _stats.parse("garbage\nno\ttabs\there\n") == {}


def test_concurrent_processes_lose_no_counts(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path, {f"counted_{n}.py": "" for n in range(5)})
    code = HOOK_PRELUDE + "import " + ", ".join(f"counted_{n}" for n in range(5))
    children = [
        subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=child_env(cache_dir)) for _ in range(12)
    ]
    assert all(child.wait(timeout=120) == 0 for child in children)
    totals = _stats.totals(str(cache_dir))
    per_module = sum(n for (_tag, outcome, package), n in totals.items() if package.startswith("counted_") and outcome != _stats.COMPILE_NS)
    assert per_module == 12 * 5


def test_zeroing_empties_every_bucket(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path, {"zeroed.py": ""})
    subprocess.run([sys.executable, "-c", HOOK_PRELUDE + "import zeroed"], cwd=tmp_path, env=child_env(cache_dir), check=True)
    assert _stats.totals(str(cache_dir))
    for path in _stats.bucket_paths(str(cache_dir)):
        if Path(path).exists():
            _stats.update_bucket(path, None)
    assert _stats.totals(str(cache_dir)) == {}


def test_a_bucket_takes_appended_lines_until_it_is_merged(tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    change = {("cpython-311", "hit", "pkg"): 1}
    line = len(_stats.format_counts(change))
    appends = _stats.MERGE_BYTES // line
    for _ in range(appends):
        _stats.update_bucket(str(bucket), change)
    assert bucket.stat().st_size == appends * line  # each exit appended its line, nothing was parsed
    _stats.update_bucket(str(bucket), change)
    assert bucket.read_text() == _stats.format_counts({("cpython-311", "hit", "pkg"): appends + 1})
