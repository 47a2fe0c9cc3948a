"""What the command line knows about entries: their metadata, selection, orphans and checks.

Never imported at start-up: only ``autocompile`` commands pay for reading every
entry's header.
"""

from __future__ import annotations

import marshal
import os
from fnmatch import fnmatchcase

from . import _evict, _keys, _stats, _store


class Record:
    """One store item (an inode and all its names) with the key and metadata in its header."""

    __slots__ = ("item", "key", "meta")

    def __init__(self, item: _evict.Item, key: str, meta: dict[str, str]) -> None:
        self.item = item
        self.key = key
        self.meta = meta

    @property
    def name(self) -> str:
        return self.meta.get("name", "")

    @property
    def package(self) -> str:
        return self.name.partition(".")[0]

    def is_object(self) -> bool:
        return any(_area(path) == "objects" for path in self.item.paths)


def _area(path: str) -> str:
    """``objects`` or ``index``: the directory two levels above an entry."""
    return os.path.basename(os.path.dirname(os.path.dirname(path)))


def read_header(path: str) -> tuple[str, dict[str, str]] | None:
    """The key and metadata of the entry at ``path`` without reading its payload; ``None`` if it has none."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        header = os.read(fd, _store.HEADER_SIZE)
        if len(header) < _store.HEADER_SIZE or header[:4] != _store.MAGIC:
            return None
        size = _store.meta_size(header)
        meta = os.read(fd, size) if size <= 1 << 16 else b""
    finally:
        os.close(fd)
    return header[8:40].hex(), _store.decode_meta(meta)


def records(root: str) -> list[Record]:
    """Every entry, one per inode, with whatever header it has (empty for unreadable ones)."""
    result = []
    for item in _evict.scan(root):
        header = read_header(item.paths[0])
        key, meta = header if header else ("", {})
        result.append(Record(item, key, meta))
    return result


def matches(record: Record, pattern: str | None = None, tag: str | None = None, package: str | None = None) -> bool:
    """Selection by module name or path pattern (as ``exclude``), cache tag and package or module name."""
    if tag is not None and record.meta.get("tag") != tag:
        return False
    if package is not None and not (record.name == package or record.name.startswith(package + ".")):
        return False
    if pattern is not None:
        subject = record.meta.get("path", "") if "/" in pattern or os.sep in pattern else record.name
        return fnmatchcase(subject, pattern)
    return True


def orphans(store: _store.Store, entries: list[Record]) -> list[Record]:
    """Entries nothing can reach any more, or that only describe sources gone from their path.

    An index entry is orphaned when the object named in its header is gone
    (with hard links: its inode has no name under ``objects/``); an object
    when the source file it was compiled from no longer exists.
    """
    result = []
    for record in entries:
        if record.is_object():
            path = record.meta.get("path")
            gone = bool(path) and not os.path.exists(path)
        else:
            gone = not record.key or not os.path.exists(store.object_path(record.key))
        if gone:
            result.append(record)
    return result


def check(store: _store.Store, record: Record, recompile: bool) -> str | None:
    """Why ``record`` is corrupt or wrong, or ``None``.

    Every entry's header and checksum are checked; with ``recompile`` its
    source is compiled again (when it still exists, is unchanged and was
    compiled by this interpreter) and the code compared.
    """
    path = record.item.paths[0]
    data = store.read(path)
    if data is None:
        return "unreadable, or not a regular file owned by this user"
    try:
        entry = _store.unpack(data, os.path.basename(path) if _area(path) == "objects" else None)
    except _store.CorruptEntry as exc:
        return str(exc)
    if recompile:
        return _compare_with_source(entry)
    return None


def _compare_with_source(entry: _store.Entry) -> str | None:
    """Compile the entry's source as the loader would and compare the code objects."""
    meta = entry.meta
    source_path = meta.get("path", "")
    if meta.get("tag") != _stats._TAG or meta.get("profile"):
        return None
    try:
        with open(source_path, "rb") as file:
            source = file.read()
    except OSError:
        return None
    optimize = int(meta.get("optimize", "0") or 0)
    if _keys.content_key(_keys.code_context(optimize), source) != entry.key:
        return None  # the source has changed since: the entry is for other content
    try:
        expected = compile(source, source_path, "exec", dont_inherit=True, optimize=optimize)
        cached = marshal.loads(entry.payload)
    except (SyntaxError, ValueError, EOFError, TypeError) as exc:
        return f"cannot compare with the source: {type(exc).__name__}: {exc}"
    return None if cached == expected else "code differs from a fresh compile of its source"
