"""Stress: N processes start together on an empty cache, importing the same real modules, ROUNDS times;
then with eviction running (a small cap); then every interpreter version present sharing one cache.

    python tests/stress/concurrency.py [--rounds 20] [--processes 16] [--cap 1M] [--venv PYTHON]

Workload: ~150 standard-library packages (~280 modules) with no stock .pyc, or, with
``--venv PYTHON``, the benchmark workload (benchmarks/workload.py, ~1,300 modules) run by the
interpreter of a venv holding benchmarks/requirements.txt, in the first two phases. The
interpreter-versions phase always uses the standard-library workload (one venv per version
would be needed otherwise).
"""

from __future__ import annotations

import os
import shutil
import sys
import time

from _common import arguments, scratch
from reliability import (
    NO_PYC, OTHER_PYTHONS, concurrent_round, invalid_entries, stock_results, summary, unexpected_temporaries,
    relink_leaves_temporary, verify_cli, workload_code,
)

args = arguments(
    __doc__, 20, processes=(int, 16, "processes per round"), cap=(int, 1024 * 1024, "size cap in bytes for the eviction phase"),
    venv=(str, "", "a venv's python with benchmarks/requirements.txt: run the benchmark workload"),
)
root = scratch(args.keep)
pythons = [sys.executable] + [p for p in OTHER_PYTHONS if os.path.exists(p) and p != sys.executable]
code = workload_code()
expected = stock_results(pythons, code, **NO_PYC)
main_python, main_code = sys.executable, code
if args.venv:
    main_python, main_code = args.venv, workload_code(benchmark=True)
    expected.update(stock_results([main_python], main_code, **NO_PYC))
known_bug = relink_leaves_temporary(root / "probe")
figures = {"rounds": 0, "processes": 0, "modules imported": 0, "entries verified": 0, "problems": 0}
problems: list[str] = []
started = time.monotonic()
phases = [
    ("empty cache", [main_python] * args.processes, main_code, {}, True),
    ("eviction", [main_python] * args.processes, main_code, {"AUTOCOMPILE_MAX_SIZE": str(args.cap)}, False),
    ("interpreter versions", pythons * max(1, args.processes // len(pythons)), code, {}, True),
]
for phase, interpreters, phase_code, env, clear in phases:
    cache = root / phase.replace(" ", "-")
    for n in range(args.rounds):
        if clear:
            shutil.rmtree(cache, ignore_errors=True)
        found = concurrent_round(cache, interpreters, expected, phase_code, **NO_PYC, **env)
        found += invalid_entries(cache)
        found += [f"leftover temporary {p}" for p in unexpected_temporaries(cache, known_bug)]
        figures["rounds"] += 1
        figures["processes"] += len(interpreters)
        figures["modules imported"] += sum(expected[p]["modules"] for p in interpreters)
        figures["entries verified"] += len(list(cache.glob("*/*/*")))
        problems += [f"{phase} round {n}: {p}" for p in found]
        print(f"{phase} round {n + 1}/{args.rounds}: {len(interpreters)} processes, {len(found)} problems", flush=True)
    for python in set(interpreters):
        report = verify_cli(cache, python)
        if report is not None:
            problems += [f"{phase}: verify ({python}): {p}" for p in report["problems"]]
figures["problems"] = len(problems)
figures["interpreters"] = ", ".join(p.split("/")[-3] for p in pythons)
figures["relink temporaries tolerated (known bug)"] = known_bug
figures["seconds"] = round(time.monotonic() - started)
print("\n".join(problems[:20]))
print(summary("concurrency", figures, not problems))
if not args.keep:
    shutil.rmtree(root, ignore_errors=True)
sys.exit(1 if problems else 0)
