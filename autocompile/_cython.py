"""The Cython tier, ahead of time: build extensions for unmodified Python modules into the cache.

``autocompile cythonize TARGET...`` compiles each pure-Python module with Cython
(language level 3, ``binding=True``, annotations not used as C types: Python
semantics) and the interpreter's own compiler settings, and publishes the
result where the hook finds it (see ``_ext`` for the layout). Nothing here runs
during an import. Cython and setuptools are imported only to build.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from . import _config, _evict, _ext, _keys, _store

BUILT, REUSED, FAILED = "built", "reused", "failed"

#: Directives that keep Python semantics. Cython's defaults for everything else are
#: the safe ones (no ``cdivision``, ``boundscheck`` only matters for typed code).
DIRECTIVES: dict[str, object] = {
    "language_level": 3,
    "binding": True,  # functions keep __signature__, __defaults__, introspection
    "annotation_typing": False,  # ``x: int`` stays an annotation, not a C type check
    "always_allow_keywords": True,
    "embedsignature": True,
}
#: Extra C flags on top of the interpreter's own (``sysconfig``'s CFLAGS etc.).
EXTRA_COMPILE_ARGS: tuple[str, ...] = ()
#: Environment variables that change what ``build_ext`` compiles with.
_COMPILER_ENV = ("CC", "CXX", "CFLAGS", "CPPFLAGS", "LDFLAGS", "LDSHARED", "ARCHFLAGS", "CCSHARED")
_SYSCONFIG_VARS = ("CC", "CFLAGS", "CCSHARED", "LDSHARED", "LDFLAGS", "OPT", "SOABI", "EXT_SUFFIX", "MULTIARCH")


class ToolchainError(Exception):
    """Cython, setuptools, a C compiler or the Python headers are missing: one line."""


class Target(NamedTuple):
    path: str  # absolute path of the .py file
    name: str  # full dotted module name


class Result(NamedTuple):
    path: str
    name: str
    outcome: str  # BUILT, REUSED or FAILED
    reason: str


# Settings and keys ------------------------------------------------------------------


def cython_version() -> str:
    """The Cython version (part of every extension key); raise :class:`ToolchainError` if Cython is missing."""
    try:
        import Cython
        from Cython.Build import cythonize  # noqa: F401
    except ImportError:
        raise ToolchainError('Cython is not installed: pip install "autocompile[cython]" (Cython>=3 and setuptools)') from None
    if int(Cython.__version__.split(".")[0]) < 3:
        raise ToolchainError(f'Cython {Cython.__version__} is too old: pip install "Cython>=3"')
    return str(Cython.__version__)


def check_compiler() -> None:
    """Raise :class:`ToolchainError` saying what to install if building is impossible here."""
    try:
        import setuptools  # noqa: F401
    except ImportError:
        raise ToolchainError('setuptools is not installed: pip install "autocompile[cython]" (Cython>=3 and setuptools)') from None
    import shutil
    import sysconfig

    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    if not compiler or not shutil.which(compiler[0]):
        raise ToolchainError(f"no C compiler: {compiler[0] if compiler else 'cc'} not found (install gcc or clang, e.g. apt-get install gcc)")
    include = sysconfig.get_paths().get("include") or ""
    if not os.path.isfile(os.path.join(include, "Python.h")):
        raise ToolchainError(f"the Python headers are missing ({include}/Python.h): install them (e.g. apt-get install python3-dev)")


def build_settings(cython_version: str) -> dict[str, Any]:
    """Everything besides the source and module name that changes the extension built."""
    import sysconfig

    return {
        "cython": cython_version,
        "directives": DIRECTIVES,
        "extra_compile_args": list(EXTRA_COMPILE_ARGS),
        "sysconfig": {name: str(sysconfig.get_config_var(name)) for name in _SYSCONFIG_VARS},
        "environment": {name: os.environ.get(name, "") for name in _COMPILER_ENV},
        "suffix": _ext.EXT_SUFFIX,
        "cache_tag": sys.implementation.cache_tag or "",
        "hexversion": sys.hexversion,
    }


def extension_context(fullname: str, settings: dict[str, Any]) -> bytes:
    """The key context of an extension: module name, ABI, Cython version, directives, C flags."""
    import json

    return b"\0".join(
        (
            b"autocompile-ext",
            str(_keys.FORMAT_VERSION).encode(),
            fullname.encode("utf-8", "surrogateescape"),
            json.dumps(settings, sort_keys=True).encode(),
        )
    )


def extension_key(source: bytes, fullname: str, settings: dict[str, Any]) -> str:
    return _keys._digest(extension_context(fullname, settings), source)


# Targets ----------------------------------------------------------------------------


def module_name(path: str) -> str | None:
    """The dotted name of the module at ``path``, from the ``__init__.py`` files above it (as Cython does)."""
    directory, filename = os.path.split(os.path.abspath(path))
    stem = filename[: -len(".py")]
    parts = [] if stem == "__init__" else [stem]
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        directory, package = os.path.split(directory)
        parts.insert(0, package)
    if not parts or not all(part.isidentifier() for part in parts):
        return None
    return ".".join(parts)


def _package_modules(directory: str, prefix: str | None) -> Iterable[Target]:
    """Every ``.py`` module under a directory; names from ``prefix`` if given, else from ``__init__.py`` files."""
    directory = os.path.abspath(directory)
    for current, subdirectories, files in os.walk(directory):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__" and d.isidentifier())
        for filename in sorted(files):
            if not filename.endswith(".py") or filename == "__main__.py":
                continue
            path = os.path.join(current, filename)
            if prefix is not None:
                relative = os.path.relpath(path, directory)[: -len(".py")].split(os.sep)
                if relative[-1] == "__init__":
                    relative.pop()
                name: str | None = ".".join([prefix, *relative])
                if not all(part.isidentifier() for part in name.split(".")):  # type: ignore[union-attr]
                    name = None
            else:
                name = module_name(path)
            if name is not None:
                yield Target(path, name)


def resolve_targets(targets: Sequence[str]) -> list[Target]:
    """Files, directories, or installed modules and packages by name (found without importing them)."""
    found: dict[tuple[str, str], Target] = {}
    for target in targets:
        if os.path.isfile(target):
            if not target.endswith(".py"):
                raise ValueError(f"{target} is not a .py file")
            name = module_name(target)
            if name is None:
                raise ValueError(f"{target}: cannot tell its module name")
            items: Iterable[Target] = [Target(os.path.abspath(target), name)]
        elif os.path.isdir(target):
            items = list(_package_modules(target, None))
        else:
            items = _installed(target)
        for item in items:
            found.setdefault((item.path, item.name), item)
    return list(found.values())


def _installed(name: str) -> list[Target]:
    import importlib.util

    if not all(part.isidentifier() for part in name.split(".")):
        raise ValueError(f"no such file, directory or module: {name}")
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ValueError(f"no such file, directory or module: {name}")
    if spec.submodule_search_locations:
        result = []
        for location in spec.submodule_search_locations:
            result += _package_modules(location, name)
        return result
    if spec.origin and spec.origin.endswith(".py"):
        return [Target(spec.origin, name)]
    raise ValueError(f"{name} is not a pure-Python module or package ({spec.origin})")


# Building ---------------------------------------------------------------------------


def _pack(kind: int, key: str, meta: dict[str, str]) -> bytes:
    return _store.pack(kind, key, b"", meta)


def _same_stat(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino, a.st_dev) == (b.st_size, b.st_mtime_ns, b.st_ctime_ns, b.st_ino, b.st_dev)


def build_one(root: str, target: Target, settings: dict[str, Any], retry_failed: bool = False) -> Result:
    """Build (or reuse) the extension of one module and index it; never raises."""
    path, name = target
    try:
        st = os.stat(path)
        with open(path, "rb") as file:
            source = file.read()
        key = extension_key(source, name, settings)
        store = _store.Store(root)
        so_path = _ext.extension_path(root, key)
        failure = None if retry_failed else _recorded_failure(store, key)
        if failure is not None:
            return Result(path, name, FAILED, f"{failure} (recorded earlier; not retried until the source changes)")
        outcome = REUSED
        if not _is_ready(so_path):
            reason = _compile(source, name, os.path.basename(path) == "__init__.py", so_path)
            if reason is not None:
                _record_failure(root, key, target, st, reason)
                return Result(path, name, FAILED, reason)
            outcome = BUILT
        note = _index(store, target, st, key, so_path, settings)
        if retry_failed and not note:  # a recorded failure, or an extension that did not pay, no longer holds
            try:
                os.unlink(_ext.failed_path(root, key))
            except FileNotFoundError:
                pass
        return Result(path, name, outcome, note)
    except OSError as exc:
        return Result(path, name, FAILED, f"{exc.strerror or exc}")
    except Exception as exc:  # a bug here must not stop the other modules
        return Result(path, name, FAILED, f"internal error: {type(exc).__name__}: {exc}")


def _record_failure(root: str, key: str, target: Target, st: os.stat_result, reason: str) -> None:
    """Record why ``key`` is not used: building it is not tried again until the source changes."""
    meta = {"name": target.name, "path": target.path, "reason": reason, "statkey": _ext.index_key(target.name, target.path, st)}
    _store.write_atomic(_ext.failed_path(root, key), _pack(_ext.KIND_EXTFAILED, key, meta))


def _recorded_failure(store: _store.Store, key: str) -> str | None:
    try:
        entry = store.load(_ext.failed_path(store.root, key), key)
    except _store.CorruptEntry:
        return None
    return None if entry is None else entry.meta.get("reason", "failed")


def _is_ready(so_path: str) -> bool:
    try:
        st = os.lstat(so_path)
    except OSError:
        return False
    return (st.st_mode & 0o170000) == 0o100000 and st.st_size > 0


def _index(store: _store.Store, target: Target, st: os.stat_result, key: str, so_path: str, settings: dict[str, Any]) -> str:
    """Write the index entries of ``target`` (its path and its real path) once its source has settled."""
    from ._loader import SETTLE_NS

    wait = (max(st.st_mtime_ns, st.st_ctime_ns) + SETTLE_NS - time.time_ns()) / 1e9
    if wait > 0:
        time.sleep(wait)
    if not _same_stat(st, os.stat(target.path)):
        return "not indexed: the source changed during the build; run again"
    size = str(os.lstat(so_path).st_size)
    for path in _index_paths(target):
        path_st = os.stat(path)
        meta = {"name": target.name, "path": path, "suffix": _ext.EXT_SUFFIX, "size": size, "cython": settings["cython"]}
        _store.write_atomic(_ext.index_path(store.root, _ext.index_key(target.name, path, path_st)), _pack(_ext.KIND_EXTINDEX, key, meta))
    return ""


def _index_paths(target: Target) -> list[str]:
    """The paths an extension is indexed under: the source's path as given, and its real path."""
    return sorted({target.path, os.path.realpath(target.path)})


