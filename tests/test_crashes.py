"""Crashes: writers killed with SIGKILL at random moments never leave an entry that is served torn.

Fast version of ``tests/stress/crashes.py`` (about 30 kills; the stress script does 200).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from conftest import run_python
from reliability import (
    NO_PYC, age_temporaries, crash_campaign, invalid_entries, prune_cli, stock_results, temporaries, verify_cli,
    workload_code,
)

KILLS = 30


def test_sigkilled_writers_leave_nothing_torn(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    expected = stock_results([sys.executable], workload_code(), **NO_PYC)[sys.executable]
    rng = random.Random(5)
    figures = crash_campaign(cache_dir, KILLS, rng, expected)
    assert figures["problems"] == []
    assert figures["killed"] >= KILLS
    # Later imports are correct and quiet, and fill the cache again.
    for _ in range(2):
        result = run_python(workload_code(), cache_dir, **NO_PYC)
        assert result.stderr == ""
        assert '"digest": "%s"' % expected["digest"] in result.stdout
    assert invalid_entries(cache_dir) == []
    # Leftover temporaries are harmless (never read: the run above was correct) and prune removes them
    # once they are older than any write in flight could be.
    left = age_temporaries(cache_dir)
    report = prune_cli(cache_dir)
    if report is not None:
        assert report["stale_temporaries"] == left
        assert temporaries(cache_dir) == []
    report = verify_cli(cache_dir)
    if report is not None:
        assert report["problems"] == []
    print(f"killed {figures['killed']} of {figures['processes started']} writers; {left} temporaries left and pruned")
