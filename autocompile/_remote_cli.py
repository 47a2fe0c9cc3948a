"""``autocompile pull`` and ``autocompile push``: the remote tier in batch, in parallel.

Registered by ``cli.build_parser`` through :func:`add_arguments`; uses the
command-line helpers of ``cli`` (imported when a command runs, not before).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from . import _config, _evict, _loader, _remote, _store, _warm

FETCHED, PUSHED, PRESENT, MISSING, FAILED, REJECTED = "fetched", "pushed", "present", "missing", "failed", "rejected"
DEFAULT_JOBS = 16
T = TypeVar("T")


def add_arguments(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``pull`` and ``push`` with ``cli.build_parser``'s ``command(name, handler, help)`` factory."""
    pull = command("pull", cmd_pull, "fetch from the remote tier the compiled code of PACKAGEs or PATHs this environment needs")
    pull.add_argument("targets", nargs="*", metavar="PATH|PACKAGE")
    pull.add_argument("--site-packages", action="store_true", help="everything in this interpreter's site-packages")
    pull.add_argument("--jobs", type=int, metavar="N", help=f"parallel requests (default {DEFAULT_JOBS})")
    pull.add_argument("--each", action="store_true",
                      help="also ask for every object not in the server's packs, one request each (default: only when there are no packs)")
    push = command("push", cmd_push, "upload to the remote tier the cached code of PACKAGEs or PATHs the server lacks")
    push.add_argument("targets", nargs="*", metavar="PATH|PACKAGE")
    push.add_argument("--site-packages", action="store_true", help="everything in this interpreter's site-packages")
    push.add_argument("--all", action="store_true", help="every object in the local cache")
    push.add_argument("--queue", action="store_true", help="the objects queued by imports (remote_mode = read-write; published without a pack)")
    push.add_argument("--jobs", type=int, metavar="N", help=f"parallel requests (default {DEFAULT_JOBS})")


def _remote_config(settings: _config.Settings, write: bool) -> _remote.Config:
    from .cli import CommandError

    config = _remote.Config(settings)
    if config.mode == _remote.OFF and not config.problems:
        raise CommandError("the remote tier is off: set remote_url and remote_mode (AUTOCOMPILE_REMOTE_URL, AUTOCOMPILE_REMOTE_MODE)")
    if config.problems:
        raise CommandError(config.problems[0])
    if write and not config.writable:
        raise CommandError("push needs remote_mode = read-write and a remote_key: without a key the remote tier is read-only")
    return config


def _targets(args: argparse.Namespace) -> list[str]:
    from .cli import UsageError, _resolve_target, _site_packages

    targets = list(args.targets)
    if args.site_packages:
        targets += _site_packages()
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {args.jobs}")
    return [_resolve_target(target) for target in targets]


class _Pool:
    """One command's worker threads, each with its own kept-alive connection.

    Plain threads, not ``concurrent.futures``: that imports ``logging``, 15 ms of
    every pull's start.
    """

    def __init__(self, config: _remote.Config, jobs: int) -> None:
        self.config = config
        self.jobs = jobs
        self.local = threading.local()
        self.clients: list[_remote.Client] = []
        self.lock = threading.Lock()

    def __enter__(self) -> "_Pool":
        return self

    def __exit__(self, *exc_info: object) -> None:
        for client in self.clients:
            client.close()

    def client(self) -> _remote.Client:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = _remote.Client(self.config)
            with self.lock:
                self.clients.append(client)
        return client

    def background(self, call: Callable[[], T]) -> Callable[[], T]:
        """Start ``call`` in a thread; return the function that waits for its result (or raises its error)."""
        outcome: list[tuple[bool, object]] = []

        def target() -> None:
            try:
                outcome.append((True, call()))
            except BaseException as exc:
                outcome.append((False, exc))

        thread = threading.Thread(target=target, daemon=True)
        thread.start()

        def result() -> T:
            thread.join()
            ok, value = outcome[0]
            if not ok:
                raise value  # type: ignore[misc]
            return value  # type: ignore[return-value]

        return result

    def run(self, work: Callable[[str], tuple[str, str]], keys: list[str], progress) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
        """``work`` on every key in parallel: ``(key, outcome, reason)`` in order."""
        results: list[tuple[str, str, str]] = [("", "", "")] * len(keys)
        indexes = iter(range(len(keys)))  # shared: each key is taken by one thread
        done = threading.Semaphore(0)
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                for n in indexes:
                    results[n] = _outcome(work, keys[n])
                    done.release()
            except BaseException as exc:  # a bug: raised in the command's thread
                errors.append(exc)
                done.release()

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(self.jobs, len(keys)))]
        for thread in threads:
            thread.start()
        for count in range(1, len(keys) + 1):
            done.acquire()
            if errors:
                raise errors[0]
            progress and progress(count, len(keys))
        for thread in threads:
            thread.join()
        return results

    @property
    def bytes(self) -> int:
        return sum(client.bytes for client in self.clients)


