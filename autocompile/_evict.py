"""The size cap: scanning the store and evicting least-recently-used entries.

The loader calls :func:`after_write` after each object it publishes. That costs
an addition: bytes written are only *accounted* (added to a small estimate
file under an advisory lock) once per :data:`CHECK_BYTES` written and at
process exit, and the store is only *scanned* when the estimate says the cap
is exceeded. Eviction then runs in one process at a time (a non-blocking
lock: whoever finds it held skips, the holder is already evicting) and
brings the cache down to :data:`LOW_WATER` of the cap, so the next scan is
far off.

Last use is an inode's modification time, which ``Store.read`` refreshes at
most once a day on a hit. Unlinking an entry never breaks a reader that has
it open, and temporaries (another writer's file in flight) are never evicted;
only :func:`stale_temporaries` older than an hour are removed, by ``prune``.
"""


import os

from . import _store

#: Bytes a process writes between two looks at the size estimate.
CHECK_BYTES = 4 * 1024 * 1024
#: Eviction starts when the estimate passes this fraction of the cap: the estimate may
#: lag the truth a little (an object unlinked by eviction may live on as an index link
#: made a moment before), so the trigger keeps that margin below the cap itself.
HIGH_WATER = 0.95
#: Eviction brings the cache down to this fraction of the cap.
LOW_WATER = 0.9
#: A temporary older than this belongs to a writer that died.
STALE_TEMPORARY_SECONDS = 3600
ESTIMATE_FILE = "size"
LOCK_FILE = "evict.lock"
_BLOCK = 4096
#: The directories of entries (``_ext`` describes the last three).
_AREAS = ("objects", "index", "ext", "extindex", "failed")

_pending = 0  # bytes written by this process and not yet accounted
_max_size = 0
_store_root = ""
_exit_hook = False


class Item:
    """One inode in the store: an object and its index links, or an index entry on its own."""

    __slots__ = ("paths", "size", "mtime", "ino")

    def __init__(self, path: str, st: os.stat_result) -> None:
        self.paths = [path]
        self.size = disk_size(st)
        self.mtime = st.st_mtime
        self.ino = (st.st_dev, st.st_ino)


def disk_size(st: os.stat_result) -> int:
    """What a file costs on disk (its allocated blocks where the platform says)."""
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size


def area_files(area: str, temporaries: bool = False):  # type: ignore[no-untyped-def]
    """The files (``os.DirEntry``) of one sharded area of the store (``objects``, ``index`` ...),
    temporaries only if asked; an area or shard that cannot be read has none.

    Unannotated: the hook loads this module while it serves an import (perhaps of
    ``collections.abc`` itself), so it imports nothing for its annotations.
    """
    try:
        shards = list(os.scandir(area))
    except OSError:
        return
    for shard in shards:
        if not shard.is_dir(follow_symlinks=False):
            continue
        try:
            files = list(os.scandir(shard.path))
        except OSError:
            continue
        yield from (item for item in files if temporaries or not _store.is_temporary(item.name))


def _walk(root: str):  # type: ignore[no-untyped-def]
    """``(path, name, stat)`` of every file in the store's areas, temporaries included."""
    for area in _AREAS:
        for item in area_files(os.path.join(root, area), temporaries=True):
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:  # removed meanwhile
                continue
            yield item.path, item.name, st


def scan(root: str) -> list[Item]:
    """Every entry in the store, one :class:`Item` per inode (temporaries excluded)."""
    items: dict[tuple[int, int], Item] = {}
    for path, name, st in _walk(root):
        if _store.is_temporary(name):
            continue
        item = items.get((st.st_dev, st.st_ino))
        if item is None:
            items[(st.st_dev, st.st_ino)] = Item(path, st)
        else:
            item.paths.append(path)
    return list(items.values())


def stale_temporaries(root: str, now: float) -> list[Item]:
    """Temporaries left behind by writers that died: older than an hour."""
    return [
        Item(path, st)
        for path, name, st in _walk(root)
        if _store.is_temporary(name) and st.st_mtime < now - STALE_TEMPORARY_SECONDS
    ]


def total_size(items: list[Item]) -> int:
    return sum(item.size for item in items)


