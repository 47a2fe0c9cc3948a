#!/usr/bin/env python3
"""Benchmark harness for autocompile (standard library only).

    python benchmarks/run.py [--python PATH] [--runs N] [--smoke]
                             [--json FILE] [--workdir DIR] [--keep]

Builds its own venvs (``stock``: pinned packages only; ``ac``: the same files
plus ``pip install <repo root>``), then times whole-process runs of
benchmarks/workload.py and a few micro scenarios (S1-S9, see README.md),
alternating stock / autocompile pair by pair.  Prints an aligned table and
writes every sample to a JSON file.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import workload  # benchmarks/workload.py, next to this file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
REQUIREMENTS = os.path.join(HERE, "requirements.txt")
WORKLOAD = os.path.join(HERE, "workload.py")
DEFAULT_JSON = os.path.join(HERE, "results", "latest.json")
SYNTH_PKG = "acbench_synth"

MISSING_IMPORTS_SCRIPT = r'''
import sys, time
names = ["_acbench_missing_module_%d" % i for i in range(1000)]
t0 = time.perf_counter()
for name in names:
    try:
        __import__(name)
    except ImportError:
        pass
t1 = time.perf_counter()
print("%.6f" % ((t1 - t0) * 1000.0))
'''


class HarnessError(Exception):
    pass


# --------------------------------------------------------------------------
# environment handling: every child gets an explicit environment
# --------------------------------------------------------------------------

_STRIP_PREFIXES = ("PYTHON", "AUTOCOMPILE_")
_STRIP_EXACT = {"VIRTUAL_ENV", "__PYVENV_LAUNCHER__", "CONDA_PREFIX", "PYENV_VERSION"}


def child_env(dont_write, cache_dir=None, disable=False, keep_pip=False):
    """Environment for a child process.

    All PYTHON* and AUTOCOMPILE_* variables of the calling shell are dropped
    and the ones the scenario depends on are set explicitly.
    """
    env = {}
    for key, value in os.environ.items():
        if key.startswith(_STRIP_PREFIXES) or key in _STRIP_EXACT:
            continue
        if key.startswith("PIP_") and not keep_pip:
            continue
        env[key] = value
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONNOUSERSITE"] = "1"
    if dont_write:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    if cache_dir is not None:
        env["AUTOCOMPILE_CACHE_DIR"] = cache_dir
    if disable:
        env["AUTOCOMPILE_DISABLE"] = "1"
    return env


def setup_env(cache_dir=None):
    # setup commands (pip, venv): never write bytecode, never use autocompile
    env = child_env(dont_write=True, cache_dir=cache_dir, disable=True, keep_pip=True)
    return env


def sh(cmd, env, cwd=None, check=True, what=None):
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    if check and proc.returncode != 0:
        raise HarnessError("%s failed (exit %d): %s\n%s" % (
            what or "command", proc.returncode, shlex.join(cmd), proc.stdout[-4000:]))
    return proc


# --------------------------------------------------------------------------
# filesystem helpers
# --------------------------------------------------------------------------

def strip_pycache(root):
    n = 0
    for dirpath, dirnames, _ in os.walk(root):
        if "__pycache__" in dirnames:
            shutil.rmtree(os.path.join(dirpath, "__pycache__"))
            dirnames.remove("__pycache__")
            n += 1
    return n


def count_pyc(root):
    n = 0
    for dirpath, dirnames, filenames in os.walk(root):
        n += sum(1 for f in filenames if f.endswith(".pyc"))
    return n


def new_cache_dir(path):
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkdir(path, 0o700)
    os.chmod(path, 0o700)
    return path


def file_sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def generate_synthetic(dest, n_sub=10, per_sub=20):
    """A synthetic pure-Python package tree: n_sub * per_sub modules."""
    top = os.path.join(dest, SYNTH_PKG)
    os.makedirs(top)
    top_imports = []
    for s in range(n_sub):
        sub = "sub%02d" % s
        os.makedirs(os.path.join(top, sub))
        init_lines = []
        for m in range(per_sub):
            mod = "mod%02d" % m
            lines = ['"""Synthetic module %s.%s.%s."""' % (SYNTH_PKG, sub, mod), "import os", "import re", ""]
            if m > 0:
                lines.append("from . import mod%02d as _prev" % (m - 1))
            lines.append("TABLE = {%s}" % ", ".join("%d: 'v%d'" % (i, i * m) for i in range(40)))
            for f in range(12):
                lines += [
                    "",
                    "def func_%d(a, b=%d, *args, **kw):" % (f, f),
                    "    total = a + b",
                    "    for i in range(%d):" % (f + 3),
                    "        if i %% 3 == 0:\n            total += i * %d\n        else:\n            total -= len(str(i))" % (m + 1),
                    "    return [x for x in (total, a, b) if x] or None",
                ]
            for c in range(3):
                lines += [
                    "",
                    "class Klass%d:" % c,
                    "    attr = %r" % ("text-%d-%d" % (m, c)),
                    "    def __init__(self, value):",
                    "        self.value = value",
                    "    def method(self, other):",
                    "        return {'v': self.value, 'o': other, 'r': re.escape(str(other))}",
                    "    @property",
                    "    def prop(self):",
                    "        return os.path.join('a', str(self.value))",
                ]
            with open(os.path.join(top, sub, mod + ".py"), "w") as f:
                f.write("\n".join(lines) + "\n")
            init_lines.append("from . import %s" % mod)
        with open(os.path.join(top, sub, "__init__.py"), "w") as f:
            f.write("\n".join(init_lines) + "\n")
        top_imports.append("from . import %s" % sub)
    with open(os.path.join(top, "__init__.py"), "w") as f:
        f.write("\n".join(top_imports) + "\n")


# --------------------------------------------------------------------------
# statistics / formatting
# --------------------------------------------------------------------------

def summary(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt_summary(s, unit, scale=1.0, digits=3):
    if s is None:
        return "-"
    return "%.*f %s [%.*f-%.*f]" % (digits, s["median"] * scale, unit, digits, s["min"] * scale,
                                    digits, s["max"] * scale)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --------------------------------------------------------------------------
# the harness
# --------------------------------------------------------------------------

class Harness:
    def __init__(self, args):
        self.args = args
        self.smoke = args.smoke
        self.runs = 2 if args.smoke else args.runs
        self.python = os.path.abspath(args.python)
        self.workdir = args.workdir
        self.samples = []
        self.anomalies = []
        self.checks = []
        self.setup_info = {}
        self.log_out = None
        self.log_err = None

    # ---- logging ------------------------------------------------------
    def log(self, msg):
        print("[%7.1fs] %s" % (time.perf_counter() - self.t_start, msg), flush=True)

    def anomaly(self, msg):
        self.anomalies.append(msg)
        self.log("ANOMALY: " + msg)

    # ---- running children ----------------------------------------------
    def timed(self, cmd, env, cwd=None):
        with open(self.log_out, "w+b") as out, open(self.log_err, "w+b") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, cwd=cwd or self.workdir, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=err)
            _, status, rusage = os.wait4(proc.pid, 0)
            t1 = time.perf_counter()
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
        return {"wall_s": t1 - t0, "maxrss_kib": rusage.ru_maxrss, "rc": proc.returncode,
                "stdout": stdout, "stderr": stderr}

    def workload_cmd(self, venv):
        cmd = [self.vpy(venv), self.workload]
        if self.smoke:
            cmd += ["--synthetic", SYNTH_PKG]
        return cmd

    def record(self, scenario, side, index, res, measured=True, value=None, extra=None):
        sample = {"scenario": scenario, "side": side, "index": index, "measured": measured,
                  "wall_s": res["wall_s"], "maxrss_kib": res["maxrss_kib"], "rc": res["rc"]}
        if value is not None:
            sample["value"] = value
        if extra:
            sample.update(extra)
        if res["stderr"].strip():
            sample["stderr_tail"] = res["stderr"][-2000:]
        self.samples.append(sample)
        return sample

    def run_workload(self, scenario, side, index, venv, env, measured=True):
        res = self.timed(self.workload_cmd(venv), env)
        if res["rc"] != 0:
            raise HarnessError("workload failed in %s/%s run %s (exit %d):\n%s" % (
                scenario, side, index, res["rc"], res["stderr"][-4000:]))
        lines = res["stdout"].split()
        try:
            modules = int(lines[-1])
        except (IndexError, ValueError):
            raise HarnessError("workload printed no module count in %s/%s: %r" % (scenario, side, res["stdout"]))
        ac_mods = compared = None
        for line in res["stdout"].splitlines():
            if line.startswith("autocompile-modules:"):
                ac_mods = int(line.split(":")[1])
            elif line.startswith("compared-modules:"):
                compared = int(line.split(":")[1])
        return self.record(scenario, side, index, res, measured,
                           extra={"modules": modules, "ac_modules": ac_mods, "compared_modules": compared})

    # ---- venv helpers ----------------------------------------------------
    def vdir(self, name):
        return os.path.join(self.workdir, "venvs", name)

    def vpy(self, name):
        return os.path.join(self.vdir(name), "bin", "python")

    def sp(self, name):
        return os.path.join(self.vdir(name), self.sp_rel)

    # ---- setup -----------------------------------------------------------
    def setup(self):
        os.makedirs(self.workdir, exist_ok=True)
        self.log_out = os.path.join(self.workdir, "child.out")
        self.log_err = os.path.join(self.workdir, "child.err")
        scripts = os.path.join(self.workdir, "scripts")
        os.makedirs(scripts, exist_ok=True)
        self.workload = os.path.join(scripts, "workload.py")
        shutil.copy2(WORKLOAD, self.workload)
        self.missing_script = os.path.join(scripts, "missing_imports.py")
        with open(self.missing_script, "w") as f:
            f.write(MISSING_IMPORTS_SCRIPT)

        info = sh([self.python, "-c", "import sys, platform; print(sys.version.split()[0]); "
                   "print(platform.python_implementation()); print(sys.version.replace(chr(10), ' '))"],
                  setup_env(), what="query python")
        ver, impl, full = info.stdout.strip().splitlines()[:3]
        self.setup_info["python"] = {"path": self.python, "version": ver, "implementation": impl, "sys_version": full}
        self.log("target python %s (%s)" % (ver, self.python))

        venvs = os.path.join(self.workdir, "venvs")
        if os.path.exists(venvs):
            shutil.rmtree(venvs)
        os.makedirs(venvs)

        # stock venv
        self.log("creating stock venv")
        sh([self.python, "-m", "venv", self.vdir("stock")], setup_env(), what="venv")
        out = sh([self.vpy("stock"), "-c", "import sysconfig, sys; "
                  "print(__import__('os').path.relpath(sysconfig.get_paths()['purelib'], sys.prefix))"],
                 setup_env(), what="query site-packages").stdout.strip()
        self.sp_rel = out
        if self.smoke:
            synth = os.path.join(self.workdir, "synth")
            if os.path.exists(synth):
                shutil.rmtree(synth)
            generate_synthetic(synth)
            shutil.copytree(os.path.join(synth, SYNTH_PKG), os.path.join(self.sp("stock"), SYNTH_PKG))
            self.setup_info["packages"] = "synthetic (200 modules)"
            wheelhouse = None
        else:
            wheelhouse = os.path.join(self.workdir, "wheelhouse-" + ver)
            marker = os.path.join(wheelhouse, ".complete-" + file_sha(REQUIREMENTS)[:16])
            if not os.path.exists(marker):
                self.log("downloading wheels into %s" % wheelhouse)
                os.makedirs(wheelhouse, exist_ok=True)
                sh([self.python, "-m", "pip", "download", "--disable-pip-version-check", "-q", "-d", wheelhouse,
                    "-r", REQUIREMENTS], setup_env(), what="pip download")
                open(marker, "w").close()
            self.log("installing pinned packages into stock venv (--no-index --no-compile)")
            sh([self.vpy("stock"), "-m", "pip", "install", "--isolated", "--disable-pip-version-check", "-q",
                "--no-index", "--find-links", wheelhouse, "--no-compile", "-r", REQUIREMENTS],
               setup_env(), what="pip install")
            freeze = sh([self.vpy("stock"), "-m", "pip", "freeze", "--isolated"], setup_env(), what="pip freeze")
            self.setup_info["packages"] = freeze.stdout.split()
            self.setup_info["wheels"] = sorted(f for f in os.listdir(wheelhouse) if f.endswith(".whl"))
        strip_pycache(self.vdir("stock"))

        # the ac venv is a copy of stock plus autocompile (and its dependencies,
        # which are then also installed into stock so that both trees differ
        # by autocompile's own files only); S2's venv is a copy of stock.
        self.wheelhouse = wheelhouse if not self.smoke else os.path.join(self.workdir, "wheelhouse-smoke")
        os.makedirs(self.wheelhouse, exist_ok=True)
        shutil.copytree(self.vdir("stock"), self.vdir("ac"), symlinks=True)
        self.install_autocompile()
        shutil.copytree(self.vdir("stock"), self.vdir("stock-nopyc"), symlinks=True)
        for v in ("stock", "ac", "stock-nopyc"):
            strip_pycache(self.vdir(v))

    def freeze(self, venv):
        out = sh([self.vpy(venv), "-m", "pip", "freeze", "--isolated", "--all"], setup_env(), what="pip freeze")
        return set(line.strip() for line in out.stdout.splitlines() if line.strip())

    def install_autocompile(self):
        self.ac_ok = False
        self.setup_info["autocompile"] = {"installed": False}
        src = os.path.join(self.workdir, "src")
        if os.path.exists(src):
            shutil.rmtree(src)
        shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", "benchmarks", "build", "dist", "*.egg-info", "__pycache__", ".venv*", ".tox", ".pytest_cache"))
        wheeldir = os.path.join(self.workdir, "acwheel")
        if os.path.exists(wheeldir):
            shutil.rmtree(wheeldir)
        net = ["--retries", "1", "--timeout", "15"] if self.smoke else []
        # 1. build a wheel of the repository (with the target interpreter's pip)
        errors = []
        for extra in ([], ["--no-build-isolation"]):
            self.log("building the autocompile wheel %s" % " ".join(extra))
            proc = sh([self.python, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", "--no-deps"]
                      + net + extra + ["-w", wheeldir, src], setup_env(), check=False)
            if proc.returncode == 0:
                break
            errors.append(proc.stdout[-1500:])
        else:
            self.anomaly("autocompile could not be built; ac venv has packages only, "
                         "all autocompile columns measure a STOCK interpreter:\n" + "\n".join(errors))
            return
        wheel = os.path.join(wheeldir, [f for f in os.listdir(wheeldir) if f.endswith(".whl")][0])
        # 2. its dependencies into the wheelhouse
        proc = sh([self.python, "-m", "pip", "download", "--disable-pip-version-check", "-q"] + net
                  + ["-d", self.wheelhouse, wheel], setup_env(), check=False)
        if proc.returncode != 0:
            self.log("could not download autocompile's dependencies (offline?): " + proc.stdout[-300:])
        # 3. install into ac, from the wheelhouse only
        before = self.freeze("ac")
        proc = sh([self.vpy("ac"), "-m", "pip", "install", "--isolated", "--disable-pip-version-check", "-q",
                   "--no-compile", "--no-index", "--find-links", self.wheelhouse, wheel], setup_env(), check=False)
        if proc.returncode != 0:
            # e.g. offline smoke run: let pip use the machine's own index / find-links configuration
            self.log("install from the wheelhouse failed, retrying with the machine's pip configuration")
            proc = sh([self.vpy("ac"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                       "--no-compile", "--find-links", self.wheelhouse] + net + [wheel], setup_env(), check=False)
        if proc.returncode != 0:
            self.anomaly("installing the autocompile wheel failed; autocompile columns measure a STOCK "
                         "interpreter:\n" + proc.stdout[-1500:])
            return
        extras = sorted(r for r in self.freeze("ac") - before if not r.lower().startswith("autocompile"))
        self.setup_info["autocompile_dependencies"] = extras
        if extras:
            self.log("installing autocompile's dependencies into stock too: %s" % " ".join(extras))
            sh([self.vpy("stock"), "-m", "pip", "install", "--isolated", "--disable-pip-version-check", "-q",
                "--no-compile", "--no-index", "--find-links", self.wheelhouse, "--no-deps"] + extras,
               setup_env(), what="pip install autocompile dependencies into stock")
        strip_pycache(self.vdir("ac"))
        scratch = new_cache_dir(os.path.join(self.workdir, "caches", "setup"))
        sp = self.sp("ac")
        pths = sorted(f for f in os.listdir(sp) if f.endswith(".pth") and "autocompile" in f.lower())
        if not pths:
            self.anomaly("autocompile installed but no autocompile*.pth in site-packages")
        ver = sh([self.vpy("ac"), "-c", "import autocompile; print(getattr(autocompile, '__version__', '?'))"],
                 child_env(dont_write=True, cache_dir=scratch), check=False)
        if ver.returncode != 0:
            self.anomaly("`import autocompile` fails in the ac venv:\n" + ver.stdout[-1500:])
        stats = self.ac_stats(scratch)
        self.setup_info["autocompile"] = {"installed": True, "wheel": os.path.basename(wheel), "pth": pths,
                                          "version": ver.stdout.strip()[-200:], "stats_works": stats is not None}
        self.ac_ok = bool(pths) and ver.returncode == 0
        if stats is None:
            self.anomaly("`python -m autocompile stats --json` failed")
        shutil.rmtree(scratch)
        strip_pycache(self.vdir("ac"))
        self.log("autocompile installed: %s, pth %s" % (os.path.basename(wheel), pths))

    def ac_stats(self, cache_dir):
        proc = sh([self.vpy("ac"), "-m", "autocompile", "stats", "--json"],
                  child_env(dont_write=True, cache_dir=cache_dir), check=False)
        if proc.returncode != 0:
            return None
        text = proc.stdout
        try:
            stats = json.loads(text[text.index("{"):text.rindex("}") + 1])
        except ValueError:
            return None
        # keep the scalar totals (cache_dir, entries, size_bytes, hits, misses, ...), drop breakdowns
        return {k: v for k, v in stats.items() if not isinstance(v, (dict, list))}

    # ---- environments of the scenarios ---------------------------------
    def env_s1(self):
        return child_env(dont_write=False)

    def env_s2(self):
        return child_env(dont_write=True)

    def env_ac(self, cache_dir, dont_write=True):
        return child_env(dont_write=dont_write, cache_dir=cache_dir)

    def check_ac_clean(self, venv, when):
        """No .pyc may appear in site-packages, except autocompile's own.

        On a start without its bundle (the first, with an empty cache) the
        package is imported by the standard machinery before the hook exists,
        exactly as pip would have compiled it at install time; later starts run
        it from its bundle in the cache.
        """
        sp = self.sp(venv)
        own = os.path.join(sp, "autocompile", "__pycache__")
        dirs = sorted({os.path.relpath(dp, sp) for dp, _, fs in os.walk(sp)
                       if dp != own and any(f.endswith(".pyc") for f in fs)})
        if dirs:
            self.anomaly(".pyc file(s) appeared in %s site-packages %s (removed), in: %s"
                         % (venv, when, ", ".join(dirs[:8])))
        if dirs or os.path.isdir(own):
            strip_pycache(sp)

    # ---- scenarios --------------------------------------------------------
    def phase_warm(self):
        """S1 / S3 / S2 (+ S9 peak RSS from the S1 and S3 runs)."""
        self.log("S1 prep: compiling stock __pycache__ with one run (PYTHONDONTWRITEBYTECODE unset)")
        self.run_workload("S1", "prep", 0, "stock", self.env_s1(), measured=False)
        self.setup_info["stock_pyc_after_prep"] = count_pyc(self.sp("stock"))
        self.cache_main = new_cache_dir(os.path.join(self.workdir, "caches", "main"))
        self.log("S3 prep: filling the autocompile cache with one run")
        self.run_workload("S3", "prep", 0, "ac", self.env_ac(self.cache_main), measured=False)
        self.check_ac_clean("ac", "after filling the cache")
        self.setup_info["cache_after_fill"] = self.ac_stats(self.cache_main) if self.ac_ok else None
        # which modules differ between a stock and an autocompile run (diagnostic)
        lists = {}
        for side, venv, env in (("stock", "stock", self.env_s1()), ("ac", "ac", self.env_ac(self.cache_main))):
            res = self.timed(self.workload_cmd(venv) + ["--list-modules"], env)
            for line in res["stdout"].splitlines():
                if line.startswith("modules: "):
                    lists[side] = set(line.split()[1:])
        if len(lists) == 2:
            self.setup_info["modules_only_in_ac"] = sorted(lists["ac"] - lists["stock"])
            self.setup_info["modules_only_in_stock"] = sorted(lists["stock"] - lists["ac"])
            if lists["ac"] != lists["stock"]:
                self.log("modules only with autocompile: %s; only stock: %s" % (
                    " ".join(self.setup_info["modules_only_in_ac"]), " ".join(self.setup_info["modules_only_in_stock"])))
        for name, venv, env in (("S1", "stock", self.env_s1()), ("S3", "ac", self.env_ac(self.cache_main)),
                                ("S2", "stock-nopyc", self.env_s2())):
            self.run_workload(name, "warmup", 0, venv, env, measured=False)
        self.log("S1/S3/S2: %d rounds" % self.runs)
        for i in range(self.runs):
            order = [("S1", "stock", "stock", self.env_s1()), ("S3", "ac", "ac", self.env_ac(self.cache_main))]
            if i % 2:
                order.reverse()
            order.append(("S2", "stock", "stock-nopyc", self.env_s2()))
            for name, side, venv, env in order:
                self.run_workload(name, side, i, venv, env)
        self.check_ac_clean("ac", "during S3")
        if count_pyc(self.sp("stock-nopyc")):
            self.anomaly("__pycache__ appeared in the S2 venv")
        self.setup_info["cache_after_S3"] = self.ac_stats(self.cache_main) if self.ac_ok else None

    def phase_copy(self):
        """S4: first run in a fresh copy of the ac venv, shared warm cache."""
        self.log("S4: %d fresh venv copies" % self.runs)
        for i in range(self.runs):
            copy = "ac-copy-%d" % i
            shutil.copytree(self.vdir("ac"), self.vdir(copy), symlinks=True)
            order = [("stock", lambda: self.run_workload("S4", "stock", i, "stock", self.env_s1())),
                     ("ac", lambda: self.run_workload("S4", "ac", i, copy, self.env_ac(self.cache_main)))]
            if i % 2:
                order.reverse()
            for _, fn in order:
                fn()
            self.check_ac_clean(copy, "during S4")
            shutil.rmtree(self.vdir(copy))

    def phase_startup(self):
        """S6: python -c pass."""
        n = 5 if self.smoke else max(50, 5 * self.runs)
        self.log("S6: python -c pass, %d pairs" % n)
        envs = {"stock": self.env_s1(), "ac": self.env_ac(self.cache_main)}
        for side in ("stock", "ac", "stock", "ac"):
            self.timed([self.vpy(side), "-c", "pass"], envs[side])
        for i in range(n):
            sides = ["stock", "ac"] if i % 2 == 0 else ["ac", "stock"]
            for side in sides:
                res = self.timed([self.vpy(side), "-c", "pass"], envs[side])
                if res["rc"] != 0:
                    raise HarnessError("python -c pass failed in %s: %s" % (side, res["stderr"][-2000:]))
                self.record("S6", side, i, res)

    def phase_missing(self):
        """S7: 1,000 imports of missing modules, timed in-process."""
        n = self.runs
        self.log("S7: missing imports, %d pairs" % n)
        envs = {"stock": self.env_s1(), "ac": self.env_ac(self.cache_main)}
        for side in ("stock", "ac"):
            self.timed([self.vpy(side), self.missing_script], envs[side])
        for i in range(n):
            sides = ["stock", "ac"] if i % 2 == 0 else ["ac", "stock"]
            for side in sides:
                res = self.timed([self.vpy(side), self.missing_script], envs[side])
                if res["rc"] != 0:
                    raise HarnessError("missing-import script failed in %s: %s" % (side, res["stderr"][-2000:]))
                self.record("S7", side, i, res, value=float(res["stdout"].split()[-1]) / 1000.0)

    def phase_cold(self):
        """S5: first run, empty cache vs stock writing __pycache__."""
        self.log("S5: cold first runs, %d pairs" % self.runs)
        for i in range(self.runs):
            def stock():
                strip_pycache(self.sp("stock"))
                self.run_workload("S5", "stock", i, "stock", child_env(dont_write=False))

            def ac():
                cache = new_cache_dir(os.path.join(self.workdir, "caches", "s5-%d" % i))
                self.run_workload("S5", "ac", i, "ac", self.env_ac(cache, dont_write=False))
                self.check_ac_clean("ac", "during S5 (PYTHONDONTWRITEBYTECODE unset)")
                shutil.rmtree(cache)
            order = [stock, ac] if i % 2 == 0 else [ac, stock]
            for fn in order:
                fn()

    def phase_warm_cmd(self):
        """S8: autocompile warm --site-packages vs compileall -j0."""
        self.s8_available = False
        if not self.ac_ok:
            self.log("S8: unavailable (autocompile not installed)")
            return
        probe_cache = new_cache_dir(os.path.join(self.workdir, "caches", "s8-probe"))
        probe = sh([self.vpy("ac"), "-m", "autocompile", "warm", "--help"],
                   self.env_ac(probe_cache), check=False)
        shutil.rmtree(probe_cache)
        if probe.returncode != 0:
            self.log("S8: unavailable (`python -m autocompile warm --help` exited %d)" % probe.returncode)
            self.setup_info["s8_probe"] = probe.stdout[-1500:]
            return
        self.s8_available = True
        self.log("S8: warm vs compileall, %d pairs" % self.runs)
        for i in range(self.runs):
            def stock():
                strip_pycache(self.sp("stock"))
                res = self.timed([self.vpy("stock"), "-m", "compileall", "-q", "-j0", self.sp("stock")],
                                 child_env(dont_write=False))
                self.record("S8", "stock", i, res)
                if res["rc"] != 0:
                    self.anomaly("compileall exited %d: %s" % (res["rc"], res["stdout"][-500:]))

            def ac():
                cache = new_cache_dir(os.path.join(self.workdir, "caches", "s8-%d" % i))
                res = self.timed([self.vpy("ac"), "-m", "autocompile", "warm", "--site-packages"],
                                 self.env_ac(cache))
                stats = self.ac_stats(cache)
                self.record("S8", "ac", i, res, extra={"cache_stats": stats})
                if res["rc"] != 0:
                    self.anomaly("autocompile warm exited %d: %s" % (res["rc"], (res["stderr"] or res["stdout"])[-800:]))
                self.check_ac_clean("ac", "during S8")
                shutil.rmtree(cache)
            for fn in ([stock, ac] if i % 2 == 0 else [ac, stock]):
                fn()

    # ---- analysis -------------------------------------------------------
    def series(self, scenario, side, key="wall_s"):
        return {s["index"]: s[key] for s in self.samples
                if s["scenario"] == scenario and s["side"] == side and s["measured"] and key in s}

    def row(self, label, scenario_stock, scenario_ac, key="wall_s", kind="ratio", target=None,
            unit="s", scale=1.0, digits=3, ac_side="ac", stock_side="stock", available=True):
        st = self.series(scenario_stock, stock_side, key)
        ac = self.series(scenario_ac, ac_side, key)
        row = {"scenario": label, "kind": kind, "target": target, "unit": unit,
               "stock": summary(list(st.values())), "autocompile": summary(list(ac.values()))}
        pairs = sorted(set(st) & set(ac))
        value = None
        if available and pairs:
            if kind == "ratio":
                per_pair = [ac[i] / st[i] for i in pairs if st[i] > 0]
                row["per_pair_ratios"] = per_pair
                value = statistics.median(per_pair) if per_pair else None
            else:  # difference in display units
                per_pair = [(ac[i] - st[i]) * scale for i in pairs]
                row["per_pair_differences"] = per_pair
                value = statistics.median(per_pair)
                row["difference_of_medians"] = (statistics.median(ac.values()) - statistics.median(st.values())) * scale
        row["value"] = value
        if not available:
            row["met"] = "unavailable"
        elif value is None or target is None:
            row["met"] = "-"
        elif not self.ac_ok:
            row["met"] = "n/a (no autocompile)"
        else:
            row["met"] = "yes" if value <= target else "no"
        row["_fmt"] = (fmt_summary(row["stock"], unit, scale, digits), fmt_summary(row["autocompile"], unit, scale, digits))
        return row

    def analyse(self):
        rows = []
        r = self.row("S1 stock, warm __pycache__ (reference)", "S1", "S1", ac_side="none")
        r["_fmt"] = (r["_fmt"][0], "-")
        rows.append(r)
        rows.append(self.row("S2 stock no pycache (DONTWRITE) vs S3", "S2", "S3", ac_side="ac", stock_side="stock"))
        rows.append(self.row("S3 warm cache vs S1", "S1", "S3", target=1.00))
        rows.append(self.row("S4 fresh venv copy, warm cache vs S1", "S4", "S4", target=1.10))
        rows.append(self.row("S5 first run: empty cache vs writing pycache", "S5", "S5", target=1.05))
        rows.append(self.row("S6 python -c pass (diff, ms)", "S6", "S6", kind="diff", target=1.0,
                             unit="ms", scale=1000.0, digits=2))
        rows.append(self.row("S7 1000 missing imports (in-process)", "S7", "S7", key="value", target=1.05,
                             unit="ms", scale=1000.0, digits=2))
        rows.append(self.row("S8 autocompile warm vs compileall -j0", "S8", "S8", target=1.0,
                             available=getattr(self, "s8_available", False)))
        rows.append(self.row("S9 peak RSS S3 vs S1 (diff, MiB)", "S1", "S3", key="maxrss_kib", kind="diff",
                             target=2.0, unit="MiB", scale=1 / 1024.0, digits=1))
        # S2 against S1 as extra information
        s1 = self.series("S1", "stock")
        s2 = self.series("S2", "stock")
        common = sorted(set(s1) & set(s2))
        self.s2_vs_s1 = statistics.median([s2[i] / s1[i] for i in common]) if common else None
        # module-count check: the workload must import the same modules with and without the
        # hook, its own modules and the few stdlib modules it may import aside (workload.py counts).
        net, ac_counts = {}, {}
        for s in self.samples:
            if s.get("compared_modules") is not None and s["scenario"] in ("S1", "S2", "S3", "S4", "S5"):
                key = "%s/%s" % (s["scenario"], s["side"])
                net.setdefault(key, set()).add(s["compared_modules"])
                if s.get("ac_modules"):
                    ac_counts.setdefault(key, set()).add(s["ac_modules"])
        alln = set().union(*net.values()) if net else set()
        check = {"name": "same sys.modules count, autocompile's modules and %s aside" % ", ".join(workload.HOOK_STDLIB),
                 "counts": {k: sorted(v) for k, v in net.items()},
                 "autocompile_module_counts": {k: sorted(v) for k, v in ac_counts.items()},
                 "ok": len(alln) == 1 and not self.setup_info.get("modules_only_in_stock")}
        self.checks.append(check)
        if not check["ok"]:
            self.anomaly("module counts differ between runs: %s (autocompile's own modules in sys.modules: %s; "
                         "only without it: %s)" % (check["counts"], check["autocompile_module_counts"],
                                                   self.setup_info.get("modules_only_in_stock")))
        return rows

    # ---- output --------------------------------------------------------
    def print_table(self, rows, meta):
        print()
        print("=" * 100)
        if self.smoke:
            print("SMOKE MODE: synthetic package tree, 2 runs per scenario - numbers are NOT meaningful")
        if not self.ac_ok:
            print("WARNING: autocompile is NOT installed in the ac venv - the autocompile column is a stock interpreter")
        for k in ("command", "date", "cpu", "cores", "python", "platform", "autocompile", "git_head", "runs",
                  "workload_modules", "total_runtime_s"):
            print("%-17s %s" % (k + ":", meta.get(k)))
        print()
        header = ("scenario", "stock median [min-max]", "autocompile median [min-max]", "ratio/diff", "target", "met")
        table = [header]
        for r in rows:
            if r["value"] is None:
                val = "-"
            elif r["kind"] == "ratio":
                val = "%.3f" % r["value"]
            else:
                val = "%+.2f %s" % (r["value"], r["unit"])
            if r["target"] is None:
                tgt = "-"
            elif r["kind"] == "ratio":
                tgt = "<= %.2f" % r["target"]
            else:
                tgt = "<= +%g %s" % (r["target"], r["unit"])
            stock_fmt, ac_fmt = r["_fmt"]
            if r["met"] == "unavailable":
                ac_fmt = "unavailable"
            table.append((r["scenario"], stock_fmt, ac_fmt, val, tgt, r["met"]))
        widths = [max(len(str(row[c])) for row in table) for c in range(len(header))]
        for n, row in enumerate(table):
            print("  ".join(str(cell).ljust(widths[c]) for c, cell in enumerate(row)).rstrip())
            if n == 0:
                print("  ".join("-" * w for w in widths))
        print()
        print("ratio = median over pairs of (autocompile / stock); diff = median over pairs of (autocompile - stock)")
        print("S2 row: stock column = stock venv without __pycache__ (PYTHONDONTWRITEBYTECODE=1), "
              "autocompile column = S3; S2/S1 median ratio = %s"
              % ("%.3f" % self.s2_vs_s1 if self.s2_vs_s1 else "-"))
        for c in self.checks:
            print("check: %s: %s" % (c["name"], "OK" if c["ok"] else "FAILED %s" % c["counts"]))
        if self.anomalies:
            print("anomalies:")
            for a in self.anomalies:
                print("  - " + a.replace("\n", "\n    "))
        print("=" * 100)

    def run(self):
        self.t_start = time.perf_counter()
        started = datetime.datetime.now(datetime.timezone.utc)
        error = None
        rows = []
        try:
            self.setup()
            self.phase_warm()
            self.phase_copy()
            self.phase_startup()
            self.phase_missing()
            self.phase_cold()
            self.phase_warm_cmd()
        except HarnessError as exc:
            error = str(exc)
            self.log("ERROR: " + error)
        if self.samples:
            rows = self.analyse()
        total = time.perf_counter() - self.t_start
        git = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, universal_newlines=True)
        s1_mods = sorted({s["modules"] for s in self.samples if s.get("modules") and s["scenario"] == "S1"})
        meta = {
            "command": shlex.join([sys.executable] + sys.argv),
            "date": started.isoformat(timespec="seconds"),
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": "%s (%s)" % (self.setup_info.get("python", {}).get("sys_version"), self.python),
            "harness_python": sys.version.split()[0],
            "platform": platform.platform(),
            "autocompile": self.setup_info.get("autocompile"),
            "git_head": git.stdout.strip() if git.returncode == 0 else "(no commit)",
            "runs": self.runs,
            "smoke": self.smoke,
            "workdir": self.workdir,
            "workload_modules": s1_mods,
            "total_runtime_s": round(total, 1),
        }
        doc = {"meta": meta, "setup": self.setup_info, "error": error,
               "summary": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
               "checks": self.checks, "anomalies": self.anomalies, "samples": self.samples}
        os.makedirs(os.path.dirname(os.path.abspath(self.args.json)), exist_ok=True)
        with open(self.args.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        if rows:
            self.print_table(rows, meta)
        print("JSON written to %s" % self.args.json)
        if error:
            return 1
        if any(not c["ok"] for c in self.checks if not c.get("informational")) and not self.smoke:
            return 2
        return 0


def harness_arguments(doc, json_default, runs_help, smoke_help):
    """The options every harness script shares (this one and those that reuse ``Harness``)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", default=sys.executable, help="interpreter to build the venvs from (default: this one)")
    p.add_argument("--runs", type=int, default=10, help=runs_help)
    p.add_argument("--smoke", action="store_true", help=smoke_help)
    p.add_argument("--json", default=json_default, help="where to write all samples (default %(default)s)")
    p.add_argument("--workdir", help="work directory (default: a new temp dir under /tmp, removed unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    return p


def main(argv=None):
    p = harness_arguments(__doc__, DEFAULT_JSON, "measured runs (pairs) per scenario (default 10)",
                          "tiny synthetic workload, 2 runs: checks the harness only")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    temp = args.workdir is None
    if temp:
        args.workdir = tempfile.mkdtemp(prefix="acbench-", dir="/tmp")
    args.workdir = os.path.abspath(args.workdir)
    rc = Harness(args).run()
    if temp and not args.keep and rc == 0:
        shutil.rmtree(args.workdir, ignore_errors=True)
    elif temp:
        print("work directory kept: %s" % args.workdir)
    return rc


if __name__ == "__main__":
    sys.exit(main())