def _compile(source: bytes, name: str, is_package: bool, so_path: str) -> str | None:
    """Cythonize and compile one module in a temporary directory; publish the ``.so`` at ``so_path``.

    Returns ``None`` on success, else the reason (Cython's or the compiler's first error lines).
    Compiler output is captured at the file-descriptor level, so that the children
    ``build_ext`` starts are captured too.
    """
    import tempfile

    workdir = tempfile.mkdtemp(prefix="autocompile-cython-")
    log_path = os.path.join(workdir, "build.log")
    saved = [os.dup(1), os.dup(2)]
    cwd = os.getcwd()
    try:
        # The file name Cython records (tracebacks, linecache): pkg/sub/mod.py or pkg/__init__.py,
        # relative, so linecache finds the source under any sys.path entry.
        parts = name.split(".")
        relative = os.path.join(*parts, "__init__.py") if is_package else os.path.join(*parts) + ".py"
        source_path = os.path.join(workdir, "src", relative)
        os.makedirs(os.path.dirname(source_path), exist_ok=True)
        with open(source_path, "wb") as file:
            file.write(source)
        sys.stdout.flush()
        sys.stderr.flush()
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.chdir(os.path.join(workdir, "src"))
        try:
            built = _cythonize_and_build(name, relative, workdir)
            error = None
        except BaseException as exc:  # CompileError, DistutilsError, SystemExit from distutils
            built, error = None, exc
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
        if built is None:
            with open(log_path, encoding="utf-8", errors="replace") as file:
                return _reason(file.read(), error)
        with open(built, "rb") as file:
            data = file.read()
        _store.write_atomic(so_path, data)  # a new name per content: never rewrites a mapped file
        return None
    finally:
        for fd in saved:
            os.close(fd)
        os.chdir(cwd)
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