def least_recently_used(items: list[Item], target: int) -> list[Item]:
    """The oldest items whose removal brings ``items`` down to at most ``target`` bytes."""
    excess = total_size(items) - target
    chosen = []
    for item in sorted(items, key=lambda item: item.mtime):
        if excess <= 0:
            break
        chosen.append(item)
        excess -= item.size
    return chosen


def remove(items: list[Item]) -> int:
    """Unlink every name of ``items``; return the bytes freed. Open readers keep their data."""
    freed = 0
    for item in items:
        for path in item.paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        freed += item.size
    return freed


def set_estimate(root: str, size: int) -> None:
    """Record the cache's real size after a scan or a change made by the command line."""
    _update_estimate(root, lambda _old: size)


def _update_estimate(root: str, change) -> int | None:  # type: ignore[no-untyped-def]
    """Apply ``change(old)`` to the size estimate under an advisory lock; return the new value.

    ``old`` is ``None`` when there is no estimate yet (a cache from before the cap).
    """
    result: list[int | None] = []

    def updated(old: bytes) -> bytes | None:
        text = old.strip()
        result.append(change(int(text) if text.isdigit() else None))
        return None if result[0] is None else str(result[0]).encode()

    _store.update_locked(os.path.join(root, ESTIMATE_FILE), updated)
    return result[0]


def _try_lock(root: str) -> int | None:
    """The eviction lock's descriptor, held; ``None`` if another process holds it.

    ``fcntl.flock`` is what ``filelock`` uses on POSIX, without its import:
    ``filelock`` 4 loads about 150 modules (``inspect``, ``secrets``...) in
    ~40 ms, which an interpreter about to exit would also write to the cache
    it is trimming. The kernel drops the lock if the holder dies.
    """
    import fcntl

    fd = os.open(os.path.join(root, LOCK_FILE), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def evict(root: str, max_size: int) -> tuple[int, int] | None:
    """Bring the cache down to the low-water mark if it is near or over ``max_size``.

    Returns ``(entries removed, bytes freed)``, or ``None`` when another process
    holds the eviction lock: it is doing this very work, and it checks again
    before letting go, so bytes others account meanwhile are not forgotten.
    """
    lock = _try_lock(root)
    if lock is None:
        return None
    removed = freed = 0
    try:
        for _attempt in range(3):
            before = _update_estimate(root, lambda old: old) or 0
            items = scan(root)
            size = total_size(items)
            victims = least_recently_used(items, int(max_size * LOW_WATER)) if size > max_size * HIGH_WATER else []
            freed_now = remove(victims)
            removed, freed = removed + len(victims), freed + freed_now
            # Keep what others accounted during the scan; replace the rest by the truth.
            correction = size - freed_now - before
            estimate = _update_estimate(root, lambda old: (old or 0) + correction)
            if estimate is None or estimate <= max_size * HIGH_WATER:
                break
    finally:
        os.close(lock)
    return removed, freed


def account(root: str, nbytes: int, max_size: int) -> None:
    """Add ``nbytes`` to the size estimate and evict if it says the cap is exceeded."""
    # Small files take a whole block: round up so the estimate errs on the high side.
    rounded = -(-nbytes // _BLOCK) * _BLOCK
    estimate = _update_estimate(root, lambda old: None if old is None else old + rounded)
    if estimate is None or estimate > max_size * HIGH_WATER:
        evict(root, max_size)


def after_write(store: _store.Store, nbytes: int, max_size: int) -> None:
    """Note ``nbytes`` just written to ``store``; keep the cache under ``max_size`` (0: no cap).

    Called by the loader after each successful write. Costs an addition on most
    calls; never raises.
    """
    global _pending, _max_size, _store_root, _exit_hook
    if max_size <= 0:
        return
    try:
        _pending += nbytes
        _max_size, _store_root = max_size, store.root
        if not _exit_hook:
            _exit_hook = True
            import atexit

            atexit.register(flush)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_forget)
        if _pending >= min(CHECK_BYTES, max_size // 16):
            flush()
    except Exception:  # a full or read-only disk, no fcntl: the cap is best effort
        pass


def flush() -> None:
    """Account what this process wrote (at exit, or once enough was written). Never raises."""
    global _pending
    pending, _pending = _pending, 0
    if pending and _store_root:
        try:
            account(_store_root, pending, _max_size)
        except Exception:
            pass


def _forget() -> None:
    """A forked child must not account its parent's writes."""
    global _pending
    _pending = 0
