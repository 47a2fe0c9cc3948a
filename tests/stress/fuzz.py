"""Stress: hypothesis damages real cache entries (every mutation, index and object), ROUNDS examples
of up to MODULES damaged modules each, all imported in one child per example.

    python tests/stress/fuzz.py [--rounds 200] [--modules 40]   (cases = about rounds * modules / 2)
"""

from __future__ import annotations

import os
import shutil
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _common import arguments, scratch
from reliability import MUTATIONS, OTHER_PYTHONS, TARGETS, FuzzBed, summary

args = arguments(__doc__, 200, modules=(int, 40, "modules damaged per child at most"))
root = scratch(args.keep)
bed = FuzzBed(root, args.modules, next((p for p in OTHER_PYTHONS if os.path.exists(p)), None))
figures = {"children": 0, "cases": 0, "problems": 0}
by_kind: dict[str, int] = {}
problems: list[str] = []
case = st.tuples(st.sampled_from(TARGETS), st.sampled_from(MUTATIONS), st.integers(0, 2**32))
started = time.monotonic()


@settings(max_examples=args.rounds, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.dictionaries(st.integers(0, args.modules - 1), case, min_size=max(1, args.modules // 2), max_size=args.modules))
def fuzz(chosen: dict) -> None:
    cases = [(module, *c) for module, c in sorted(chosen.items())]
    found = bed.run(cases)
    figures["children"] += 1
    figures["cases"] += len(cases)
    for _, target, kind, _ in cases:
        by_kind[kind] = by_kind.get(kind, 0) + 1
    problems.extend(found)


fuzz()
figures["problems"] = len(problems)
figures["cases by mutation"] = ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items()))
figures["seconds"] = round(time.monotonic() - started)
print("\n".join(problems[:20]))
print(summary("fuzz", figures, not problems))
if not args.keep:
    shutil.rmtree(root, ignore_errors=True)
raise SystemExit(1 if problems else 0)