def _outcome(work: Callable[[str], tuple[str, str]], key: str) -> tuple[str, str, str]:
    """``(key, *work(key))``, with remote and I/O errors as outcomes."""
    try:
        return (key, *work(key))
    except _remote.Rejected as exc:
        return key, REJECTED, str(exc)
    except (_remote.RemoteError, OSError) as exc:
        return key, FAILED, str(exc)


def _summarise(args, config, outcomes: Iterable[str], results, extra: dict, started: float, pool: _Pool) -> int:  # type: ignore[no-untyped-def]
    from .cli import EXIT_OK, EXIT_PROBLEM, _emit, _human_size, _table

    summary = {outcome: 0 for outcome in outcomes}
    for _key, outcome, _reason in results:
        summary[outcome] = summary.get(outcome, 0) + 1
    for outcome, n in extra.items():
        summary[outcome] = summary.get(outcome, 0) + n
    failures = [{"key": key, "outcome": outcome, "reason": reason} for key, outcome, reason in results if outcome in (FAILED, REJECTED)]
    seconds = time.monotonic() - started
    document = {"remote": config.display_url(), **summary, "bytes": pool.bytes, "seconds": round(seconds, 3), "failures": failures}
    lines = _table([(name, n) for name, n in summary.items()] + [("transferred", _human_size(pool.bytes)), ("time", f"{seconds:.2f} s")])
    lines += [f"{f['outcome']}: {f['key'][:16]}: {f['reason']}" for f in failures[:20]]
    if len(failures) > 20:
        lines.append(f"... and {len(failures) - 20} more (see --json)")
    _emit(args, document, lines)
    return EXIT_PROBLEM if failures else EXIT_OK


def cmd_pull(args: argparse.Namespace) -> int:
    """Fetch every object the sources under the targets need and the local cache lacks."""
    from .cli import UsageError, _cache, _progress, _settings

    paths = _targets(args)
    if not paths:
        raise UsageError("pull needs a PATH or PACKAGE, or --site-packages")
    settings = _settings()
    config = _remote_config(settings, write=False)
    cache = _cache(settings)
    started = time.monotonic()
    with _Pool(config, args.jobs or DEFAULT_JOBS) as pool:
        pack_list = pool.background(lambda: _pack_list(pool))  # while the sources are looked at
        unindexed, present, unreadable = _unindexed(cache, paths)
        listed = pack_list()
        unpacked = 0
        if listed and not args.each:  # a source whose size no pack has is not read: its code is in no pack
            sizes = {size for _digest, objects in listed for size in objects.values()}
            unpacked = sum(1 for _path, st, _stat_key in unindexed if st.st_size not in sizes)
            unindexed = [source for source in unindexed if source[1].st_size in sizes]
        wanted, reused, unread = _wanted(cache, unindexed)
        present, unreadable = present + reused, unreadable + unread

        def keep(key: str, data: bytes) -> None:
            cache.store.write_object(key, data)
            for _path, st, stat_key in wanted[key]:
                cache.remember(stat_key, st, key)

        def fetch(key: str) -> tuple[str, str]:
            found = pool.client().fetch(key)
            if found is None:
                return MISSING, ""
            keep(key, found[0])
            return FETCHED, ""

        results, complete = _pull_packs(pool, listed, wanted, keep)
        done = {key for key, _outcome, _reason in results}
        remaining = [key for key in wanted if key not in done]
        if complete and not args.each:
            results += [(key, MISSING, "") for key in remaining]  # not in the packs of every push so far
        else:
            results += pool.run(fetch, remaining, _progress("pulling"))
    # Counted per source file, like ``warm``: files sharing one object count each.
    per_file = [(key, outcome, reason) for key, outcome, reason in results for _ in wanted[key]]
    return _summarise(args, config, (FETCHED, PRESENT, MISSING, FAILED, REJECTED), per_file,
                      {PRESENT: present, MISSING: unpacked, FAILED: unreadable}, started, pool)


def _unindexed(cache: _loader.CodeCache, paths: list[str]) -> tuple[list[tuple[str, os.stat_result, str]], int, int]:
    """``(sources the stat index lacks as (path, stat, stat key), how many it has, how many are unreadable)``."""
    unindexed: list[tuple[str, os.stat_result, str]] = []
    present = unreadable = 0
    indexed = {item.name for item in _evict.area_files(cache.store.index)}  # one listing instead of a failed open per new source
    for path in _warm.source_files(paths):
        try:
            st = os.stat(path)
            stat_key = cache.stat_key(path, st)
            if stat_key in indexed and cache.load_indexed(stat_key, st) is not None:
                present += 1
                continue
        except OSError:
            unreadable += 1
            continue
        unindexed.append((path, st, stat_key))
    return unindexed, present, unreadable


