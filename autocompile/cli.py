"""The ``autocompile`` command: see and manage the cache.

Every command takes ``--json`` (one JSON document on stdout) and exits 0 on
success, 1 when a check finds a problem, 2 on bad usage. Errors are one line
on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import site
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from . import _config, _evict, _explain, _ext, _install, _loader, _location, _manage, _profiles, _remote, _stats, _store, _warm

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: one line, exit code 2."""


class CommandError(Exception):
    """The command could not do its work: one line, exit code 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


# Helpers shared by the commands ------------------------------------------------


#: Settings given as global options (``autocompile --cache-dir DIR stats``): they override both
#: the config file and the environment, like ``ccache``'s command-line settings.
_command_line: dict[str, str] = {}


def _settings() -> _config.Settings:
    environ = dict(os.environ)
    if "config" in _command_line:
        environ["AUTOCOMPILE_CONFIG"] = _command_line["config"]
    settings = _config.load(environ)
    if "cache_dir" in _command_line:
        settings.set("cache_dir", os.path.abspath(_command_line["cache_dir"]), "command line --cache-dir")
    if "max_size" in _command_line:
        settings.set("max_size", _parse_size_option(_command_line["max_size"]), "command line --max-size")
    return settings


def _parse_size_option(text: str) -> int:
    try:
        return _config.parse_size(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _cache(settings: _config.Settings, create: bool = True) -> _loader.CodeCache:
    """The cache this interpreter uses, after the same trust checks as the hook."""
    root = str(settings["cache_dir"] or "")
    if not root:
        raise CommandError("no cache directory could be determined; set AUTOCOMPILE_CACHE_DIR")
    cache = _loader.CodeCache(_store.Store(root), sys.flags.optimize, "", int(settings["max_size"]))  # type: ignore[call-overload]
    if not create and not os.path.isdir(root):
        return cache
    problem = _location.open_root(root)
    if problem is not None:
        raise CommandError(problem)
    return cache


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
    for item in _evict.area_files(directory):
        st = item.stat(follow_symlinks=False)
        entries += 1
        size += _evict.disk_size(st)
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
    trust_problem = _location.describe_untrusted(root) if root and os.path.isdir(root) else None
    if trust_problem:
        problems.append(trust_problem)
    startup_files = {}
    for directory in _site_packages():
        for name in ("autocompile.pth", "autocompile.start"):
            if os.path.isfile(os.path.join(directory, name)):
                startup_files[name] = os.path.join(directory, name)
    if "autocompile.pth" not in startup_files:
        problems.append("autocompile.pth is not installed in this interpreter's site-packages")
    active = _install.active_finder() is not None
    if not active and settings["enabled"] and "autocompile.pth" in startup_files and not trust_problem:
        problems.append("the hook is not active in this interpreter (started with -S, or start-up failed: try AUTOCOMPILE_LOG=debug)")
    storage, warnings = _storage(root, int(settings["max_size"]))
    warnings += _unmatched_profile_rules(settings)
    document = {
        **storage,
        "warnings": warnings,
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
        ("file system", storage["file_system"] or "unknown"),
        ("free space", _human_size(storage["free_bytes"]) if storage["free_bytes"] is not None else "unknown"),
        ("size", f"{_human_size(storage['size_bytes'])} of {_human_size(settings['max_size']) if settings['max_size'] else 'no'} cap"),
    ]
    remote_rows, remote_warnings, remote_problems = _remote.check_remote(settings)
    rows += remote_rows
    warnings += remote_warnings
    problems += remote_problems
    document["remote"] = dict(remote_rows)
    lines = _table(rows) + [""] + [f"warning: {w}" for w in warnings]
    lines += [f"problem: {p}" for p in problems] if problems else ["no problems found"]
    _emit(args, document, lines)
    return EXIT_PROBLEM if problems else EXIT_OK


#: File systems where locks, hard links or timestamps are unreliable or slow, by ``/proc/mounts`` type.
_NETWORK_FILE_SYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "afs", "9p", "ceph", "glusterfs", "lustre", "gpfs", "davfs"})


def _storage(root: str, max_size: int) -> tuple[dict[str, Any], list[str]]:
    """File system type, free space and size against the cap, with warnings about them."""
    existing = root
    while existing and not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    kind = _file_system(existing)
    try:
        st = os.statvfs(existing)
        free: int | None = st.f_bavail * st.f_frsize
    except (OSError, AttributeError):
        free = None
    size = _evict.total_size(_evict.scan(root))
    warnings = []
    if kind and (kind in _NETWORK_FILE_SYSTEMS or kind.startswith("fuse")):
        warnings.append(f"the cache is on a {kind} file system: locks and hard links may be slow or unreliable")
    if free is not None and max_size and free < max_size - size:
        warnings.append(f"only {_human_size(free)} free: less than the cap lets the cache grow ({_human_size(max_size - size)})")
    if max_size and size > max_size:
        warnings.append(f"the cache ({_human_size(size)}) is over its cap ({_human_size(max_size)}): run autocompile prune")
    return {"file_system": kind, "free_bytes": free, "size_bytes": size, "max_size_bytes": max_size}, warnings


def _file_system(path: str) -> str | None:
    """The type of the file system holding ``path``: the longest mount point above it in ``/proc/mounts``."""
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as file:
            mounts = [line.split()[1:3] for line in file if len(line.split()) >= 3]
    except OSError:
        return None
    path = os.path.realpath(path)
    best, kind = "", None
    for mount_point, fs_type in mounts:
        mount_point = mount_point.replace("\\040", " ")
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, fs_type
    return kind


def _unmatched_profile_rules(settings: _config.Settings) -> list[str]:
    """Profile rules naming no importable top-level module: usually a typo."""
    import pkgutil
    from fnmatch import fnmatchcase

    rules = _profiles.parse(str(settings["profiles"]), settings.values["profiles"].origin, [])
    if not rules:
        return []
    installed = {module.name for module in pkgutil.iter_modules()}
    unmatched = []
    for rule in rules:
        if rule.kind == "path":
            continue
        head = rule.pattern.split(".")[0]
        if not any(fnmatchcase(name, head) for name in installed):
            unmatched.append(f"{rule.origin}: profile rule {rule.pattern!r} matches no installed module")
    return unmatched


def cmd_stats(args: argparse.Namespace) -> int:
    settings = _settings()
    root = str(settings["cache_dir"] or "")
    if args.zero:
        for path in _stats.bucket_paths(root):
            if os.path.exists(path):
                _stats.update_bucket(path, None)
    items = _evict.scan(root)
    size = _evict.total_size(items)
    extensions = _manage.extension_items(items)
    runtime = _runtime_usage(root)
    counts = _stats.totals(root)
    overall = _summary(counts, lambda key: True)
    by_tag = {tag: _summary(counts, lambda key, tag=tag: key[0] == tag) for tag in sorted({key[0] for key in counts})}
    by_package = {
        package: _summary(counts, lambda key, package=package: key[2] == package)
        for package in sorted({key[2] for key in counts})
    }
    document = {
        "cache_dir": root,
        "entries": len(items),
        "size_bytes": size,
        "max_size_bytes": settings["max_size"],
        "extensions": len(extensions),
        "extensions_size_bytes": _evict.total_size(extensions),
        "runtime": runtime,
        **overall,
        "by_python": by_tag,
        "by_package": by_package,
    }
    rows = [
        ("cache directory", root),
        ("entries", len(items)),
        ("size", f"{_human_size(size)} of {_human_size(settings['max_size']) if settings['max_size'] else 'no'} cap"),
        ("hits", overall["hits"]),
        ("misses", f"{overall['misses']} ({overall['reused']} reused by content, {overall['compiles']} compiled)"),
        ("fallbacks", overall["fallbacks"]),
        ("stock pyc", f"{overall['stock_pyc']} (served from __pycache__, not counted in the hit rate)"),
        ("hit rate", _percent(overall["hit_rate"])),
        ("time saved", f"~{overall['saved_seconds']:.2f} s (hits x mean compile time)"),
    ]
    if extensions or overall["extension_loads"] or overall["extension_fallbacks"]:
        rows.append(("extensions", f"{len(extensions)} ({_human_size(_evict.total_size(extensions))}); "
                     f"{overall['extension_loads']} loaded, {overall['extension_fallbacks']} fell back to bytecode"))
    if runtime["bundles"]:
        orphans = f"; {runtime['orphans']} orphaned, see prune --orphans" if runtime["orphans"] else ""
        rows.append(("runtime", f"{runtime['bundles']} bundles, {_human_size(runtime['size_bytes'])} "
                     f"(autocompile's start-up code, not in the cap{orphans})"))
    remote = overall["remote"]
    if any(remote.values()):
        rows.append(("remote tier", f"{remote['hit']} hits, {remote['miss']} misses, {remote['error']} errors, "
                     f"{remote['rejected']} rejected, {_human_size(remote['bytes'])}, {remote['ns'] / 1e9:.2f} s"))
    lines = _table(rows)
    for title, groups in (("python", by_tag), ("package", by_package)):
        lines += _breakdown(title, groups, args.top)
    _emit(args, document, lines)
    return EXIT_OK


def _runtime_usage(root: str) -> dict[str, int]:
    """autocompile's own start-up bundles under ``runtime/``: a few per installed copy, outside the store's cap."""
    files = _manage.runtime_files(root)
    size = 0
    for entry in files.values():
        try:
            size += _evict.disk_size(entry.stat(follow_symlinks=False))
        except OSError:  # removed meanwhile
            pass
    bundles = sum(not name.endswith(_install.ORIGIN_SUFFIX) for name in files)
    return {"bundles": bundles, "size_bytes": size, "orphans": len(_manage.runtime_orphans(files))}


def _breakdown(title: str, groups: dict[str, dict[str, Any]], top: int) -> list[str]:
    """The busiest ``top`` groups as a table; groups served only from stock pycs are left to ``--json``."""
    active = sorted(
        (pair for pair in groups.items() if pair[1]["hits"] + pair[1]["misses"] + pair[1]["fallbacks"]),
        key=lambda pair: -(pair[1]["hits"] + pair[1]["misses"]),
    )
    if not active:
        return []
    rows = [(title, "hits", "misses", "compiles", "fallbacks", "hit rate", "saved")] + [
        (name, g["hits"], g["misses"], g["compiles"], g["fallbacks"], _percent(g["hit_rate"]), f"{g['saved_seconds']:.2f} s")
        for name, g in active[:top]
    ]
    more = [f"... and {len(active) - top} more (see --top or --json)"] if len(active) > top else []
    return ["", *_table(rows), *more]


#: Counters of the remote tier (``_remote``): hits, misses, errors, rejected objects, bytes, time.
_REMOTE_OUTCOMES = (_remote.HIT, _remote.MISS, _remote.ERROR, _remote.REJECTED, _remote.BYTES, _remote.TIME_NS)


def _summary(counts: _stats.Counts, selected: Callable[[tuple[str, str, str]], bool]) -> dict[str, Any]:
    """Hits, misses, hit rate and time saved over the counters ``selected`` picks."""
    outcomes = (
        _stats.HIT, _stats.STOCK_PYC, _stats.REUSED, _stats.COMPILED, _stats.FALLBACK, _stats.COMPILE_NS,
        _ext.EXT, _ext.EXT_FALLBACK, *_REMOTE_OUTCOMES,
    )
    totals = {outcome: 0 for outcome in outcomes}
    for key, n in counts.items():
        if key[1] in totals and selected(key):
            totals[key[1]] += n
    hits, reused, compiled = totals[_stats.HIT], totals[_stats.REUSED], totals[_stats.COMPILED]
    lookups = hits + reused + compiled
    mean_compile_ns = totals[_stats.COMPILE_NS] / compiled if compiled else 0
    return {
        "hits": hits,
        "misses": reused + compiled,
        "reused": reused,
        "compiles": compiled,
        "fallbacks": totals[_stats.FALLBACK],
        "stock_pyc": totals[_stats.STOCK_PYC],
        "extension_loads": totals[_ext.EXT],
        "extension_fallbacks": totals[_ext.EXT_FALLBACK],
        "hit_rate": round(hits / lookups, 4) if lookups else None,
        "mean_compile_ms": round(mean_compile_ns / 1e6, 3),
        "saved_seconds": round(hits * mean_compile_ns / 1e9, 3),
        "remote": {outcome.removeprefix("remote_"): totals[outcome] for outcome in _REMOTE_OUTCOMES},
    }


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def _records(args: argparse.Namespace, root: str) -> list[_manage.Record]:
    """The entries the options ``--python``, ``--package`` and a PATTERN select."""
    return [
        record
        for record in _manage.records(root)
        if _manage.matches(record, getattr(args, "pattern", None), getattr(args, "python", None), getattr(args, "package", None))
    ]


def _when(timestamp: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def cmd_list(args: argparse.Namespace) -> int:
    root = _existing_root()
    selected = sorted(
        (r for r in _records(args, root) if r.is_object() or r.is_extension()),
        key=lambda r: (r.name, r.meta.get("tag", ""), r.kind),
    )
    entries = [
        {
            "key": record.key,
            "kind": record.kind,
            "module": record.name,
            "path": record.meta.get("path", ""),
            "python": record.meta.get("tag", ""),
            "optimize": int(record.meta.get("optimize") or 0),
            "size_bytes": record.item.size,
            "index_links": len(record.item.paths) - 1,
            "last_use": record.item.mtime,
        }
        for record in selected
    ]
    rows = [("module", "kind", "python", "opt", "size", "last use", "source")] + [
        (e["module"] or "?", e["kind"], e["python"], e["optimize"] if e["kind"] == _manage.KIND_CODE else "-",
         _human_size(e["size_bytes"]), _when(e["last_use"]), e["path"])
        for e in entries
    ]
    lines = _table(rows) if entries else []
    lines.append(f"{len(entries)} entries, {_human_size(sum(e['size_bytes'] for e in entries))}")
    _emit(args, {"cache_dir": root, "entries": entries}, lines)
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    settings = _settings()
    try:
        document = _explain.explain(args.module, settings)
    except _explain.NotFound as exc:
        raise UsageError(str(exc)) from None
    if document.get("content_key") and document["verdict"] in (_explain.COMPILE, _explain.CHANGED, _explain.OTHER_BUILD):
        cache = _loader.CodeCache(_store.Store(str(document["cache_dir"]), writable=False), sys.flags.optimize)
        verdict, reason = _remote.explain(settings, cache, str(document["content_key"]))
        document["remote"] = {"verdict": verdict, "reason": reason}
        document["notes"].append(f"remote tier: {verdict}: {reason}")  # type: ignore[union-attr]
    rows = [("module", args.module), ("source", document["origin"] or "-"), ("cache directory", document["cache_dir"])]
    rows += [(name.replace("_", " "), document[name]) for name in ("optimize", "stat_key", "content_key") if name in document]
    if "profile" in document:
        rows.append(("profile", f"{document['profile']} ({document['profile_rule'] or 'no rule matches'})"))
    rows.append(("verdict", document["verdict"]))
    lines = _table(rows) + ["", str(document["reason"])] + [f"note: {note}" for note in document["notes"]]  # type: ignore[union-attr]
    _emit(args, document, lines)
    return EXIT_OK


def cmd_clear(args: argparse.Namespace) -> int:
    root = _existing_root()
    selected = _records(args, root)
    if args.python is None and args.package is None:
        selected = [_manage.Record(item, "", {}) for item in _evict.scan(root)]  # unreadable entries too
    size = _evict.total_size([r.item for r in selected])
    if selected and not args.yes:
        _confirm(f"remove {len(selected)} entries ({_human_size(size)}) from {root}?")
    with _eviction_lock(root):
        freed = _evict.remove([r.item for r in selected])
        _evict.set_estimate(root, _evict.total_size(_evict.scan(root)))
        if args.python is None and args.package is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(root, _ext.NAMES_FILE))  # no extension left: imports skip the tier again
    _emit(args, {"cache_dir": root, "removed": len(selected), "freed_bytes": freed},
          [f"removed {len(selected)} entries ({_human_size(freed)}) from {root}"])
    return EXIT_OK


def _confirm(question: str) -> None:
    """Ask on a terminal; refuse (exit 2) when nobody can answer, as a script must say ``--yes``."""
    if not sys.stdin.isatty():
        raise UsageError("refusing to remove entries without --yes when stdin is not a terminal")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise CommandError("nothing removed")


@contextlib.contextmanager
def _eviction_lock(root: str, timeout: float = 60.0) -> Iterator[None]:
    """Hold the lock the hook's size cap takes (both are ``flock`` on the same file), waiting up to ``timeout``."""
    import filelock

    try:
        with filelock.FileLock(os.path.join(root, _evict.LOCK_FILE), timeout=timeout):
            yield
    except filelock.Timeout:
        raise CommandError(f"another process has been evicting from {root} for {timeout:.0f} s; try again") from None


