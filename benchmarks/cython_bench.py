"""Speed of the Cython tier: pyperformance's pure-Python benchmarks as extensions against bytecode.

Downloads the pyperformance sdist (``pip download``; its benchmark programs are
plain files in it), copies each benchmark's ``run_benchmark.py`` as a module
``bm_<name>.py``, builds them with ``autocompile``'s Cython tier, then runs each
in fresh child interpreters with the hook. Each child holds the module twice,
as the hook serves it (the extension) and as bytecode of the same source, and
alternates timed calls of the two after one warm-up call each, so both sides
see the same process and the same moments of this machine; the figure is the
median of the call-by-call ratios over ``--rounds`` children of ``--inner``
calls per side. Then it runs ``autocompile cythonize --hot`` on a script of
each benchmark, which keeps an extension only where it made the script faster,
and measures again as the hook then serves them. Also measures start-up: a generated package of 16 modules,
all extensions against all bytecode (wall time of ``python -c "import ..."``).

    python benchmarks/cython_bench.py [--rounds 3] [--inner 5] [--jobs 2] [--keep-rounds 5] [--work DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from autocompile import _cython  # noqa: E402

PYPERFORMANCE = "pyperformance==1.14.0"
#: benchmark -> the call timed (module ``m``); sized for roughly 0.1-1 s per call under bytecode.
BENCHMARKS = {
    "richards": "m.Richards().run(3)",
    "nbody": "m.bench_nbody(1, 'sun', 20000)",
    "fannkuch": "m.fannkuch(8)",
    "spectral_norm": "m.bench_spectral_norm(1)",
    "float": "m.benchmark(50000)",
    "nqueens": "m.bench_n_queens(8)",
    "go": "m.versus_cpu()",
    "hexiom": "m.main(1, 25)",
    "deltablue": "m.delta_blue(10000)",
    "raytrace": "m.bench_raytrace(1, 60, 60, None)",
}
PYPERF_STUB = "import time\nperf_counter = time.perf_counter\n\nclass Runner:\n    def __init__(self, *a, **k):\n        raise RuntimeError('stub')\n"

CHILD = """\
import importlib.util, sys, json, time
import autocompile
autocompile.install()
sys.dont_write_bytecode = True
sys.path[:0] = [{src!r}, {stubs!r}]
import bm_{name} as served  # what the hook serves: the extension, or bytecode
spec = importlib.util.spec_from_file_location("bm_{name}", served.__file__)
byte = importlib.util.module_from_spec(spec)  # the same source as bytecode, beside it in this process
spec.loader.exec_module(byte)
calls = {{"served": lambda m=served: {call}, "bytecode": lambda m=byte: {call}}}
for call in calls.values():
    call()
times = {{"served": [], "bytecode": []}}
for i in range({inner}):
    for side in (("served", "bytecode") if i % 2 == 0 else ("bytecode", "served")):
        started = time.perf_counter()
        calls[side]()
        times[side].append(time.perf_counter() - started)