def _wanted(cache: _loader.CodeCache, sources: list[tuple[str, os.stat_result, str]]) -> tuple[dict, int, int]:
    """``(the sources by the content key the cache lacks, how many it has under another path, how many are unreadable)``.

    Hashed in this thread: in worker threads, hashing only contends for the GIL.
    """
    wanted: dict[str, list[tuple[str, os.stat_result, str]]] = {}
    present = unreadable = 0
    for path, st, stat_key in sources:
        try:
            with open(path, "rb") as file:
                key = cache.content_key(file.read())
            if cache.load_object(key) is not None:
                cache.remember(stat_key, st, key)
                present += 1
                continue
        except OSError:
            unreadable += 1
            continue
        wanted.setdefault(key, []).append((path, st, stat_key))
    return wanted, present, unreadable


def _pack_list(pool: _Pool) -> list[tuple[str, dict[str, int]]] | None:
    """The server's packs, or ``None`` when their list cannot be read (objects are then asked for one by one)."""
    try:
        return pool.client().pack_list()
    except (_remote.RemoteError, _remote.Rejected, OSError):
        return None


def _pull_packs(pool: _Pool, listed: list[tuple[str, dict[str, int]]] | None, wanted: dict,
                keep: Callable[[str, bytes], None]) -> tuple[list[tuple[str, str, str]], bool]:
    """Take the wanted objects from the listed packs: ``(results, whether every pack holding one was read)``.

    Only packs listed with a wanted object are fetched. A pack that is missing or
    fails its signature is skipped whole (its objects are then asked for one by
    one); an object in a good pack is still checked on its own before it is
    kept. Objects are written in this thread: in worker threads, the checks and
    writes only contend for the GIL (measured slower).
    """
    results: list[tuple[str, str, str]] = []
    if listed is None:
        return results, False
    complete, todo = bool(listed), set(wanted)
    for digest, listed_objects in listed:
        if todo.isdisjoint(listed_objects):
            continue
        try:
            objects = pool.client().fetch_pack(digest)
        except (_remote.RemoteError, _remote.Rejected, OSError):
            complete = False
            continue

        def take(key: str) -> tuple[str, str]:
            data = bytes(objects[key])
            _remote.check_object(data, key)
            keep(key, data)
            return FETCHED, ""

        keys = sorted(todo & objects.keys())
        todo.difference_update(keys)
        results += [_outcome(take, key) for key in keys]
    return results, complete


def cmd_push(args: argparse.Namespace) -> int:
    """Upload the local objects of the targets (or all, or the queued ones) that the server lacks."""
    from .cli import UsageError, _cache, _progress, _settings

    paths = _targets(args)
    if not (paths or args.all or args.queue):
        raise UsageError("push needs a PATH or PACKAGE, --site-packages, --all or --queue")
    settings = _settings()
    config = _remote_config(settings, write=True)
    cache = _cache(settings)
    started = time.monotonic()
    keys: dict[str, None] = {}
    not_cached = 0
    for path in _warm.source_files(paths):
        try:
            with open(path, "rb") as file:
                keys[cache.content_key(file.read())] = None
        except OSError:
            not_cached += 1
    if args.all:
        keys.update(dict.fromkeys(sorted(item.name for item in _evict.area_files(cache.store.objects) if len(item.name) == 64)))
    if args.queue:
        keys.update(dict.fromkeys(_remote.take_queue(cache.store.root)))
    packed = not args.queue or paths or args.all  # imports' queue is drained often: no pack for it alone
    checked: dict[str, bytes] = {}  # the objects read and checked for upload, kept for the pack
    with _Pool(config, args.jobs or DEFAULT_JOBS) as pool:

        def upload(key: str) -> tuple[str, str]:
            data = cache.store.read(cache.store.object_path(key))
            if data is None:
                return MISSING, "not in the local cache"
            try:
                _store.unpack(data, key)
            except _store.CorruptEntry as exc:
                return FAILED, f"local object is corrupt: {exc}"
            if packed:
                checked[key] = data
            client = pool.client()
            if client.has(key):
                return PRESENT, ""
            client.upload(key, data)
            return PUSHED, ""

        results = pool.run(upload, list(keys), _progress("pushing"))
        packs = 0
        if packed:
            # Published as packs too, so that a pull takes them in a few requests.
            stored = [(key, checked[key]) for key, outcome, _ in results if outcome in (PUSHED, PRESENT)]
            try:
                packs = pool.client().publish_packs(stored)
            except (_remote.RemoteError, OSError) as exc:
                results.append(("pack", FAILED, f"the objects are pushed, their pack is not: {exc}"))
    return _summarise(args, config, (PUSHED, PRESENT, MISSING, FAILED), results, {MISSING: not_cached, "packs": packs}, started, pool)
