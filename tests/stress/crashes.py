"""Stress: writers SIGKILLed at random moments while filling the cache, KILLS times; after every kill
every entry must be whole; then imports are correct and prune removes the leftovers.

    python tests/stress/crashes.py [--rounds 200]   (rounds = kills)
"""

from __future__ import annotations

import random
import shutil
import sys
import time

from _common import arguments, scratch
from conftest import run_python
from reliability import (
    NO_PYC, age_temporaries, crash_campaign, invalid_entries, prune_cli, stock_results, summary, temporaries, workload_code,
)

args = arguments(__doc__, 200, parallel=(int, 2, "writers at a time"))
root = scratch(args.keep)
cache = root / "cache"
started = time.monotonic()
expected = stock_results([sys.executable], workload_code(), **NO_PYC)[sys.executable]
figures = crash_campaign(cache, args.rounds, random.Random(args.seed), expected, parallel=args.parallel)
problems = list(figures.pop("problems"))
result = run_python(workload_code(), cache, check=False, **NO_PYC)
if result.returncode or result.stderr or expected["digest"] not in result.stdout:
    problems.append(f"import after the crashes: {result.stdout} {result.stderr}")
problems += invalid_entries(cache)
left = age_temporaries(cache)
report = prune_cli(cache)
if report is not None and temporaries(cache):
    problems.append(f"prune left {len(temporaries(cache))} temporaries")
figures.update({"temporaries left by killed writers": left, "removed by prune": report and report["stale_temporaries"],
                "problems": len(problems), "seconds": round(time.monotonic() - started)})
print("\n".join(problems[:20]))
print(summary("crashes", figures, not problems))
if not args.keep:
    shutil.rmtree(root, ignore_errors=True)
sys.exit(1 if problems else 0)