def cmd_prune(args: argparse.Namespace) -> int:
    settings = _settings()
    root = _existing_root()
    store = _store.Store(root, writable=False)
    entries = _manage.records(root)
    now = time.time()
    reasons = _prune_plan(args, int(settings["max_size"]), store, entries, now)
    victims = [r for r in entries if r.item.ino in reasons]
    if args.orphans:
        runtime = _manage.runtime_orphans(_manage.runtime_files(root))
        reasons.update((r.item.ino, "orphaned") for r in runtime)
        victims += runtime
    stale = _evict.stale_temporaries(root, now)
    size = _evict.total_size([r.item for r in victims] + stale)
    if not args.dry_run:
        with _eviction_lock(root):
            _evict.remove([r.item for r in victims] + stale)
            _evict.set_estimate(root, _evict.total_size(_evict.scan(root)))
    document = {
        "cache_dir": root,
        "dry_run": args.dry_run,
        "removed": len(victims),
        "stale_temporaries": len(stale),
        "freed_bytes": size,
        "entries": [{"module": r.name, "path": r.item.paths[0], "size_bytes": r.item.size, "reason": reasons[r.item.ino]} for r in victims],
    }
    verb = "would remove" if args.dry_run else "removed"
    lines = _table([("module", "reason", "size", "last use")] + [
        (r.name or os.path.basename(r.item.paths[0])[:16], reasons[r.item.ino], _human_size(r.item.size), _when(r.item.mtime)) for r in victims
    ]) if args.dry_run and victims else []
    lines.append(f"{verb} {len(victims)} entries and {len(stale)} stale temporaries, {_human_size(size)}")
    _emit(args, document, lines)
    return EXIT_OK