def _cythonize_and_build(name: str, relative: str, workdir: str) -> str:
    """Run Cython and ``build_ext`` (the interpreter's compiler and flags) in the current directory."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    extension = Extension(name, [relative], extra_compile_args=list(EXTRA_COMPILE_ARGS))
    (module,) = cythonize([extension], compiler_directives=dict(DIRECTIVES), quiet=True, force=True, nthreads=0)
    distribution = Distribution({"ext_modules": [module], "script_args": []})
    command = distribution.get_command_obj("build_ext")
    command.build_lib = os.path.join(workdir, "lib")
    command.build_temp = os.path.join(workdir, "temp")
    command.inplace = False
    command.ensure_finalized()
    command.run()
    (output,) = command.get_outputs()
    return str(output)


def _reason(log: str, error: BaseException | None) -> str:
    """The first error lines of a failed build, on one line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if ": error" in line or "Error compiling Cython" in line]
    cython = []
    for line in lines:  # Cython: "path.py:12:4: message" after a source excerpt
        if line.count(":") >= 3 and ".py:" in line and not line.startswith("warning"):
            cython.append(line)
    chosen = cython[:2] or errors[:2] or lines[-2:]
    text = " | ".join(chosen) or (f"{type(error).__name__}: {error}" if error else "unknown error")
    return text[:500]


