"""The ``autocompile`` command: see and manage the cache.

Every command takes ``--json`` (one JSON document on stdout) and exits 0 on
success, 1 when a check finds a problem, 2 on bad usage. Errors are one line
on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import site
import sys
import sysconfig
from collections.abc import Callable, Sequence

from . import _bootstrap, _config, _loader, _stats, _store, _warm

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: one line, exit code 2."""


class CommandError(Exception):
    """The command could not do its work: one line, exit code 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


# Helpers shared by the commands ------------------------------------------------


def _settings() -> _config.Settings:
    return _config.load()


def _cache(settings: _config.Settings, create: bool = True) -> _loader.CodeCache:
    """The cache this interpreter uses, after the same trust checks as the hook."""
    root = str(settings["cache_dir"] or "")
    if not root:
        raise CommandError("no cache directory could be determined; set AUTOCOMPILE_CACHE_DIR")
    if not create and not os.path.isdir(root):
        return _loader.CodeCache(_store.Store(root), sys.flags.optimize)
    problem = _store.open_root(root)
    if problem is not None:
        raise CommandError(problem)
    return _loader.CodeCache(_store.Store(root), sys.flags.optimize)


def _site_packages() -> list[str]:
    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    if hasattr(site, "getsitepackages"):
        paths += site.getsitepackages()
    seen: list[str] = []
    for path in paths:
        if os.path.isdir(path) and os.path.realpath(path) not in map(os.path.realpath, seen):
            seen.append(path)
    return seen


def _scan(directory: str) -> tuple[int, int]:
    """Number of entries and bytes under one store directory (temporaries excluded)."""
    entries = size = 0
    try:
        shards = list(os.scandir(directory))
    except OSError:
        return 0, 0
    for shard in shards:
        if not shard.is_dir(follow_symlinks=False):
            continue
        for item in os.scandir(shard.path):
            if _store.is_temporary(item.name):
                continue
            st = item.stat(follow_symlinks=False)
            entries += 1
            size += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return entries, size


def _emit(args: argparse.Namespace, document: dict, lines: Sequence[str]) -> None:
    if args.json:
        json.dump(document, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("".join(f"{line}\n" for line in lines))


def _table(rows: Sequence[Sequence[object]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def _progress(label: str) -> Callable[[int, int], None] | None:
    """A one-line progress bar on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        if done == total or done % 25 == 0:
            width = 30
            filled = width * done // max(total, 1)
            sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    return show


# Commands -------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    settings = _settings()
    problems = list(settings.problems)
    root = str(settings["cache_dir"] or "")
    trust_problem = _store.describe_untrusted(root) if root and os.path.isdir(root) else None
    if trust_problem:
        problems.append(trust_problem)
    startup_files = {}
    for directory in _site_packages():
        for name in ("autocompile.pth", "autocompile.start"):
            if os.path.isfile(os.path.join(directory, name)):
                startup_files[name] = os.path.join(directory, name)
    if "autocompile.pth" not in startup_files:
        problems.append("autocompile.pth is not installed in this interpreter's site-packages")
    active = _bootstrap.active_finder() is not None
    if not active and settings["enabled"] and "autocompile.pth" in startup_files and not trust_problem:
        problems.append("the hook is not active in this interpreter (started with -S, or start-up failed: try AUTOCOMPILE_LOG=debug)")
    document = {
        "active": active,
        "enabled": settings["enabled"],
        "python": sys.executable,
        "cache_tag": sys.implementation.cache_tag,
        "cache_dir": root,
        "cache_dir_trusted": bool(root) and trust_problem is None,
        "config_file": settings.config_file,
        "startup_files": startup_files,
        "problems": problems,
    }
    rows = [
        ("hook active", "yes" if active else "no"),
        ("enabled", "yes" if settings["enabled"] else "no (AUTOCOMPILE_DISABLE or config)"),
        ("interpreter", f"{sys.executable} ({sys.implementation.cache_tag})"),
        ("cache directory", f"{root} ({'trusted' if document['cache_dir_trusted'] else 'NOT trusted'})"),
        ("config file", settings.config_file or "none"),
        (".pth file", startup_files.get("autocompile.pth", "missing")),
        (".start file", startup_files.get("autocompile.start", "missing")),
    ]
    lines = _table(rows) + ([""] + [f"problem: {p}" for p in problems] if problems else ["", "no problems found"])
    _emit(args, document, lines)
    return EXIT_PROBLEM if problems else EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    settings = _settings()
    root = str(settings["cache_dir"] or "")
    if args.zero:
        for path in _stats.bucket_paths(root):
            if os.path.exists(path):
                _stats.update_bucket(path, None)
    entries, size = _scan(os.path.join(root, "objects"))
    counts = _stats.totals(root)

    def total(outcome: str) -> int:
        return sum(n for (_tag, kind, _package), n in counts.items() if kind == outcome)

    hits, reused, compiled = total(_stats.HIT), total(_stats.REUSED), total(_stats.COMPILED)
    misses = reused + compiled
    lookups = hits + misses
    document = {
        "cache_dir": root,
        "entries": entries,
        "size_bytes": size,
        "hits": hits,
        "misses": misses,
        "reused": reused,
        "compiles": compiled,
        "fallbacks": total(_stats.FALLBACK),
        "hit_rate": round(hits / lookups, 4) if lookups else None,
    }
    rows = [
        ("cache directory", root),
        ("entries", entries),
        ("size", _human_size(size)),
        ("hits", hits),
        ("misses", f"{misses} ({reused} reused by content, {compiled} compiled)"),
        ("fallbacks", document["fallbacks"]),
        ("hit rate", f"{100 * hits / lookups:.1f}%" if lookups else "-"),
    ]
    _emit(args, document, _table(rows))
    return EXIT_OK


