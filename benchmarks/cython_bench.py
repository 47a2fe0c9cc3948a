"""Speed of the Cython tier: pyperformance's pure-Python benchmarks as extensions against bytecode.

Downloads the pyperformance sdist (``pip download``; its benchmark programs are
plain files in it), copies each benchmark's ``run_benchmark.py`` as a module
``bm_<name>.py``, builds them with ``autocompile``'s Cython tier, then runs each
in fresh child interpreters with the hook, its module served as an extension
or as bytecode, alternating the two in the same run. Each child does one
warm-up call and ``--inner`` timed calls; the figure per mode is the median of
all timed calls. Also measures start-up: a generated package of 16 modules,
all extensions against all bytecode (wall time of ``python -c "import ..."``).

    python benchmarks/cython_bench.py [--rounds 3] [--inner 5] [--jobs 2] [--work DIR] [--json FILE]
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
import sys, json, time
import autocompile
from autocompile import _install
autocompile.install()
if not {ext}:  # the bytecode side: the same cache, with the Cython tier switched off in this process
    _install.active_finder().extensions = None
sys.path[:0] = [{src!r}, {stubs!r}]
import bm_{name} as m
loader = type(m.__loader__).__name__
m.__dict__  # noqa
call = lambda: {call}
call()
times = []
for _ in range({inner}):
    started = time.perf_counter()
    call()
    times.append(time.perf_counter() - started)
print(json.dumps({{"loader": loader, "times": times}}))
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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="child processes per benchmark and mode")
    parser.add_argument("--inner", type=int, default=5, help="timed calls per child")
    parser.add_argument("--startup-runs", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--work", help="keep downloads and the cache here")
    parser.add_argument("--only", nargs="*", help="benchmarks to run")
    parser.add_argument("--json", help="write the figures here")
    options = parser.parse_args()
    work = options.work or tempfile.mkdtemp(prefix="cython-bench-")
    cache = os.path.join(work, "cache")
    os.makedirs(cache, mode=0o700, exist_ok=True)
    src, stubs = prepare(work)
    startup_root = startup_package(work)
    time.sleep(2.1)  # sources must settle before they are indexed
    names = options.only or list(BENCHMARKS)
    targets = [_cython.Target(os.path.join(src, f"bm_{n}.py"), f"bm_{n}") for n in names]
    targets += list(_cython.resolve_targets([os.path.join(startup_root, "startpkg")]))
    started = time.perf_counter()
    results = _cython.build(cache, targets, options.jobs)
    print(f"build: {time.perf_counter() - started:.1f} s; " + ", ".join(f"{o}={sum(r.outcome == o for r in results)}" for o in ("built", "reused", "failed")))
    for r in results:
        if r.outcome == "failed" or r.reason:
            print(f"  {r.name}: {r.outcome}: {r.reason}")

    figures: dict[str, dict[str, float]] = {}
    samples: dict[str, dict[str, list[float]]] = {n: {"extension": [], "bytecode": []} for n in names}
    env = child_env(cache)
    for _round in range(options.rounds):
        for name in names:
            for mode in (("extension", "bytecode") if _round % 2 == 0 else ("bytecode", "extension")):
                code = CHILD.format(ext=mode == "extension", src=src, stubs=stubs, name=name, call=BENCHMARKS[name], inner=options.inner)
                _, out = timed_child(code, env)
                seen = json.loads(out.strip().splitlines()[-1])
                expected = "ExtensionLoader" if mode == "extension" else "SourceFileLoader"
                if seen["loader"] != expected:
                    raise RuntimeError(f"{name}: {mode} run loaded by {seen['loader']}")
                samples[name][mode] += seen["times"]
    print(f"\n{'benchmark':<15}{'bytecode':>12}{'extension':>12}{'speed-up':>10}")
    ratios = []
    for name in names:
        byte, ext = statistics.median(samples[name]["bytecode"]), statistics.median(samples[name]["extension"])
        ratios.append(byte / ext)
        figures[name] = {"bytecode_s": byte, "extension_s": ext, "speedup": byte / ext}
        print(f"{name:<15}{byte * 1000:>10.1f}ms{ext * 1000:>10.1f}ms{byte / ext:>9.2f}x")
    geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print(f"{'geometric mean':<39}{geomean:>9.2f}x")

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
            json.dump({"benchmarks": figures, "geomean": geomean, "startup_median_s": medians, "machine": machine}, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