def _prune_plan(
    args: argparse.Namespace, max_size: int, store: _store.Store, entries: list[_manage.Record], now: float
) -> dict[tuple[int, int], str]:
    """Why each entry to remove goes, by inode.

    With no option, prune does what the size cap does: if the cache is over
    ``max_size``, least recently used entries go down to the low-water mark.
    """
    reasons: dict[tuple[int, int], str] = {}
    if args.orphans:
        reasons.update((r.item.ino, "orphaned") for r in _manage.orphans(store, entries))
    if args.older_than is not None:
        reasons.update((r.item.ino, "unused") for r in entries if r.item.mtime < now - args.older_than)
    remaining = [r.item for r in entries if r.item.ino not in reasons]
    target = args.max_size
    if target is None and not (args.orphans or args.older_than is not None):
        over = max_size and _evict.total_size(remaining) > max_size
        target = int(max_size * _evict.LOW_WATER) if over else None
    if target is not None:
        reasons.update((item.ino, "least recently used") for item in _evict.least_recently_used(remaining, target))
    return reasons


def cmd_verify(args: argparse.Namespace) -> int:
    root = _existing_root()
    store = _store.Store(root, writable=False)
    entries = _manage.records(root)
    sample = set(range(len(entries))) if args.all else _sample(len(entries), args.sample)
    progress = _progress("verifying")
    problems = []
    for n, record in enumerate(entries):
        problem = _manage.check(store, record, recompile=n in sample)
        if problem:
            problems.append((record, problem))
        progress and progress(n + 1, len(entries))
    if args.fix:
        _evict.remove([record.item for record, _problem in problems])
    document = {
        "cache_dir": root,
        "checked": len(entries),
        "recompiled": len(sample),
        "problems": [{"module": r.name, "path": r.item.paths[0], "problem": p} for r, p in problems],
        "fixed": args.fix,
    }
    lines = [f"{'removed' if args.fix else 'bad'}: {r.item.paths[0]}: {p}" for r, p in problems]
    lines.append(f"checked {len(entries)} entries (recompiled {len(sample)}): {len(problems)} problems")
    _emit(args, document, lines)
    return EXIT_PROBLEM if problems else EXIT_OK


