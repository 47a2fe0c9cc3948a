#!/usr/bin/env python3
"""Remote tier benchmark: an empty local cache with a warm remote, against stock and a warm local cache.

    python benchmarks/remote_bench.py [--runs N] [--url URL] [--packages sympy,docutils,pygments] [--json FILE]

Copies pure-Python packages installed in this interpreter (default: sympy, mpmath,
docutils, pygments) into two source trees, "machine A" and "machine B" (different
paths, no ``__pycache__``), and times whole-process imports on machine B:

* ``stock``: no autocompile, ``PYTHONDONTWRITEBYTECODE=1``, no ``.pyc`` for the packages;
* ``warm local``: autocompile with a warm local cache;
* ``pull + run``: an empty local cache, ``autocompile pull`` from a warm remote, then the
  run (the pull time is included, as in a CI job's first step);
* ``read-through``: an empty local cache, no pull, read-through on every miss.

Machine A fills the remote once (import, then ``push``). Without ``--url`` an nginx
(WebDAV PUT) is started on a loopback port; it must be installed.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
KEY = "benchmark-team-key"


def child_env(cache_dir: str | None, tree: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOCOMPILE_", "PYTHON"))}
    env.update(PYTHONPATH=f"{tree}{os.pathsep}{REPO}", PYTHONDONTWRITEBYTECODE="1", AUTOCOMPILE_CONFIG=os.devnull + ".missing")
    if cache_dir:
        env["AUTOCOMPILE_CACHE_DIR"] = cache_dir
    env.update(extra)
    return env


def start_nginx(workdir: str) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name in ("root", "body"):
        os.makedirs(os.path.join(workdir, name))
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as file:
        file.write(
            f"daemon off; master_process off; pid {workdir}/nginx.pid; error_log {workdir}/error.log warn;\n"
            "events { worker_connections 1024; }\n"
            f"http {{ access_log off; client_body_temp_path {workdir}/body;\n"
            f"  server {{ listen 127.0.0.1:{port}; root {workdir}/root;\n"
            "    location / { dav_methods PUT; create_full_put_path on; dav_access user:rw; client_max_body_size 64m; } } }\n"
        )
    process = subprocess.Popen([binary, "-p", workdir, "-c", conf, "-e", f"{workdir}/error.log"])
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, f"http://127.0.0.1:{port}/bench"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("nginx did not start")


def copy_packages(names: list[str], dest: str) -> None:
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"package {name} is not installed in {sys.executable}")
        source = list(spec.submodule_search_locations)[0]
        shutil.copytree(source, os.path.join(dest, name), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    old = time.time() - 10  # past the settle time, so the stat index takes them at once
    for directory, _subdirectories, files in os.walk(dest):
        for name in files:
            os.utime(os.path.join(directory, name), (old, old))


def cli(args: list[str], env: dict[str, str]) -> dict:
    """The ``autocompile`` command as users run it: the console script next to this interpreter (else ``-m``)."""
    script = os.path.join(os.path.dirname(sys.executable), "autocompile")
    command = [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "autocompile"]
    result = subprocess.run([*command, *args, "--json"], env=env, capture_output=True, text=True)
    if result.returncode not in (0, 1):
        raise SystemExit(result.stderr)
    return json.loads(result.stdout)


def timed(code: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", "import autocompile; autocompile.install()\n" + code], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--url", help="an existing server (default: start nginx on a loopback port)")
    parser.add_argument("--packages", default="sympy,mpmath,docutils,pygments")
    parser.add_argument("--budget-ms", default="50", help="read-through budget for the read-through scenario")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    # autocompile's own modules compiled, as ``pip install`` leaves them: the children
    # import them from this checkout with PYTHONDONTWRITEBYTECODE=1.
    compileall.compile_dir(os.path.join(REPO, "autocompile"), quiet=1)
    packages = args.packages.split(",")
    workload = (
        "import sympy\nx = sympy.Symbol('x'); assert sympy.expand((x + 1) ** 2) == x**2 + 2*x + 1\n"
        "import docutils.core, docutils.parsers.rst\nimport pygments.lexers.python, pygments.formatters.html\n"
        if packages == ["sympy", "mpmath", "docutils", "pygments"]
        else "".join(f"import {name}\n" for name in packages)
    )
    work = tempfile.mkdtemp(prefix="ac-remote-bench-")
    nginx = None
    try:
        url = args.url
        if url is None:
            nginx, url = start_nginx(os.path.join(work, "nginx"))
        tree_a, tree_b = os.path.join(work, "a", "site"), os.path.join(work, "b", "other", "site")
        copy_packages(packages, tree_a)
        copy_packages(packages, tree_b)
        remote = {"AUTOCOMPILE_REMOTE_URL": url, "AUTOCOMPILE_REMOTE_MODE": "read-write", "AUTOCOMPILE_REMOTE_KEY": KEY}
        # Machine A fills the remote.
        cache_a = os.path.join(work, "cache-a")
        timed(workload, child_env(cache_a, tree_a))
        pushed = cli(["push", "--all"], child_env(cache_a, tree_a, **remote))
        print(f"machine A pushed {pushed['pushed']} objects ({pushed['bytes'] / 1e6:.1f} MB) in {pushed['seconds']:.2f} s")
        results: dict[str, list[float]] = {"stock (no pyc)": [], "warm local cache": [], "pull": [], "run after pull": [],
                                           "pull + run": [], "read-through, no pull": []}
        warm = os.path.join(work, "cache-warm")
        timed(workload, child_env(warm, tree_b))
        fetched = 0
        for run in range(args.runs):
            results["stock (no pyc)"].append(timed(workload, child_env(None, tree_b, AUTOCOMPILE_DISABLE="1")))
            results["warm local cache"].append(timed(workload, child_env(warm, tree_b)))
            empty = os.path.join(work, f"cache-empty-{run}")
            started = time.perf_counter()
            pulled = cli(["pull", tree_b], child_env(empty, tree_b, **{**remote, "AUTOCOMPILE_REMOTE_MODE": "read"}))
            pull_time = time.perf_counter() - started
            fetched = pulled["fetched"]
            run_time = timed(workload, child_env(empty, tree_b))
            results["pull"].append(pull_time)
            results["run after pull"].append(run_time)
            results["pull + run"].append(pull_time + run_time)
            through = os.path.join(work, f"cache-through-{run}")
            results["read-through, no pull"].append(
                timed(workload, child_env(through, tree_b, **{**remote, "AUTOCOMPILE_REMOTE_MODE": "read", "AUTOCOMPILE_REMOTE_BUDGET_MS": args.budget_ms}))
            )
        medians = {name: statistics.median(values) for name, values in results.items()}
        warm = results["warm local cache"]
        # As in run.py: the ratio run by run against the warm run of the same round, then its median.
        ratios = {name: statistics.median(v / w for v, w in zip(values, warm)) for name, values in results.items()}
        print(f"\n{sys.implementation.cache_tag}, {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
        print(f"workload: {', '.join(packages)} from {tree_b}; {fetched} objects pulled; median of {args.runs} runs\n")
        print(f"{'':24s} {'median':>11s}   {'ratio of medians':>16s}   {'median of ratios':>16s}  (x warm local)")
        for name, value in medians.items():
            print(f"{name:24s} {value * 1000:8.1f} ms   {value / statistics.median(warm):16.2f}   {ratios[name]:16.2f}")
        if args.json:
            with open(args.json, "w") as file:
                document = {"python": sys.version, "machine": platform.platform(), "runs": results, "medians": medians, "ratios": ratios}
                json.dump(document, file, indent=2)
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