# Parallel driver --------------------------------------------------------------------

_worker: tuple[str, dict[str, Any], bool] | None = None


def _init_worker(root: str, settings: dict[str, Any], retry_failed: bool) -> None:
    global _worker
    _worker = (root, settings, retry_failed)


def _build_in_worker(target: Target) -> Result:
    assert _worker is not None
    root, settings, retry_failed = _worker
    return build_one(root, target, settings, retry_failed)


def build(
    root: str,
    targets: Sequence[Target],
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    retry_failed: bool = False,
) -> list[Result]:
    """Build the extensions of ``targets`` into the cache at ``root`` with ``jobs`` processes.

    Raises :class:`ToolchainError` when Cython is missing, or a compiler is and
    some module needs building. Modules already built (here, or shipped in an
    archive) are reused; failures are recorded with their reason.
    """
    settings = build_settings(cython_version())
    try:
        check_compiler()
    except ToolchainError:
        if any(_needs_building(root, target, settings, retry_failed) for target in targets):
            raise  # without a compiler, only what is built already can be indexed
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(targets) or 1))
    results: list[Result] = []
    if targets:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # Largest first: the long compiles start early and the pool drains evenly.
        ordered = sorted(targets, key=lambda t: -_size(t.path))
        with ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(root, settings, retry_failed)) as pool:
            futures = [pool.submit(_build_in_worker, target) for target in ordered]
            for future in as_completed(futures):
                results.append(future.result())
                if progress:
                    progress(len(results), len(targets))
    names = {result.name for result in results if result.outcome != FAILED and not result.reason}
    if names:
        add_names(root, names)
    results.sort(key=lambda r: (r.name, r.path))
    return results