def _sample(total: int, size: int) -> set[int]:
    import random

    return set(random.sample(range(total), min(total, size)))


def cmd_export(args: argparse.Namespace) -> int:
    from . import _archive  # here: zipfile is a sixth of the CLI's import time

    root = _existing_root()
    for package in args.packages:
        if not package.replace(".", "").replace("_", "").isalnum():
            raise UsageError(f"not a package name: {package}")
    entries = [r for r in _manage.records(root) if r.is_object() or r.is_extension()]
    if args.packages:
        missing = [p for p in args.packages if not any(_manage.matches(r, package=p) for r in entries)]
        if missing:
            raise CommandError(f"no cached entries for {', '.join(missing)} (import it or run autocompile warm first)")
        entries = [r for r in entries if any(_manage.matches(r, package=p) for p in args.packages)]
    count = _archive.export(_store.Store(root, writable=False), entries, args.file)
    _emit(args, {"file": args.file, "entries": count}, [f"exported {count} entries to {args.file}"])
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    from . import _archive

    if not os.path.isfile(args.file):
        raise UsageError(f"no such archive: {args.file}")
    cache = _cache(_settings())
    try:
        added, present = _archive.import_(cache.store, args.file)
    except _archive.ArchiveError as exc:
        raise CommandError(f"{args.file}: {exc}; nothing imported") from None
    root = cache.store.root
    _evict.set_estimate(root, _evict.total_size(_evict.scan(root)))
    _emit(args, {"file": args.file, "added": added, "already_present": present},
          [f"imported {added} entries from {args.file} ({present} already present)"])
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    settings = _settings()
    values = {name: {"value": _jsonable(s.value), "origin": s.origin} for name, s in settings.values.items()}
    document = {"config_file": settings.config_file, "settings": values, "problems": settings.problems}
    rows = [("setting", "value", "origin")] + [(name, _show(s.value), s.origin) for name, s in settings.values.items()]
    lines = _table(rows) + [f"problem: {p}" for p in settings.problems]
    _emit(args, document, lines)
    return EXIT_PROBLEM if settings.problems else EXIT_OK