print(json.dumps({{"loader": type(served.__loader__).__name__, "times": times}}))
"""


def child_env(cache: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOCOMPILE_", "PYTHON"))}
    env.update(PYTHONPATH=REPO, AUTOCOMPILE_CACHE_DIR=cache, AUTOCOMPILE_CONFIG=os.devnull + ".missing", **extra)
    return env


def prepare(work: str) -> tuple[str, str]:
    src, stubs = os.path.join(work, "src"), os.path.join(work, "stubs")
    os.makedirs(src, exist_ok=True)
    os.makedirs(stubs, exist_ok=True)
    if not glob.glob(os.path.join(work, "pyperformance-*.tar.gz")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", "-d", work, PYPERFORMANCE], check=True)
    (sdist,) = glob.glob(os.path.join(work, "pyperformance-*.tar.gz"))
    with tarfile.open(sdist) as archive:
        for name in BENCHMARKS:
            member = archive.getmember(f"{os.path.basename(sdist)[:-7]}/pyperformance/data-files/benchmarks/bm_{name}/run_benchmark.py")
            data = archive.extractfile(member).read()  # type: ignore[union-attr]
            target = os.path.join(src, f"bm_{name}.py")
            if not os.path.exists(target) or open(target, "rb").read() != data:
                with open(target, "wb") as file:
                    file.write(data)
    with open(os.path.join(stubs, "pyperf.py"), "w") as file:
        file.write(PYPERF_STUB)
    return src, stubs


def startup_package(work: str, modules: int = 16) -> str:
    """A package of ``modules`` modules with the shape of ordinary library code."""
    root = os.path.join(work, "startup")
    package = os.path.join(root, "startpkg")
    os.makedirs(package, exist_ok=True)
    body = []
    for i in range(40):
        body.append(f"def function_{i}(a, b=None, *args, **kwargs):\n    '''Doc {i}.'''\n    if b is None:\n        b = [a] * {i}\n    return [x for x in b if x] + list(args) + sorted(kwargs)\n")
    for i in range(4):
        body.append(
            f"class Thing{i}:\n    '''A class.'''\n    limit = {i}\n\n    def __init__(self, value):\n        self.value = value\n\n"
            f"    def __repr__(self):\n        return f'Thing{i}({{self.value!r}})'\n\n    @property\n    def double(self):\n        return self.value * 2\n"
        )
    text = "import os, collections\n\nCONSTANTS = {" + ", ".join(f"'k{i}': {i}" for i in range(50)) + "}\n\n" + "\n\n".join(body)
    for i in range(modules):
        path = os.path.join(package, f"mod{i}.py")
        with open(path, "w") as file:
            file.write(f"# module {i}\n" + text)
    with open(os.path.join(package, "__init__.py"), "w") as file:
        file.write("".join(f"from . import mod{i}\n" for i in range(modules)))
    return root


def timed_child(code: str, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return elapsed, result.stdout


def compare(
    names: list[str], label: str, options: argparse.Namespace, src: str, stubs: str, env: dict[str, str], kept: dict[str, bool] | None = None
) -> dict[str, dict[str, float]]:
    """Time what the hook serves against bytecode of the same source, alternating calls in each child; print and return the figures.

    ``kept`` is ``None`` when every module should be served as an extension, else which ones are.
    """
    samples: dict[str, dict[str, list[float]]] = {n: {"served": [], "bytecode": []} for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for _round in range(options.rounds):
        for name in names:
            code = CHILD.format(src=src, stubs=stubs, name=name, call=BENCHMARKS[name], inner=options.inner)
            _, out = timed_child(code, env)
            seen = json.loads(out.strip().splitlines()[-1])
            expected = "ExtensionLoader" if kept is None or kept[name] else "SourceFileLoader"
            if seen["loader"] != expected:
                raise RuntimeError(f"{name}: served by {seen['loader']}, expected {expected}")
            for side in samples[name]:
                samples[name][side] += seen["times"][side]
            ratios[name] += [b / s for b, s in zip(seen["times"]["bytecode"], seen["times"]["served"])]
    print(f"{'benchmark':<15}{'bytecode':>12}{label:>12}{'speed-up':>10}   (median of {len(ratios[names[0]])} call-by-call ratios)")
    figures = {}
    for name in names:
        byte, other = statistics.median(samples[name]["bytecode"]), statistics.median(samples[name]["served"])
        speedup = statistics.median(ratios[name])
        figures[name] = {"bytecode_s": byte, "served_s": other, "speedup": speedup, "min_ratio": min(ratios[name]), "max_ratio": max(ratios[name])}
        note = "" if kept is None else ("  (extension)" if kept[name] else "  (bytecode: not kept)")
        print(f"{name:<15}{byte * 1000:>10.1f}ms{other * 1000:>10.1f}ms{speedup:>9.2f}x{note}")
    print(f"{'geometric mean':<39}{geometric_mean(figures):>9.2f}x")
    return figures


def geometric_mean(figures: dict[str, dict[str, float]]) -> float:
    return math.exp(sum(math.log(f["speedup"]) for f in figures.values()) / len(figures))


def keep_if_faster(name: str, rounds: int, work: str, src: str, stubs: str, env: dict[str, str]) -> bool:
    """``autocompile cythonize --hot --top 1 --rounds N`` on a script running the benchmark; whether its extension is kept."""
    script = os.path.join(work, f"run_{name}.py")
    with open(script, "w") as file:
        file.write(f"import sys\nimport autocompile\nautocompile.install()\nsys.path[:0] = [{src!r}, {stubs!r}]\n"
                   f"import bm_{name} as m\nfor _ in range(3):\n    {BENCHMARKS[name]}\n")
    command = [sys.executable, "-m", "autocompile", "cythonize", "--json", "--hot", "--top", "1", "--rounds", str(rounds), "--retry-failed", "--", sys.executable, script]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{name}: cythonize --hot failed: {result.stderr}")
    (verdict,) = [m for m in json.loads(result.stdout)["measured"] if m["name"] == f"bm_{name}"]
    return bool(verdict["kept"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="child processes per benchmark")
    parser.add_argument("--inner", type=int, default=5, help="timed calls per side in each child")
    parser.add_argument("--startup-runs", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--work", help="keep downloads and the cache here")
    parser.add_argument("--only", nargs="*", help="benchmarks to run")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--keep-rounds", type=int, default=5, help="cythonize --hot --rounds: timed runs per variant when choosing what to keep")
    options = parser.parse_args()
    try:
        _cython.cython_version()
        _cython.check_compiler()
    except _cython.ToolchainError as exc:  # before any download: run it with the interpreter that has the extra
        print(f"cython_bench: {exc}", file=sys.stderr)
        return 1
    work = options.work or tempfile.mkdtemp(prefix="cython-bench-")
    cache = os.path.join(work, "cache")
    os.makedirs(cache, mode=0o700, exist_ok=True)
    try:
        src, stubs = prepare(work)
    except subprocess.CalledProcessError:  # pip said why just above
        print(f"cython_bench: could not download {PYPERFORMANCE} with this interpreter's pip", file=sys.stderr)
        return 1
    startup_root = startup_package(work)
    time.sleep(2.1)  # sources must settle before they are indexed
    names = options.only or list(BENCHMARKS)
    targets = [_cython.Target(os.path.join(src, f"bm_{n}.py"), f"bm_{n}") for n in names]
    targets += list(_cython.resolve_targets([os.path.join(startup_root, "startpkg")]))
    started = time.perf_counter()
    results = _cython.build(cache, targets, options.jobs, retry_failed=True)  # index again what an earlier run did not keep
    print(f"build: {time.perf_counter() - started:.1f} s; " + ", ".join(f"{o}={sum(r.outcome == o for r in results)}" for o in ("built", "reused", "failed")))
    for r in results:
        if r.outcome == "failed" or r.reason:
            print(f"  {r.name}: {r.outcome}: {r.reason}")

    env = child_env(cache)
    print("\nevery benchmark's module served as an extension:")
    figures = compare(names, "extension", options, src, stubs, env)
    geomean = geometric_mean(figures)

    # The user's flow: `cythonize --hot` times each program with its extension and without,
    # and stops serving the extensions that do not make it faster; then measure as served.
    kept = {}
    for name in names:
        kept[name] = keep_if_faster(name, options.keep_rounds, work, src, stubs, env)
    print(f"\nas served after `autocompile cythonize --hot --rounds {options.keep_rounds}` (kept: {sum(kept.values())} of {len(names)}):")
    served = compare(names, "served", options, src, stubs, env, kept)
    served_geomean = geometric_mean(served)

    # Start-up: import a 16-module package, all extensions or all bytecode (both from the warm cache).
    startup = {"extension": [], "bytecode": [], "empty": []}
    base = f"import sys; sys.path.insert(0, {startup_root!r})\n"
    prelude = "import autocompile\nfrom autocompile import _install\nautocompile.install()\n"
    codes = {
        "extension": prelude + base + "import startpkg\nassert type(startpkg.mod0.__loader__).__name__ == 'ExtensionLoader'\n",
        "bytecode": prelude + "_install.active_finder().extensions = None\n" + base + "import startpkg\nassert type(startpkg.mod0.__loader__).__name__ == 'SourceFileLoader'\n",
        "empty": prelude + base,
    }
    for mode in codes:  # warm the cache and the page cache
        timed_child(codes[mode], env)
    for i in range(options.startup_runs):
        for mode in (codes if i % 2 == 0 else reversed(list(codes))):
            startup[mode].append(timed_child(codes[mode], env)[0])
    medians = {mode: statistics.median(values) for mode, values in startup.items()}
    print(
        f"\nstart-up, 16 modules: interpreter + hook alone {medians['empty'] * 1000:.1f} ms; "
        f"import from bytecode +{(medians['bytecode'] - medians['empty']) * 1000:.1f} ms; "
        f"from extensions +{(medians['extension'] - medians['empty']) * 1000:.1f} ms"
    )
    machine = f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}, Cython {_cython.cython_version()}"
    print(machine)
    if options.json:
        with open(options.json, "w") as file:
            json.dump({"benchmarks": figures, "geomean": geomean, "served": served, "served_geomean": served_geomean, "kept": kept,
                       "startup_median_s": medians, "machine": machine}, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