def _needs_building(root: str, target: Target, settings: dict[str, Any], retry_failed: bool) -> bool:
    """Whether ``target`` has neither a ready extension nor (unless retried) a recorded failure."""
    try:
        with open(target.path, "rb") as file:
            key = extension_key(file.read(), target.name, settings)
    except OSError:
        return True  # build_one reports it
    if _is_ready(_ext.extension_path(root, key)):
        return False
    return retry_failed or _recorded_failure(_store.Store(root, writable=False), key) is None


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def add_names(root: str, names: Iterable[str]) -> None:
    """Add module names to ``extnames`` (what the hook looks for), under a lock, atomically."""
    import fcntl

    lock = os.open(os.path.join(root, ".extnames.lock"), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = _ext.read_names(root) or frozenset()
        merged = sorted(current | set(names))
        if len(merged) != len(current):
            _store.write_atomic(os.path.join(root, _ext.NAMES_FILE), "".join(f"{n}\n" for n in merged).encode())
    finally:
        os.close(lock)


# Listing ----------------------------------------------------------------------------


def _entries(root: str, area: str) -> Iterable[tuple[str, _store.Entry]]:
    store = _store.Store(root, writable=False)
    for path in sorted(item.path for item in _evict.area_files(os.path.join(root, area))):  # shard, then name
        try:
            entry = store.load(path)
        except _store.CorruptEntry:
            continue
        if entry is not None:
            yield path, entry


def listing(root: str) -> dict[str, list[dict[str, Any]]]:
    """What is built (ready or stale: the source changed since) and what failed, with reasons."""
    built = []
    for path, entry in _entries(root, "extindex"):
        if entry.kind != _ext.KIND_EXTINDEX:
            continue
        name, source = entry.meta.get("name", ""), entry.meta.get("path", "")
        so_path = _ext.extension_path(root, entry.key)
        try:
            current = _ext.index_key(name, source, os.stat(source)) == os.path.basename(path)
        except OSError:
            current = False
        state = "ready" if current and _is_ready(so_path) else ("missing" if not _is_ready(so_path) else "stale")
        built.append({"module": name, "path": source, "state": state, "extension": so_path, "size": _size(so_path), "cython": entry.meta.get("cython", "")})
    failed = []
    for _path, entry in _entries(root, "failed"):
        if entry.kind != _ext.KIND_EXTFAILED:
            continue
        name, source = entry.meta.get("name", ""), entry.meta.get("path", "")
        try:
            current = _ext.index_key(name, source, os.stat(source)) == entry.meta.get("statkey")
        except OSError:
            current = False
        failed.append({"module": name, "path": source, "state": "failed" if current else "failed (source changed since)", "reason": entry.meta.get("reason", "")})
    built.sort(key=lambda d: (d["module"], d["path"]))
    failed.sort(key=lambda d: (d["module"], d["path"]))
    return {"built": built, "failed": failed}


# Choosing hot modules ---------------------------------------------------------------


def profile_command(command: Sequence[str], output: str, quiet_stdout: bool = False) -> int:
    """Run a Python command under cProfile (hook disabled) writing stats to ``output``; its exit code."""
    import shutil
    import subprocess

    if not command:
        raise ValueError("--hot needs a command after --, e.g. -- python app.py")
    program, rest = command[0], list(command[1:])
    executable = shutil.which(program) or program
    base = os.path.basename(program)
    if base.startswith("python") or base.startswith("pypy"):
        if rest[:1] == ["-m"] and len(rest) >= 2:
            argv = [executable, "-m", "cProfile", "-o", output, "-m", *rest[1:]]
        elif rest and not rest[0].startswith("-"):
            argv = [executable, "-m", "cProfile", "-o", output, *rest]
        else:
            raise ValueError(f"cannot profile {' '.join(command)}: give a script or -m MODULE")
    elif os.path.isfile(executable) and _is_python_script(executable):
        argv = [sys.executable, "-m", "cProfile", "-o", output, executable, *rest]
    else:
        raise ValueError(f"{program} is not a Python program (give python SCRIPT, python -m MODULE or a Python console script)")
    env = dict(os.environ, AUTOCOMPILE_DISABLE="1")
    # With --json, stdout is the JSON document: the command's own output goes to stderr.
    return subprocess.run(argv, env=env, stdout=sys.stderr if quiet_stdout else None).returncode


def _is_python_script(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            first = file.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first


def hot_targets(stats_file: str, top: int = 10, share: float = 0.9, exclude: Sequence[str] = ()) -> list[tuple[Target, float]]:
    """Modules with the most self time in a cProfile file: at most ``top``, covering ``share`` of it.

    The standard library (outside site-packages), autocompile itself and
    ``exclude`` (the profiled script: it runs as ``__main__``, not imported) are left out.
    """
    import pstats
    import sysconfig

    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"]) + os.sep
    own = os.path.dirname(os.path.realpath(__file__)) + os.sep
    skipped = {os.path.realpath(path) for path in exclude}
    by_file: dict[str, float] = {}
    for (filename, _line, _function), (_cc, _nc, tottime, _ct, _callers) in pstats.Stats(stats_file).stats.items():  # type: ignore[attr-defined]
        if filename.endswith(".py"):
            by_file[filename] = by_file.get(filename, 0.0) + tottime
    total = sum(by_file.values()) or 1.0
    chosen: list[tuple[Target, float]] = []
    covered = 0.0
    for filename, seconds in sorted(by_file.items(), key=lambda item: -item[1]):
        real = os.path.realpath(filename)
        if not os.path.isfile(real) or real in skipped or real.startswith(own):
            continue
        if real.startswith(stdlib) and "site-packages" not in real:
            continue
        name = module_name(filename)
        if name is None:
            continue
        chosen.append((Target(os.path.abspath(filename), name), seconds))
        covered += seconds
        if len(chosen) >= top or covered >= share * total:
            break
    return chosen


# Keeping only the extensions that make the command faster ------------------------------

#: The environment variable of ``exclude_extensions``, set in the runs that measure the command.
_EXCLUDE_VARIABLE = next(variable for variable, setting in _config._ENVIRONMENT.items() if setting == "exclude_extensions")
#: The speed-up an extension must show to be kept: importing one costs more than
#: importing bytecode (``dlopen``), and a tie within this machine's noise is not a gain.
KEEP_SPEEDUP = 1.02


class Measured(NamedTuple):
    name: str
    path: str
    speedup: float  # median over rounds of: time with no new extension / time with this one alone
    kept: bool
    reason: str  # why it is not kept ("" when it is)


def measure(
    command: Sequence[str],
    modules: Sequence[Target],
    rounds: int,
    excluded: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> list[Measured]:
    """Time ``command`` with each module's extension alone and with none of them, ``rounds`` times each.

    The runs alternate (a round runs every variant once, in a rotating order,
    after one untimed round that warms the caches) and each speed-up is the
    median of the ratios within a round, so a machine that slows down mid-way
    slows both sides of a ratio alike. The hook serves everything as it
    would for the user; only ``exclude_extensions`` (``excluded``, the user's
    own, plus the other new extensions) differs between variants. Raises
    ``OSError`` when the command cannot be run.
    """
    import statistics
    import subprocess

    names = [module.name for module in modules]
    variants = [""] + names  # "": none of the new extensions
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    exits: dict[str, set[int]] = {variant: set() for variant in variants}
    total, done = (rounds + 1) * len(variants), 0
    for round_number in range(rounds + 1):
        shift = round_number % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            patterns = ",".join([*excluded, *(name for name in names if name != variant)])
            env = dict(os.environ, **{_EXCLUDE_VARIABLE: patterns})
            started = time.perf_counter()
            code = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
            if round_number:
                times[variant].append(time.perf_counter() - started)
            exits[variant].add(code)
            done += 1
            if progress:
                progress(done, total)
    measured = []
    for module in modules:
        speedup = statistics.median(without / max(alone, 1e-9) for without, alone in zip(times[""], times[module.name]))
        if exits[module.name] != exits[""]:
            reason = f"the command exited with {sorted(exits[module.name])} with this extension, {sorted(exits[''])} without"
        elif speedup < KEEP_SPEEDUP:
            reason = f"the command ran no faster with this extension than with bytecode ({speedup:.2f}x, median of {rounds} round{'' if rounds == 1 else 's'})"
        else:
            reason = ""
        measured.append(Measured(module.name, module.path, speedup, not reason, reason))
    return measured


def reject(root: str, target: Target, reason: str) -> None:
    """Stop serving the extension of ``target``: its index entries go, a failure record says why."""
    settings = build_settings(cython_version())
    st = os.stat(target.path)
    with open(target.path, "rb") as file:
        key = extension_key(file.read(), target.name, settings)
    _record_failure(root, key, target, st, reason)
    for path in _index_paths(target):
        try:
            os.unlink(_ext.index_path(root, _ext.index_key(target.name, path, os.stat(path))))
        except FileNotFoundError:
            pass


# The ``cythonize`` command ----------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``autocompile cythonize`` (``--json`` is added by cli.py's ``command``)."""
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="installed package or module, .py file or directory; with --hot: the command to profile, after --")
    parser.add_argument("--jobs", type=int, metavar="N", help="parallel builds (default: all cores)")
    parser.add_argument("--list", action="store_true", help="show what is compiled and what failed, and why")
    parser.add_argument("--hot", action="store_true", help="run the command after -- under a profiler and compile the modules with most self time")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="with --hot: at most N modules (default 10)")
    parser.add_argument(
        "--rounds", type=int, default=3, metavar="N",
        help="with --hot: time the command N times with each new extension and without, and keep only those that make it at least 2%% faster (default 3; 0: keep all)",
    )
    parser.add_argument("--retry-failed", action="store_true", help="try again modules whose build failed before")


def cmd_cythonize(args: argparse.Namespace) -> int:
    from . import cli

    if args.list:
        if args.targets or args.hot:
            raise cli.UsageError("--list takes no TARGET and no --hot")
        return _cmd_list(args, cli)
    if args.jobs is not None and args.jobs < 1:
        raise cli.UsageError(f"--jobs must be at least 1, not {args.jobs}")
    if args.top < 1:
        raise cli.UsageError(f"--top must be at least 1, not {args.top}")
    if args.rounds < 0:
        raise cli.UsageError(f"--rounds must be at least 0, not {args.rounds}")
    if not args.targets:
        raise cli.UsageError("cythonize needs a TARGET (package, module, file or directory), --hot -- COMMAND, or --list")
    try:
        cython_version()
    except ToolchainError as exc:
        raise cli.CommandError(str(exc)) from None
    hot: list[dict[str, Any]] = []
    if args.hot:
        targets, hot = _hot(args, cli)
    else:
        try:
            targets = resolve_targets(args.targets)
        except ValueError as exc:
            raise cli.UsageError(str(exc)) from None
        if not targets:
            raise cli.UsageError(f"no Python modules in {' '.join(args.targets)}")
    store = cli._cache(cli._settings()).store
    try:
        results = build(store.root, targets, args.jobs, cli._progress("cythonizing"), args.retry_failed)
    except ToolchainError as exc:
        raise cli.CommandError(str(exc)) from None
    summary = {outcome: sum(1 for r in results if r.outcome == outcome) for outcome in (BUILT, REUSED, FAILED)}
    failures = [{"module": r.name, "path": r.path, "reason": r.reason} for r in results if r.outcome == FAILED]
    notes = [{"module": r.name, "path": r.path, "note": r.reason} for r in results if r.outcome != FAILED and r.reason]
    measured = _keep_faster(args, store.root, results) if args.hot and args.rounds else []
    document = {"cache_dir": store.root, **summary, "failures": failures, "notes": notes, "hot": hot,
                "measured": [m._asdict() for m in measured], "modules": [r._asdict() for r in results]}
    lines = [f"hot: {h['module']} ({h['seconds']:.3f} s self time)" for h in hot]
    lines += [f"measured: {m.name} {m.speedup:.2f}x: " + ("kept" if m.kept else f"not kept: {m.reason}") for m in measured]
    lines += cli._table([(name, n) for name, n in summary.items()])
    lines += [f"failed: {f['module']} ({f['path']}): {f['reason']}" for f in failures[:20]]
    if len(failures) > 20:
        lines.append(f"... and {len(failures) - 20} more (see --json)")
    lines += [f"note: {n['module']}: {n['note']}" for n in notes]
    cli._emit(args, document, lines)
    return cli.EXIT_PROBLEM if results and not summary[BUILT] and not summary[REUSED] else cli.EXIT_OK


def _hot(args: argparse.Namespace, cli: Any) -> tuple[list[Target], list[dict[str, Any]]]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="autocompile-hot-") as directory:
        output = os.path.join(directory, "profile.out")
        try:
            code = profile_command(args.targets, output, quiet_stdout=args.json)
        except ValueError as exc:
            raise cli.UsageError(str(exc)) from None
        if not os.path.isfile(output):
            raise cli.CommandError(f"the command exited with {code} and wrote no profile")
        script = [args.targets[1]] if len(args.targets) > 1 and os.path.isfile(args.targets[1]) else []
        chosen = hot_targets(output, args.top, exclude=script)
    if not chosen:
        raise cli.CommandError("the profile shows no time in importable Python modules outside the standard library")
    return [target for target, _ in chosen], [{"module": t.name, "path": t.path, "seconds": s} for t, s in chosen]


