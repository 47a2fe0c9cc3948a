"""Compiling ahead of time into the cache, in parallel, exactly as an import would."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator

from . import _loader

COMPILED, REUSED, SKIPPED, FAILED = "compiled", "reused", "skipped", "failed"


def source_files(paths: Iterable[str]) -> Iterator[str]:
    """Every ``.py`` file under ``paths`` (files are taken as they are), skipping ``__pycache__``."""
    for path in paths:
        if os.path.isfile(path):
            yield os.path.abspath(path)
            continue
        for directory, subdirectories, files in os.walk(os.path.abspath(path)):
            subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
            yield from (os.path.join(directory, name) for name in sorted(files) if name.endswith(".py"))


def warm_file(cache: _loader.CodeCache, path: str) -> tuple[str, str]:
    """Put one source file's code in the cache and index it; return ``(outcome, reason)``.

    A file whose index entry is already there is skipped without being read.
    """
    try:
        st = os.stat(path)
        stat_key = cache.stat_key(path, st)
        if cache.load_indexed(stat_key, st) is not None:
            return SKIPPED, ""
        with open(path, "rb") as file:
            source = file.read()
        key = cache.content_key(source)
        outcome = REUSED
        if cache.load_object(key) is None:
            started = _now_ns()
            code = compile(source, path, "exec", dont_inherit=True, optimize=cache.optimize)
            cache.store_code(key, code, cache.meta(_module_name(path), path, source, _now_ns() - started))
            outcome = COMPILED
        cache.remember(stat_key, st, key)
        return outcome, ""
    except (SyntaxError, ValueError) as exc:
        return FAILED, f"{type(exc).__name__}: {exc}"
    except OSError as exc:
        return FAILED, f"{exc.strerror or exc}"


def _now_ns() -> int:
    from time import perf_counter_ns

    return perf_counter_ns()


def _module_name(path: str) -> str:
    """The dotted name ``path`` has under the longest ``sys.path`` entry containing it."""
    best = ""
    for entry in sys.path:
        entry = os.path.abspath(entry or ".")
        if path.startswith(entry + os.sep) and len(entry) > len(best):
            best = entry
    relative = os.path.relpath(path, best) if best else os.path.basename(path)
    name = relative[: -len(".py")].replace(os.sep, ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


_worker_cache: _loader.CodeCache | None = None


def _init_worker(cache: _loader.CodeCache) -> None:
    global _worker_cache
    _worker_cache = cache


def _warm_in_worker(path: str) -> tuple[str, str, str]:
    assert _worker_cache is not None
    return (path, *warm_file(_worker_cache, path))


def warm(
    cache: _loader.CodeCache,
    paths: list[str],
    jobs: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[str, str, str]]:
    """Warm every file; return ``(path, outcome, reason)`` per file, in order."""
    files = list(source_files(paths))
    results: list[tuple[str, str, str]] = []
    if jobs <= 1 or len(files) < 64:
        for path in files:
            results.append((path, *warm_file(cache, path)))
            progress and progress(len(results), len(files))
        return results
    import multiprocessing

    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with context.Pool(jobs, _init_worker, (cache,)) as pool:
        for result in pool.imap(_warm_in_worker, files, chunksize=32):
            results.append(result)
            progress and progress(len(results), len(files))
    return results