def _jsonable(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _show(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1024:
        return f"{value} ({_human_size(value)})"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ", ".join(map(str, value)) or "-"
    return str(value) if value not in (None, "") else "-"


def cmd_optimize(args: argparse.Namespace) -> int:
    from . import _suggest  # here: it needs ast, inspect and dataclasses

    if not (args.suggest or args.apply):
        raise UsageError("optimize needs --suggest (the only mode so far; --apply implies it)")
    for package in args.packages:
        if not package.replace(".", "").replace("_", "").replace("-", "").isalnum():
            raise UsageError(f"not a package name: {package}")
    config_file = os.environ.get("AUTOCOMPILE_CONFIG") or _location.user_config_file()
    if args.apply:
        try:
            _suggest.read_config(config_file)  # before a long scan: a broken file fails now
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    try:
        suggested, excluded, scanned = _suggest.suggest(_site_packages(), args.packages)
    except _suggest.UnknownPackage as exc:
        raise UsageError(str(exc)) from None
    document: dict[str, Any] = {"suggested": suggested, "excluded": excluded, "applied": None}
    lines = _table([("package", "profile")] + [(s["package"], s["profile"]) for s in suggested]) if suggested else ["nothing to suggest"]
    if excluded:
        lines += ["", *_table([("left out", "reason")] + [(e["package"], e["reason"]) for e in excluded])]
    unparsable = sum(p.unparsable for p in scanned)
    lines.append(f"scanned {len(scanned)} packages, {sum(p.files for p in scanned)} files"
                 + (f" ({unparsable} that do not parse, skipped)" if unparsable else ""))
    if args.apply:
        path = config_file
        try:
            before, after = _suggest.apply(path, suggested)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        changed = sorted(k for k in after if before.get(k) != after[k])
        document["applied"] = {"config_file": path, "profiles": after, "changed": changed}
        lines.append(f"wrote {len(changed)} new or changed rules to the [profiles] table of {path} ({len(after)} rules in all)")
    _emit(args, document, lines)
    return EXIT_OK


def _existing_root() -> str:
    """The cache directory, which a command that reads or removes entries needs to exist and be trusted."""
    root = str(_settings()["cache_dir"] or "")
    if not os.path.isdir(root):
        raise CommandError(f"no cache at {root or '(no cache directory)'}")
    problem = _location.describe_untrusted(root)
    if problem:
        raise CommandError(problem)
    return root


def cmd_warm(args: argparse.Namespace) -> int:
    targets = list(args.targets)
    if args.site_packages:
        targets += _site_packages()
    if not targets:
        raise UsageError("warm needs a PATH or PACKAGE, or --site-packages")
    paths = [_resolve_target(target) for target in targets]
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {args.jobs}")
    settings = _settings()
    cache = _cache(settings)
    results = _warm.warm(cache, paths, args.jobs or os.cpu_count() or 1, _progress("warming"))
    summary = {outcome: 0 for outcome in (_warm.COMPILED, _warm.REUSED, _warm.SKIPPED, _warm.FAILED)}
    for _path, outcome, _reason in results:
        summary[outcome] += 1
    # Workers exit without accounting what they wrote: settle the size cap once, here.
    evicted = (_evict.evict(cache.store.root, int(settings["max_size"])) or (0, 0))[0] if settings["max_size"] else 0
    failures = [{"path": path, "reason": reason} for path, outcome, reason in results if outcome == _warm.FAILED]
    document = {"cache_dir": cache.store.root, **summary, "evicted": evicted, "failures": failures}
    lines = _table([(name, n) for name, n in summary.items()] + ([("evicted (size cap)", evicted)] if evicted else []))
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


def cmd_bench(args: argparse.Namespace) -> int:
    from . import _bench

    command = [part for part in args.bench_command if part != "--"] or _bench.default_command()
    if args.runs < 1:
        raise UsageError(f"--runs must be at least 1, not {args.runs}")
    result = _bench.bench(command, args.runs)
    stock, ours = result["stock"], result["autocompile"]  # type: ignore[index]
    rows = [("", "median", "min", "max")]
    rows += [(name, *(f"{side[k]:.3f} s" for k in ("median", "min", "max"))) for name, side in (("stock", stock), ("autocompile", ours))]
    lines = _table(rows) + ["", f"autocompile / stock: {result['ratio']:.3f} (median of {args.runs} pairs)"]
    _emit(args, result, lines)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autocompile", description="Manage the shared cache of compiled Python code.")
    parser.add_argument("--version", action="version", version=f"autocompile {_version()}")
    parser.add_argument("--cache-dir", dest="global_cache_dir", metavar="DIR",
                        help="use this cache directory (overrides config and environment)")
    parser.add_argument("--max-size", dest="global_max_size", metavar="SIZE",
                        help="size cap for this command, e.g. 500M, 2G (overrides config and environment)")
    parser.add_argument("--config", dest="global_config", metavar="FILE", help="read this config file instead of the default one")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        sub.set_defaults(handler=handler)
        return sub

    command("doctor", cmd_doctor, "check the hook, the start-up files and the cache directory")
    stats = command("stats", cmd_stats, "show the cache's size, hits and misses, by interpreter and by package")
    stats.add_argument("--zero", action="store_true", help="reset the counters (entries are kept)")
    stats.add_argument("--top", type=_positive, default=10, metavar="N", help="packages shown in the table (default 10)")
    listing = command("list", cmd_list, "list entries: module, interpreter, optimize level, size, last use, source")
    listing.add_argument("pattern", nargs="?", metavar="PATTERN", help="module name pattern (json.*) or path pattern (*/site-packages/*)")
    listing.add_argument("--python", metavar="TAG", help="only entries of this interpreter cache tag (cpython-311)")
    explain = command("explain", cmd_explain, "say where an import of MODULE would come from and why, without importing it")
    explain.add_argument("module", metavar="MODULE")
    clear = command(
        "clear",
        cmd_clear,
        "remove all entries, or those of one interpreter or package; asks first on a terminal. "
        "Without --yes and without a terminal to ask on, it refuses (exit 2) rather than guess.",
    )
    clear.add_argument("--python", metavar="TAG", help="only entries of this interpreter cache tag (cpython-311)")
    clear.add_argument("--package", metavar="NAME", help="only entries of this package or module")
    clear.add_argument("--yes", "-y", action="store_true", help="do not ask")
    prune = command(
        "prune",
        cmd_prune,
        "remove entries: least recently used down to a size, unused for a time, or orphaned; with no option, "
        "what the size cap does (down to 90%% of max_size if over it). Temporaries older than an hour always go.",
    )
    prune.add_argument("--max-size", type=_size, metavar="SIZE", help="least recently used entries go until the cache fits (500M, 2G, 1.5GiB)")
    prune.add_argument("--older-than", type=_age, metavar="AGE", help="entries unused for AGE go (30d, 12h, 90m, 45s)")
    prune.add_argument("--orphans", action="store_true", help="index entries without object, objects whose source is gone, runtime bundles of removed installs")
    prune.add_argument("--dry-run", action="store_true", help="list what would go, remove nothing")
    verify = command("verify", cmd_verify, "check every entry's header and checksum, and recompile a sample to compare")
    verify.add_argument("--fix", action="store_true", help="remove corrupt or mismatched entries")
    verify.add_argument("--all", action="store_true", help="recompile every entry whose source is unchanged, not a sample")
    verify.add_argument("--sample", type=_positive, default=20, metavar="N", help="entries recompiled without --all (default 20)")
    warm = command("warm", cmd_warm, "compile ahead of time into the cache")
    warm.add_argument("targets", nargs="*", metavar="PATH|PACKAGE")
    warm.add_argument("--site-packages", action="store_true", help="everything in this interpreter's site-packages")
    warm.add_argument("--jobs", type=int, metavar="N", help="parallel workers (default: all cores)")
    export = command("export", cmd_export, "write the entries of PACKAGEs (default: all) to a portable archive")
    export.add_argument("file", metavar="FILE")
    export.add_argument("packages", nargs="*", metavar="PACKAGE")
    importing = command("import", cmd_import, "add the entries of an archive, after checking every one of them")
    importing.add_argument("file", metavar="FILE")
    command("config", cmd_config, "show the effective settings and where each comes from")
    from . import _remote_cli

    _remote_cli.add_arguments(command)
    from . import _cython

    _cython.add_arguments(command("cythonize", _cython.cmd_cythonize,
                                  "compile pure-Python modules into C extensions with Cython (needs autocompile[cython])"))
    bench = command("bench", cmd_bench, "time a command, stock against autocompile, in this environment")
    bench.add_argument("--runs", type=int, default=10, metavar="N", help="runs of each (default 10)")
    bench.add_argument("bench_command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                       help="what to time (default: import every installed distribution's top-level modules)")
    optimize = command("optimize", cmd_optimize, "suggest per-package optimization profiles from a static scan of the installed packages")
    optimize.add_argument("packages", nargs="*", metavar="PACKAGE", help="import or distribution names (default: every installed package)")
    optimize.add_argument("--suggest", action="store_true", help="list the packages where stripping docstrings or asserts is safe, and why others are left out")
    optimize.add_argument("--apply", action="store_true", help="write the suggested rules into the config file's [profiles] table")
    return parser


def _size(text: str) -> int:
    try:
        return _config.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` -> seconds."""
    cleaned = text.strip().lower()
    try:
        value = float(cleaned[:-1]) if cleaned[-1:] in _AGE_UNITS else None
    except ValueError:
        value = None
    if value is None or value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"not an age: {text!r} (examples: 30d, 12h, 90m)")
    return value * _AGE_UNITS[cleaned[-1]]


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _command_line.clear()
        _command_line.update(
            {name: value for name in ("cache_dir", "max_size", "config") if (value := getattr(args, f"global_{name}")) is not None}
        )
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