def cmd_warm(args: argparse.Namespace) -> int:
    targets = list(args.targets)
    if args.site_packages:
        targets += _site_packages()
    if not targets:
        raise UsageError("warm needs a PATH or PACKAGE, or --site-packages")
    paths = [_resolve_target(target) for target in targets]
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {args.jobs}")
    cache = _cache(_settings())
    results = _warm.warm(cache, paths, args.jobs or os.cpu_count() or 1, _progress("warming"))
    summary = {outcome: 0 for outcome in (_warm.COMPILED, _warm.REUSED, _warm.FAILED)}
    for _path, outcome, _reason in results:
        summary[outcome] += 1
    failures = [{"path": path, "reason": reason} for path, outcome, reason in results if outcome == _warm.FAILED]
    document = {"cache_dir": cache.store.root, **summary, "failures": failures}
    lines = _table([(name, n) for name, n in summary.items()])
    lines += [f"failed: {f['path']}: {f['reason']}" for f in failures[:20]]
    if len(failures) > 20:
        lines.append(f"... and {len(failures) - 20} more (see --json)")
    _emit(args, document, lines)
    return EXIT_OK


def _resolve_target(target: str) -> str:
    """A path as it is, or an installed package or module by name (without importing it)."""
    if os.path.exists(target):
        return target
    if not target.replace(".", "").replace("_", "").isalnum():
        raise UsageError(f"no such file, directory or package: {target}")
    import importlib.util

    try:
        spec = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise UsageError(f"no such file, directory or package: {target}")
    if spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    if spec.origin and spec.origin.endswith(".py"):
        return spec.origin
    raise UsageError(f"{target} is not a pure-Python module or package")


def _human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autocompile", description="Manage the shared cache of compiled Python code.")
    parser.add_argument("--version", action="version", version=f"autocompile {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        sub.set_defaults(handler=handler)
        return sub

    command("doctor", cmd_doctor, "check the hook, the start-up files and the cache directory")
    stats = command("stats", cmd_stats, "show the cache's size and its hit and miss counts")
    stats.add_argument("--zero", action="store_true", help="reset the counters (entries are kept)")
    warm = command("warm", cmd_warm, "compile ahead of time into the cache")
    warm.add_argument("targets", nargs="*", metavar="PATH|PACKAGE")
    warm.add_argument("--site-packages", action="store_true", help="everything in this interpreter's site-packages")
    warm.add_argument("--jobs", type=int, metavar="N", help="parallel workers (default: all cores)")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.handler(args))
    except UsageError as exc:
        sys.stderr.write(f"autocompile: error: {exc}\n")
        return EXIT_USAGE
    except CommandError as exc:
        sys.stderr.write(f"autocompile: error: {exc}\n")
        return EXIT_PROBLEM
    except OSError as exc:
        sys.stderr.write(f"autocompile: error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}\n")
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        sys.stderr.write("autocompile: interrupted\n")
        return 130
