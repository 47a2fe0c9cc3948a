"""Concurrency: many interpreters fill one empty cache at once and every one of them runs the right code.

Fast versions of ``tests/stress/concurrency.py``. The workload imports about
150 standard-library packages (280 modules) with no usable stock ``.pyc``, so
every module is compiled and published, or served from the cache, by racing
processes. Each child prints a digest of the bytecode of every function of
every module it loaded; it must equal a stock run's.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import run_python
from reliability import (
    NO_PYC, OTHER_PYTHONS, concurrent_round, invalid_entries, relink_leaves_temporary, stock_results,
    unexpected_temporaries, verify_cli, workload_code,
)
from autocompile import _evict

PROCESSES = 6
ROUNDS = 2


@pytest.fixture(scope="module")
def stock() -> dict[str, dict]:
    pythons = [sys.executable] + [p for p in OTHER_PYTHONS if os.path.exists(p) and p != sys.executable]
    return stock_results(pythons, workload_code(), **NO_PYC)


def check_cache(cache_dir: Path) -> None:
    assert invalid_entries(cache_dir) == []
    known_bug = relink_leaves_temporary(cache_dir.parent / "probe")
    assert unexpected_temporaries(cache_dir, known_bug) == [], "a writer that finished left a temporary behind"
    report = verify_cli(cache_dir)
    if report is not None:
        assert report["problems"] == [] and report["checked"] > 0


def test_processes_starting_together_on_an_empty_cache(tmp_path: Path, stock: dict[str, dict]) -> None:
    cache_dir = tmp_path / "cache"
    for _ in range(ROUNDS):
        shutil.rmtree(cache_dir, ignore_errors=True)
        problems = concurrent_round(cache_dir, [sys.executable] * PROCESSES, stock, workload_code(), **NO_PYC)
        assert problems == []
        check_cache(cache_dir)
    # A warm round on the same cache: every process reads what the others wrote.
    assert concurrent_round(cache_dir, [sys.executable] * PROCESSES, stock, workload_code(), **NO_PYC) == []
    check_cache(cache_dir)


def test_relinking_an_existing_index_entry_leaves_no_temporary(tmp_path: Path) -> None:
    """Regression (found by this suite, fixed in ``_store``): two processes index the same source at once; the second ``os.replace`` of its
    temporary hard link onto the index entry, already a link to the same object, is a no-op
    (``rename(2)`` on two links to one inode), so its ``.tmp-*`` link stays in ``index/`` until
    ``prune`` removes it an hour later, pinning the object's inode against eviction meanwhile.
    Seen on every cold start of several processes (151 temporaries in a 6-process round).
    """
    assert not relink_leaves_temporary(tmp_path)


def test_with_eviction_running_at_the_same_time(tmp_path: Path, stock: dict[str, dict]) -> None:
    """A cap far below the workload's size: processes evict each other's entries while importing."""
    cache_dir = tmp_path / "cache"
    cap = 512 * 1024
    for _ in range(ROUNDS):
        problems = concurrent_round(
            cache_dir, [sys.executable] * PROCESSES, stock, workload_code(),
            AUTOCOMPILE_MAX_SIZE=str(cap), **NO_PYC,
        )
        assert problems == []
        check_cache(cache_dir)
    size = _evict.total_size(_evict.scan(str(cache_dir)))
    assert size <= 2 * cap, f"the cache is {size} bytes, far over its cap of {cap}: eviction did not run"


def test_several_interpreter_versions_share_one_cache(tmp_path: Path, stock: dict[str, dict]) -> None:
    pythons = [p for p in stock]
    if len(pythons) < 2:
        pytest.skip("only one interpreter version on this machine")
    cache_dir = tmp_path / "cache"
    for _ in range(1):
        assert concurrent_round(cache_dir, pythons * 2, stock, workload_code(), **NO_PYC) == []
    assert invalid_entries(cache_dir) == []
    for python in pythons:  # each interpreter recompiles its own entries and compares
        report = verify_cli(cache_dir, python)
        if report is not None:
            assert report["problems"] == []


def test_first_process_on_a_fresh_cache_without_stock_pycs_is_quiet(tmp_path: Path) -> None:
    """Regression: with no stock .pyc for autocompile itself (containers, ``-B``), the hook once
    served its own lazily imported ``_evict`` and found it half-imported while publishing it
    ("partially initialized module"): autocompile's own modules are now left to the standard
    machinery."""
    result = run_python("import json", tmp_path / "cache", **NO_PYC)
    assert result.stderr == ""