def _keep_faster(args: argparse.Namespace, root: str, results: Sequence[Result]) -> list[Measured]:
    """``--hot``: measure the command with the extensions it indexed; stop serving those that do not pay."""
    from . import cli

    usable = [Target(r.path, r.name) for r in results if r.outcome != FAILED and not r.reason]
    if not usable:
        return []
    excluded = tuple(cli._settings()["exclude_extensions"])  # type: ignore[call-overload]
    try:
        measured = measure(args.targets, usable, args.rounds, excluded, cli._progress("measuring"))
    except OSError as exc:
        raise cli.CommandError(f"cannot run {args.targets[0]} to measure it: {exc.strerror or exc}") from None
    for module in measured:
        if not module.kept:
            reject(root, Target(module.path, module.name), module.reason)
    return measured


def _cmd_list(args: argparse.Namespace, cli: Any) -> int:
    root = str(cli._settings()["cache_dir"] or "")
    document = listing(root) if os.path.isdir(root) else {"built": [], "failed": []}
    rows: list[Sequence[object]] = [("STATE", "MODULE", "SIZE", "SOURCE / REASON")]
    rows += [(d["state"], d["module"], cli._human_size(d["size"]), d["path"]) for d in document["built"]]
    rows += [(d["state"], d["module"], "", f"{d['path']}: {d['reason']}") for d in document["failed"]]
    lines = cli._table(rows) if len(rows) > 1 else ["no extensions built"]
    cli._emit(args, {"cache_dir": root, **document}, lines)
    return cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m autocompile._cython ...``: the ``cythonize`` command on its own, with cli.py's conventions."""
    from . import cli

    parser = cli._Parser(prog="autocompile cythonize", description="compile pure-Python modules into extensions with Cython")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    add_arguments(parser)
    try:
        return cmd_cythonize(parser.parse_args(argv))
    except cli.UsageError as exc:
        sys.stderr.write(f"autocompile: error: {exc}\n")
        return cli.EXIT_USAGE
    except cli.CommandError as exc:
        sys.stderr.write(f"autocompile: error: {exc}\n")
        return cli.EXIT_PROBLEM
    except KeyboardInterrupt:
        sys.stderr.write("autocompile: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
