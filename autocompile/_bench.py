"""``autocompile bench``: a quick look at what autocompile does for this environment.

Times a command as whole processes, alternating stock (the hook disabled, the
environment's ``__pycache__`` as it is) and autocompile (after one warm-up
run), and reports medians, min–max and the median of the pair-by-pair
ratios. The full, reproducible comparison is ``benchmarks/run.py``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

#: Imported by the default workload: each installed distribution's top-level
#: modules, as far as they import without error.
_IMPORT_ALL = """
import importlib, importlib.metadata, sys
names = set()
for dist in importlib.metadata.distributions():
    top = dist.read_text("top_level.txt") or ""
    names.update(n.strip() for n in top.split() if n.strip().isidentifier())
names -= {"autocompile", "pip", "setuptools", "pkg_resources", "_distutils_hack", "wheel", "__pycache__"}
for name in sorted(names):
    try:
        importlib.import_module(name)
    except BaseException:
        pass
print(len(sys.modules))
"""


def default_command() -> list[str]:
    return [sys.executable, "-c", _IMPORT_ALL]


def _run(command: Sequence[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def bench(command: Sequence[str], runs: int) -> dict[str, object]:
    """Alternate stock and autocompile runs of ``command``; return timings in seconds."""
    stock_env = dict(os.environ, AUTOCOMPILE_DISABLE="1")
    ours_env = {key: value for key, value in os.environ.items() if key != "AUTOCOMPILE_DISABLE"}
    _run(command, ours_env)  # warm-up: fills the cache
    _run(command, stock_env)
    stock, ours = [], []
    for n in range(runs):
        order = ((stock, stock_env), (ours, ours_env)) if n % 2 == 0 else ((ours, ours_env), (stock, stock_env))
        for samples, env in order:
            samples.append(_run(command, env))
    ratios = [a / b for a, b in zip(ours, stock)]
    return {
        "command": list(command),
        "runs": runs,
        "stock": {"median": statistics.median(stock), "min": min(stock), "max": max(stock), "samples": stock},
        "autocompile": {"median": statistics.median(ours), "min": min(ours), "max": max(ours), "samples": ours},
        "ratio": statistics.median(ratios),
    }
