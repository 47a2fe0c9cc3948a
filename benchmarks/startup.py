"""Interpreter start-up with and without the hook: ``python -c pass``, alternating, many runs.

    python benchmarks/startup.py STOCK_PYTHON HOOKED_PYTHON [--runs 80] [--cache-dir DIR] [--instructions]

Both interpreters run with ``PYTHONDONTWRITEBYTECODE=1``; the hooked one also with the hook
disabled (``AUTOCOMPILE_DISABLE=1``), which isolates the cost of the ``.pth`` line itself.
Two more sides show the floor of any hook started from a ``.pth`` file: a bare venv of the
stock interpreter (no packages), and the same venv with a ``.pth`` line that puts a finder
doing nothing but delegating to ``PathFinder`` in its slot.
Reports min, first quartile and median in milliseconds: on a shared machine the minimum is the
steadiest estimate of the intrinsic cost. ``--instructions`` instead runs each side once under
``valgrind --tool=callgrind`` and reports instructions executed, which do not vary between runs.
"""

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time

#: The least a ``.pth`` hook can be: a finder in ``PathFinder``'s slot that only delegates.
DELEGATING_HOOK = (
    "import sys; exec(\"from _frozen_importlib_external import PathFinder\\n"
    "class Finder:\\n"
    " def find_spec(self, name, path=None, target=None):\\n"
    "  return PathFinder.find_spec(name, path, target)\\n"
    " def invalidate_caches(self):\\n"
    "  PathFinder.invalidate_caches()\\n"
    "if PathFinder in sys.meta_path: sys.meta_path[sys.meta_path.index(PathFinder)] = Finder()\", {'sys': sys})\n"
)


def run_once(python: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([python, "-c", "pass"], env=env, check=True)
    return (time.perf_counter() - started) * 1000


def instructions(python: str, env: dict[str, str]) -> int:
    """Instructions executed by ``python -c pass`` (callgrind's total)."""
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.out", python, "-c", "pass"],
            env=env, check=True, capture_output=True, text=True,
        )
    return int(re.search(r"Collected : (\d+)", result.stderr).group(1))  # type: ignore[union-attr]


def floor_venvs(stock: str, work: str) -> tuple[str, str]:
    """A bare venv of the stock interpreter, and a copy of it with the delegating hook."""
    pythons = []
    for name, hook in (("bare", False), ("delegating-hook", True)):
        venv = os.path.join(work, name)
        subprocess.run([stock, "-m", "venv", "--without-pip", venv], check=True)
        python = os.path.join(venv, "bin", "python")
        if hook:
            site_packages = subprocess.run(
                [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                check=True, capture_output=True, text=True,
            ).stdout.strip()
            with open(os.path.join(site_packages, "delegating-hook.pth"), "w") as file:
                file.write(DELEGATING_HOOK)
        pythons.append(python)
    return pythons[0], pythons[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stock")
    parser.add_argument("hooked")
    parser.add_argument("--runs", type=int, default=80)
    parser.add_argument("--cache-dir", help="default: a fresh temporary cache, warmed by one run")
    parser.add_argument("--instructions", action="store_true", help="count instructions with callgrind instead of timing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="acstart-") as work:
        report(args, work)


def report(args: argparse.Namespace, work: str) -> None:
    cache = args.cache_dir or os.path.join(work, "cache")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AUTOCOMPILE_"))}
    base.update(PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0", AUTOCOMPILE_CACHE_DIR=cache)
    bare, delegating = floor_venvs(args.stock, work)
    sides = {
        "stock": (args.stock, base),
        "hook": (args.hooked, base),
        "hook disabled": (args.hooked, {**base, "AUTOCOMPILE_DISABLE": "1"}),
        "bare venv": (bare, base),
        "delegating hook": (delegating, base),
    }
    for _ in range(2):  # warm-up: the first run fills the cache and the runtime bundle, the second seals entries
        for python, env in sides.values():
            run_once(python, env)
    if args.instructions:
        for name, (python, env) in sides.items():
            print(f"{name:16s} {instructions(python, env):>13,} instructions")
        return
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.runs):
        for name, (python, env) in sides.items():
            samples[name].append(run_once(python, env))
    for name, values in samples.items():
        quartile = statistics.quantiles(values, n=4)[0]
        print(f"{name:16s} min {min(values):6.2f}  p25 {quartile:6.2f}  median {statistics.median(values):6.2f} ms")


if __name__ == "__main__":
    main()
