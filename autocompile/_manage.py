"""What the command line knows about entries: their metadata, selection, orphans and checks.

Never imported at start-up: only ``autocompile`` commands pay for reading every
entry's header.
"""

from __future__ import annotations

import marshal
import os
from fnmatch import fnmatchcase

from . import _bootstrap, _evict, _ext, _install, _keys, _stats, _store


#: What an entry is, by the area it lives in (``kind`` in ``list`` and ``--json`` output).
KIND_CODE, KIND_EXTENSION, KIND_FAILED = "code", "extension", "failed build"
_KINDS = {"objects": KIND_CODE, "index": KIND_CODE, "ext": KIND_EXTENSION, "extindex": KIND_EXTENSION, "failed": KIND_FAILED}
#: The name shown for a runtime bundle (autocompile's own start-up code, see ``_bootstrap``).
RUNTIME_NAME = "(autocompile runtime)"


class Record:
    """One store item (an inode and all its names) with the key and metadata in its header.

    An extension file has no header: its key is its file name, and its metadata
    (module name, source path, interpreter) comes from the index entries that
    point at it.
    """

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

    @property
    def area(self) -> str:
        """``objects``, ``index``, ``ext``, ``extindex`` or ``failed``."""
        areas = {_area(path) for path in self.item.paths}
        return "objects" if "objects" in areas else areas.pop()

    @property
    def kind(self) -> str:
        return _KINDS.get(self.area, "")

    def is_object(self) -> bool:
        return self.area == "objects"

    def is_extension(self) -> bool:
        return self.area == "ext"


def extension_items(items: list[_evict.Item]) -> list[_evict.Item]:
    """The extension files among ``items``."""
    return [item for item in items if _area(item.paths[0]) == "ext"]


def _area(path: str) -> str:
    """The store area of an entry: the directory two levels above it."""
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
    result, extensions = [], []
    for item in _evict.scan(root):
        if _area(item.paths[0]) == "ext":
            name = os.path.basename(item.paths[0])
            key, _, suffix = name.partition(".")
            extensions.append(Record(item, key, {"suffix": "." + suffix, "tag": _suffix_tag(suffix)}))
            continue
        header = read_header(item.paths[0])
        key, meta = header if header else ("", {})
        result.append(Record(item, key, meta))
    described = {r.key: r.meta for r in result if r.area == "extindex"}
    for record in extensions:
        index_meta = described.get(record.key, {})
        record.meta.update((field, index_meta[field]) for field in ("name", "path", "cython") if field in index_meta)
    return result + extensions


def _suffix_tag(suffix: str) -> str:
    """``cpython-311`` from ``cpython-311-x86_64-linux-gnu.so``: the interpreter an extension is for."""
    return "-".join(suffix.split(".")[0].split("-")[:2])


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
    (with hard links: its inode has no name under ``objects/``); an object or
    a failed build when the source file it was compiled from no longer exists;
    an extension index entry when its extension file is gone; an extension when
    no index entry points at it any more.
    """
    indexed = {r.key for r in entries if r.area == "extindex"}
    result = []
    for record in entries:
        area, path = record.area, record.meta.get("path")
        if area in ("objects", "failed"):
            gone = bool(path) and not os.path.exists(path)
        elif area == "ext":
            gone = record.key not in indexed
        elif area == "extindex":
            gone = not record.key or not os.path.exists(_extension_of(store, record.key, record.meta))
        else:
            gone = not record.key or not os.path.exists(store.object_path(record.key))
        if gone:
            result.append(record)
    return result


def runtime_orphans(files: dict[str, os.DirEntry[str]]) -> list[Record]:
    """The runtime bundles among ``files`` (see :func:`runtime_files`) that no installed copy will read again.

    A copy's bundle goes when the package directory its origin names no longer
    holds autocompile, or when it has no origin (an older autocompile wrote it;
    a copy still there writes both again at its next start), together with its
    origin; a shared bundle goes when no remaining copy's bundle came from it.
    Removing a bundle a copy still reads costs that copy one slower start, never
    an error.
    """
    gone: list[list[os.DirEntry[str]]] = []
    shared, in_use = [], set()
    for name, entry in files.items():
        if name.endswith(_install.ORIGIN_SUFFIX):
            if name[: -len(_install.ORIGIN_SUFFIX)] not in files:
                gone.append([entry])
        elif name.startswith(_bootstrap.SHARED_PREFIX):
            shared.append(entry)
        else:
            origin = read_origin(entry.path)
            if origin is not None and os.path.isfile(os.path.join(origin[0], "_bootstrap.py")):
                in_use.add(origin[1])
            else:
                origin_file = files.get(name + _install.ORIGIN_SUFFIX)
                gone.append([entry] if origin_file is None else [entry, origin_file])
    gone += [[entry] for entry in shared if entry.name not in in_use]
    records = []
    for entries in gone:
        try:
            records.append(_runtime_record(entries))
        except OSError:  # removed meanwhile
            pass
    return records


def runtime_files(root: str) -> dict[str, os.DirEntry[str]]:
    """The files under ``runtime/`` (bundles and their origins), by name; none when unreadable."""
    try:
        return {
            entry.name: entry
            for entry in os.scandir(os.path.join(root, "runtime"))
            if entry.is_file(follow_symlinks=False) and not _store.is_temporary(entry.name)
        }
    except OSError:
        return {}


def read_origin(bundle: str) -> tuple[str, str] | None:
    """The package directory of the copy a bundle belongs to and the name of the shared bundle
    it came from, as ``_install.save_runtime`` recorded them; ``None`` without a record."""
    try:
        with open(bundle + _install.ORIGIN_SUFFIX, "rb") as file:
            package_dir, _, shared = file.read().decode("utf-8", "surrogateescape").partition("\0")
    except OSError:
        return None
    return (package_dir, shared) if shared else None


def _runtime_record(entries: list[os.DirEntry[str]]) -> Record:
    """A bundle and its origin file as one record: removed together, sizes added."""
    item = _evict.Item(entries[0].path, entries[0].stat(follow_symlinks=False))
    for entry in entries[1:]:
        item.paths.append(entry.path)
        item.size += _evict.disk_size(entry.stat(follow_symlinks=False))
    return Record(item, "", {"name": RUNTIME_NAME})


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
    if record.is_extension():
        return None if data else "empty extension file"
    try:
        entry = _store.unpack(data, os.path.basename(path) if record.is_object() else None)
    except _store.CorruptEntry as exc:
        return str(exc)
    if record.area == "extindex":
        return _check_extension_index(store, entry)
    if record.area == "failed":
        return None if entry.kind == _ext.KIND_EXTFAILED else f"kind {entry.kind} among failed builds"
    if recompile:
        return _compare_with_source(entry)
    return None


def _check_extension_index(store: _store.Store, entry: _store.Entry) -> str | None:
    """An extension index entry must say what the finder checks: its kind, and its extension's size."""
    if entry.kind != _ext.KIND_EXTINDEX:
        return f"kind {entry.kind} in the extension index"
    try:
        size = os.lstat(_extension_of(store, entry.key, entry.meta)).st_size
    except FileNotFoundError:
        return None  # an orphan (``prune --orphans``), not damage: the finder falls back to bytecode
    except OSError as exc:
        return f"extension unreadable: {exc.strerror}"
    return None if str(size) == entry.meta.get("size") else "extension's size differs from its index entry"


def _extension_of(store: _store.Store, key: str, meta: dict[str, str]) -> str:
    """The extension an index entry points at, for whichever interpreter it was built."""
    return _ext.extension_path(store.root, key, meta.get("suffix") or _ext.EXT_SUFFIX)


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
