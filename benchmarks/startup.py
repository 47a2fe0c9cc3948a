"""Interpreter start-up with and without the hook: ``python -c pass``, alternating, many runs.

    python benchmarks/startup.py STOCK_PYTHON HOOKED_PYTHON [--runs 80] [--cache-dir DIR]

Both interpreters run with ``PYTHONDONTWRITEBYTECODE=1``; the hooked one also with the hook
disabled (``AUTOCOMPILE_DISABLE=1``), which isolates the cost of the ``.pth`` line itself.
Reports min, first quartile and median in milliseconds: on a shared machine the minimum is the
steadiest estimate of the intrinsic cost.
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time


def run_once(python: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([python, "-c", "pass"], env=env, check=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stock")
    parser.add_argument("hooked")
    parser.add_argument("--runs", type=int, default=80)
    parser.add_argument("--cache-dir", help="default: a fresh temporary cache, warmed by one run")
    args = parser.parse_args()
    cache = args.cache_dir or tempfile.mkdtemp(prefix="acstart-")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AUTOCOMPILE_"))}
    base.update(PYTHONDONTWRITEBYTECODE="1", AUTOCOMPILE_CACHE_DIR=cache)
    sides = {
        "stock": (args.stock, base),
        "hook": (args.hooked, base),
        "hook disabled": (args.hooked, {**base, "AUTOCOMPILE_DISABLE": "1"}),
    }
    for python, env in sides.values():
        run_once(python, env)  # warm-up: fills the cache and its runtime bundle
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.runs):
        for name, (python, env) in sides.items():
            samples[name].append(run_once(python, env))
    for name, values in samples.items():
        quartile = statistics.quantiles(values, n=4)[0]
        print(f"{name:14s} min {min(values):6.2f}  p25 {quartile:6.2f}  median {statistics.median(values):6.2f} ms")


if __name__ == "__main__":
    main()
