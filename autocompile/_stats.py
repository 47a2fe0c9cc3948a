"""Import counters: kept in memory, merged into the cache once per process.

Counting costs a dictionary update per import. At exit the counts are added
to one of a few bucket files under ``stats/`` while holding an advisory lock
on it, so concurrent processes never lose each other's counts and no file is
written per import. A process appends its lines; readers add lines up, and
only a bucket past ``MERGE_BYTES`` is parsed and written back merged, so an
exit does not parse every package's counts.
"""

import os
import sys

BUCKETS = 8
MERGE_BYTES = 16384
#: Outcomes of one import decision, as shown by ``stats`` and ``AUTOCOMPILE_LOG=debug``.
HIT, REUSED, COMPILED, FALLBACK = "hit", "reused", "compiled", "fallback"
#: Served from a valid stock ``__pycache__`` file, as stock would.
STOCK_PYC = "stock pyc"
COMPILE_NS = "compile_ns"

Counts = dict[tuple[str, str, str], int]  # (cache tag, outcome, top-level package) -> count
_counts: Counts = {}
_TAG = sys.implementation.cache_tag or "unknown"


def count(outcome: str, fullname: str, amount: int = 1) -> None:
    key = (_TAG, outcome, fullname.partition(".")[0])
    _counts[key] = _counts.get(key, 0) + amount


def reset() -> None:
    """Forget this process's counts (a forked child must not count its parent's imports)."""
    _counts.clear()


def parse(text: str) -> Counts:
    counts: Counts = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and fields[3].isdigit():
            key = (fields[0], fields[1], fields[2])
            counts[key] = counts.get(key, 0) + int(fields[3])
    return counts


def format_counts(counts: Counts) -> str:
    return "".join(f"{tag}\t{outcome}\t{package}\t{n}\n" for (tag, outcome, package), n in sorted(counts.items()))


def merge(first: Counts, second: Counts) -> Counts:
    merged = dict(first)
    for key, n in second.items():
        merged[key] = merged.get(key, 0) + n
    return merged


def bucket_paths(root: str) -> list[str]:
    return [os.path.join(root, "stats", str(n)) for n in range(BUCKETS)]


def update_bucket(path: str, change: "Counts | None") -> None:
    """Add ``change`` to the counts in ``path`` under a lock (``None`` empties it)."""
    from ._store import update_locked

    def updated(old: bytes) -> bytes:
        if change is None:
            return b""
        added = format_counts(change).encode()
        if len(old) + len(added) <= MERGE_BYTES:
            return old + added
        return format_counts(merge(parse(old.decode("utf-8", "replace")), change)).encode()

    update_locked(path, updated)


def flush(root: str) -> None:
    """Merge this process's counts into the cache's totals. Never raises."""
    if not _counts:
        return
    counts = dict(_counts)
    _counts.clear()
    path = bucket_paths(root)[os.getpid() % BUCKETS]
    try:
        try:
            update_bucket(path, counts)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
            update_bucket(path, counts)
    except Exception:  # read-only or full disk, no fcntl: statistics are best effort
        pass


def totals(root: str) -> Counts:
    counts: Counts = {}
    for path in bucket_paths(root):
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                counts = merge(counts, parse(file.read()))
        except OSError:
            pass
    return counts
