"""Where the time goes on a warm import: autocompile's hit path against stock ``__pycache__``.

Runs in one process over the standard library's source modules (which have warm
``__pycache__`` files from the interpreter's installation): each step of each
path is timed over every module, repeated, and reported as the median of the
per-round totals divided by the number of modules (microseconds per import).

    python benchmarks/hitpath.py [--rounds 15] [--json FILE]
"""

import argparse
import json
import marshal
import os
import statistics
import sys
import sysconfig
import tempfile
import time
from importlib.machinery import SourceFileLoader
from importlib.util import cache_from_source

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _imp  # noqa: E402

from autocompile import _loader, _location, _store, _warm  # noqa: E402


def stdlib_sources() -> list[str]:
    """Standard-library modules whose stock ``.pyc`` is valid (so stock would hit)."""
    root = sysconfig.get_paths()["stdlib"]
    found = []
    for path in _warm.source_files([root]):
        if "site-packages" in path or "/test" in path or "/idlelib/" in path:
            continue
        try:
            pyc = cache_from_source(path)
            with open(pyc, "rb") as file:
                header = file.read(16)
            st = os.stat(path)
        except OSError:
            continue
        if int.from_bytes(header[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF:
            found.append(path)
    return found


def timed(step, items) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter_ns()
    for item in items:
        step(item)
    return (time.perf_counter_ns() - started) / len(items) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    paths = stdlib_sources()
    with tempfile.TemporaryDirectory() as scratch:
        root = os.path.join(scratch, "cache")
        assert _location.open_root(root) is None
        cache = _loader.CodeCache(_store.Store(root), sys.flags.optimize)
        _warm.warm(cache, paths, jobs=os.cpu_count() or 1)
        stats = {path: os.stat(path) for path in paths}
        stat_keys = {path: cache.stat_key(path, stats[path]) for path in paths}
        index_paths = {path: cache.store.index_path(stat_keys[path]) for path in paths}
        pycs = {path: cache_from_source(path) for path in paths}
        stock_data = {path: open(pycs[path], "rb").read() for path in paths}  # noqa: SIM115
        ours_data = {path: cache.store.read(index_paths[path]) for path in paths}
        missing = [p for p in paths if ours_data[p] is None]
        if missing:
            raise SystemExit(f"{len(missing)} modules were not indexed (changed in the last seconds?)")
        payloads = {path: _store.unpack(ours_data[path]).payload for path in paths}
        loaders = {path: SourceFileLoader("m", path) for path in paths}

        steps = {
            "stock": {
                "stat source": lambda p: os.stat(p),
                "pyc path": lambda p: cache_from_source(p),
                "read pyc": lambda p: loaders[p].get_data(pycs[p]),
                "validate header": lambda p: (stock_data[p][:4], int.from_bytes(stock_data[p][8:12], "little")),
                "unmarshal": lambda p: marshal.loads(memoryview(stock_data[p])[16:]),
                "whole get_code": lambda p: loaders[p].get_code("m"),
            },
            "autocompile": {
                "stat source": lambda p: os.stat(p),
                "stat key (SipHash)": lambda p: cache.stat_key(p, stats[p]),
                "read index entry": lambda p: cache.store.read(index_paths[p]),
                "validate, first read (CRC)": lambda p: _store.unpack(ours_data[p]),
                "validate, sealed": lambda p: _store.unpack(ours_data[p], sealed=True),
                "unmarshal": lambda p: marshal.loads(payloads[p]),
                "unmarshal + fix co_filename": lambda p: _imp._fix_co_filename(marshal.loads(payloads[p]), p),
                "whole get_code": lambda p: _loader.CachedGetCode(loaders[p], cache)("m"),
            },
        }
        results: dict[str, dict[str, float]] = {}
        for side, side_steps in steps.items():
            results[side] = {}
            for name, step in side_steps.items():
                results[side][name] = statistics.median(timed(step, paths) for _ in range(args.rounds))
    width = max(len(name) for side in results.values() for name in side)
    print(f"{len(paths)} standard-library modules, {args.rounds} rounds, Python {sys.version.split()[0]}")
    print("microseconds per import (median of rounds)")
    for side, side_results in results.items():
        print(f"\n{side}")
        for name, value in side_results.items():
            print(f"  {name.ljust(width)}  {value:8.2f}")
    ratio = results["autocompile"]["whole get_code"] / results["stock"]["whole get_code"]
    print(f"\nwhole get_code, autocompile / stock: {ratio:.3f}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"modules": len(paths), "rounds": args.rounds, "python": sys.version, "results": results}, file, indent=2)


if __name__ == "__main__":
    main()
