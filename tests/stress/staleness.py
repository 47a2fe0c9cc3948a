"""Stress: the stale-code state machine of tests/test_staleness.py with many more, longer sequences.

    python tests/stress/staleness.py [--rounds 50] [--steps 40]
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from _common import arguments
from reliability import summary
from test_staleness import EditsAndImports

args = arguments(__doc__, 50, steps=(int, 40, "steps per sequence"))
checks = {"sequences": 0, "checks": 0}


class Counted(EditsAndImports):
    def teardown(self) -> None:
        checks["sequences"] += 1
        checks["checks"] += self.checks
        super().teardown()


started = time.monotonic()
ok = True
try:
    run_state_machine_as_test(
        Counted, settings=settings(max_examples=args.rounds, stateful_step_count=args.steps, deadline=None,
                                   suppress_health_check=list(HealthCheck), database=None),
    )
except Exception as exc:  # the falsifying sequence is printed by hypothesis
    ok = False
    print(f"FAILED: {exc}")
checks["seconds"] = round(time.monotonic() - started)
print(summary("staleness", checks, ok))
raise SystemExit(0 if ok else 1)
