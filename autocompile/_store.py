"""The on-disk store: self-checking objects, an index of hard links, atomic writes.

Layout under the cache root::

    objects/a/abcdef...    one object per content key
    index/c/cdef01...      one hard link per stat key, to the object it maps to
    stats/                 counters (see ``_stats``)

An index entry *is* the object (a second name for the same inode), so a warm
import costs one ``stat`` of the source and one read, as with ``__pycache__``.
Readers never lock. Writers write a temporary file with a random name in the
same directory and ``os.replace`` it: a reader sees the old file or the new
one, never a torn one. Every object carries a header that is checked on every
read; anything that fails the check is a miss and is overwritten by the next
writer.
"""

import os
from time import time, time_ns

from . import _keys

MAGIC = b"\x89ACO"
# Header fields: magic, format version, kind, flags, then these.
_KEY, _CONTEXT, _SOURCE_SIZE = slice(8, 40), slice(40, 48), slice(48, 56)
_META_SIZE, _PAYLOAD_SIZE, _CHECKSUM = slice(56, 60), slice(60, 64), slice(64, 68)
HEADER_SIZE = 68
KIND_CODE = 0
#: Index entries touched less recently than this get their time refreshed on a hit,
#: so least-recently-used eviction works without a write on every hit.
REFRESH_SECONDS = 24 * 3600

_OPEN_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_OPEN_NEW = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)
_TEMPORARY_PREFIX = ".tmp-"
_CHECK_OWNER = hasattr(os, "geteuid")


class CorruptEntry(Exception):
    """An entry that must not be used: it is treated as a miss."""


class Entry:
    """A valid object: its header fields, metadata and payload."""

    __slots__ = ("kind", "key", "_meta", "payload")

    def __init__(self, kind: int, key: str, meta: "dict[str, str] | bytes | memoryview", payload: "bytes | memoryview") -> None:
        self.kind = kind
        self.key = key
        self._meta = meta
        self.payload = payload

    @property
    def meta(self) -> dict[str, str]:
        """Decoded when first asked for: an import needs only the payload."""
        if not isinstance(self._meta, dict):
            self._meta = decode_meta(bytes(self._meta))
        return self._meta


def _checksum(head: bytes, body: bytes) -> int:
    """CRC-32 of the header fields before it and of everything after it."""
    from zlib import crc32

    return crc32(body, crc32(head))


def encode_meta(meta: dict[str, str]) -> bytes:
    return "\0".join(f"{name}\0{value}" for name, value in meta.items()).encode("utf-8", "surrogateescape")


def decode_meta(data: bytes) -> dict[str, str]:
    fields = data.decode("utf-8", "surrogateescape").split("\0") if data else []
    return dict(zip(fields[::2], fields[1::2]))


def pack(
    kind: int, key: str, payload: bytes, meta: dict[str, str], *, context_id: bytes = bytes(8), source_size: int = 0
) -> bytes:
    """An object file: header, metadata, payload; the checksum covers all of it.

    ``context_id`` names the interpreter, optimize level and profile the code
    was compiled for, and ``source_size`` the size of its source: an index hit
    checks both without hashing anything, so an entry of another interpreter or
    of another file that ends up under an index name is a miss, not a crash.
    """
    meta_bytes = encode_meta(meta)
    head = b"".join(
        (
            MAGIC,
            _keys.FORMAT_VERSION.to_bytes(2, "little"),
            bytes((kind, 0)),
            bytes.fromhex(key),
            context_id,
            source_size.to_bytes(8, "little"),
            len(meta_bytes).to_bytes(4, "little"),
            len(payload).to_bytes(4, "little"),
        )
    )
    body = meta_bytes + payload
    return head + _checksum(head, body).to_bytes(4, "little") + body


def unpack(
    data: bytes,
    key: str | None = None,
    *,
    context_id: bytes | None = None,
    source_size: int | None = None,
    sealed: bool = False,
) -> Entry:
    """Check an object file completely; raise :class:`CorruptEntry` on any fault.

    ``sealed``: the file checked out before and has not been written since (see
    :func:`is_sealed`), so its checksum is not computed again; everything else is.
    The payload is returned as a ``memoryview`` of ``data``: no copy of what
    can be tens of kilobytes per import.
    """
    if len(data) < HEADER_SIZE or data[:4] != MAGIC:
        raise CorruptEntry("bad magic or truncated header")
    if int.from_bytes(data[4:6], "little") != _keys.FORMAT_VERSION:
        raise CorruptEntry("other format version")
    entry_key = data[_KEY].hex()
    if key is not None and entry_key != key:
        raise CorruptEntry("key does not match the entry's name")
    if context_id is not None and data[_CONTEXT] != context_id:
        raise CorruptEntry("compiled for another interpreter, optimize level or profile")
    if source_size is not None and int.from_bytes(data[_SOURCE_SIZE], "little") != source_size:
        raise CorruptEntry("compiled from a source of another size")
    meta_size = int.from_bytes(data[_META_SIZE], "little")
    payload_size = int.from_bytes(data[_PAYLOAD_SIZE], "little")
    if HEADER_SIZE + meta_size + payload_size != len(data):
        raise CorruptEntry("length does not match the header")
    view = memoryview(data)
    if not sealed and _checksum(view[: _CHECKSUM.start], view[HEADER_SIZE:]) != int.from_bytes(data[_CHECKSUM], "little"):
        raise CorruptEntry("checksum mismatch")
    return Entry(data[6], entry_key, data[HEADER_SIZE : HEADER_SIZE + meta_size], view[HEADER_SIZE + meta_size :])


def source_size(header: bytes) -> int:
    """The size of the source an entry was compiled from, as its header records it."""
    return int.from_bytes(header[_SOURCE_SIZE], "little")


def meta_size(header: bytes) -> int:
    """The metadata length recorded in a header (for listing without reading payloads)."""
    return int.from_bytes(header[_META_SIZE], "little")


class Store:
    """Objects and index entries under one trusted root directory."""

    def __init__(self, root: str, writable: bool = True) -> None:
        self.root = root
        self.writable = writable
        self.objects = os.path.join(root, "objects")
        self.index = os.path.join(root, "index")
        self._uid = os.geteuid() if _CHECK_OWNER else None

    def object_path(self, key: str) -> str:
        return sharded(self.objects, key)

    def index_path(self, stat_key: str) -> str:
        return sharded(self.index, stat_key)

    # Reading -------------------------------------------------------------

    def read(self, path: str) -> bytes | None:
        """The bytes of the entry at ``path``; ``None`` when absent or not to be trusted."""
        opened = self._open(path)
        if opened is None:
            return None
        fd, st = opened
        try:
            data = _read_all(fd, st.st_size)
            if self.writable:
                refresh_if_stale(fd, st)
        finally:
            os.close(fd)
        return data

    def load(self, path: str, key: str | None = None, **expected: object) -> Entry | None:
        """A valid entry at ``path`` or ``None``; ``expected`` as for :func:`unpack`.

        An entry that checks out is sealed, so the next reads skip its checksum.
        """
        opened = self._open(path)
        if opened is None:
            return None
        fd, st = opened
        try:
            sealed = is_sealed(st)
            entry = unpack(_read_all(fd, st.st_size), key, sealed=sealed, **expected)  # type: ignore[arg-type]
            if self.writable and (not sealed or _stale(st)) and (self._uid is None or st.st_uid == self._uid):
                seal(fd, st)
        finally:
            os.close(fd)
        return entry

    def _open(self, path: str) -> "tuple[int, os.stat_result] | None":
        """A descriptor of the entry at ``path`` and its ``stat``, if it may be trusted.

        Symbolic links are not followed, and only regular files owned by this
        user (or by root, for a read-only shared tier) count: anything else
        someone may have planted is a miss.
        """
        try:
            fd = os.open(path, _OPEN_READ)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        if (st.st_mode & 0o170000) != 0o100000 or (self._uid is not None and st.st_uid not in (self._uid, 0)):
            os.close(fd)
            return None
        return fd, st

    # Writing -------------------------------------------------------------

    def write_object(self, key: str, data: bytes) -> str:
        """Publish an object file atomically; return its path."""
        path = self.object_path(key)
        write_atomic(path, data)
        return path

    def link_index(self, stat_key: str, object_path: str) -> None:
        """Point the index entry at the object: a hard link, or a copy where links fail.

        The link is made at its final name when that is free (one system call: a
        reader sees no entry or the whole object); an entry already there (another
        process indexing the same file, or a damaged entry) is replaced atomically
        through a temporary link.
        """
        path = self.index_path(stat_key)
        try:
            if _link_new(object_path, path):
                return
            temporary = _temporary_name(path)
            os.link(object_path, temporary)
        except OSError as exc:
            if not _links_unsupported(exc):
                raise
            data = self.read(object_path)
            if data is not None:
                write_atomic(path, data)
            return
        _replace(temporary, path)
        # Renaming a link onto another link of the same file does nothing and succeeds
        # (POSIX), which happens when processes index the same source at once.
        _unlink(temporary)


def _link_new(source: str, path: str) -> bool:
    """Hard-link ``source`` at ``path`` if that name is free; ``False`` if it is taken."""
    try:
        os.link(source, path)
    except FileExistsError:
        return False
    except FileNotFoundError:  # a new shard directory
        os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
        try:
            os.link(source, path)
        except FileExistsError:
            return False
    return True


def _links_unsupported(exc: OSError) -> bool:
    """Whether a failed ``os.link`` means this file system has no hard links for us."""
    import errno  # here, not at start-up: a first ``import errno`` costs 0.1-0.2 ms

    unsupported = (errno.EPERM, errno.EMLINK, errno.EXDEV, getattr(errno, "ENOTSUP", -1), getattr(errno, "EOPNOTSUPP", -1))
    return exc.errno in unsupported


def sharded(directory: str, name: str) -> str:
    """``directory/<first hex digit of name>/name``.

    Sixteen subdirectories, as ccache has: an empty cache costs 16 ``mkdir`` per
    area (each a journal transaction), not the 256 of two digits, and a
    directory holds a few thousand entries at most for a cache of 50,000.
    """
    return f"{directory}/{name[0]}/{name}"


def refresh_if_stale(file: "int | str", st: os.stat_result) -> None:
    """Mark a file (an open descriptor, or a path whose link is not followed) used now, for
    least-recently-used eviction; at most once a day, so that hits cost no write."""
    if _stale(st):
        try:
            if isinstance(file, int):
                os.utime(file)
            else:
                os.utime(file, follow_symlinks=False)
        except (OSError, NotImplementedError):
            pass


def _stale(st: os.stat_result) -> bool:
    """Whether a file was last marked used more than ``REFRESH_SECONDS`` ago."""
    return st.st_mtime + REFRESH_SECONDS < time()


def _read_all(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd``, or what there is of them (a short entry fails its check)."""
    chunks = []
    while size > 0:
        chunk = os.read(fd, size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# Sealing. Checking an object's CRC-32 is most of what a hit costs beyond stock's
# read and unmarshal, and only needs doing until the object has checked out once.
# Then its modification time is set to within half a second of now, with a
# sub-second part chosen by its inode, device and size: the seal. Any later write sets the modification
# and change times to the same moment, and a copy or restored backup is another
# inode with a later change time, so neither keeps the seal; only the owner
# restoring the exact time by hand would. Where timestamps are coarser than
# microseconds or descriptors cannot be given times, nothing is ever sealed and
# every read is checked in full.
_SECOND_NS = 1_000_000_000
_SEALS = _CHECK_OWNER and os.utime in os.supports_fd


def _seal_ns(st: os.stat_result) -> int:
    """The sub-second part of a sealed file's modification time: a microsecond, never zero."""
    return 1000 * (1 + (st.st_ino * 0x9E3779B97F4A7C15 + st.st_dev * 31 + st.st_size) % 999_999)


def is_sealed(st: os.stat_result) -> bool:
    """Whether this file checked out when it was last sealed and has not been written since."""
    mtime, ctime = st.st_mtime_ns, st.st_ctime_ns
    return _SEALS and mtime % _SECOND_NS == _seal_ns(st) and mtime != ctime and abs(ctime - mtime) < _SECOND_NS


def seal(fd: int, st: os.stat_result) -> None:
    """Seal a file that checked out, which also marks it used now for eviction; best effort."""
    if not _SEALS:
        refresh_if_stale(fd, st)
        return
    now = time_ns()
    mtime = now - now % _SECOND_NS + _seal_ns(st)  # within half a second of now: see is_sealed
    if mtime - now > _SECOND_NS // 2:
        mtime -= _SECOND_NS
    elif now - mtime > _SECOND_NS // 2:
        mtime += _SECOND_NS
    try:
        os.utime(fd, ns=(st.st_atime_ns, mtime))
    except OSError:
        pass


def _temporary_name(path: str) -> str:
    head, _, tail = path.rpartition("/")
    return f"{head}/{_TEMPORARY_PREFIX}{os.urandom(6).hex()}-{tail[:16]}"


def is_temporary(name: str) -> bool:
    return name.startswith(_TEMPORARY_PREFIX)


def _replace(temporary: str, path: str) -> None:
    """``os.replace``, clearing a directory found where an entry belongs; never leaves ``temporary``."""
    try:
        try:
            os.replace(temporary, path)
        except OSError:
            if os.path.islink(path) or not os.path.isdir(path):
                raise
            import shutil

            shutil.rmtree(path)
            os.replace(temporary, path)
    except BaseException:
        _unlink(temporary)
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_atomic(path: str, data: bytes) -> None:
    """Like CPython's ``_write_atomic``: an exclusive temporary file, then ``os.replace``.

    The temporary name is random, not the PID, so writers on other machines
    sharing the directory never collide; a failed write leaves nothing behind.
    """
    temporary = _temporary_name(path)
    try:
        fd = os.open(temporary, _OPEN_NEW, 0o600)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
        fd = os.open(temporary, _OPEN_NEW, 0o600)
    try:
        with open(fd, "wb", closefd=True) as file:
            file.write(data)
    except BaseException:
        _unlink(temporary)
        raise
    _replace(temporary, path)


def update_locked(path: str, change) -> bytes:  # type: ignore[no-untyped-def]
    """Replace a small file's bytes with ``change(old)`` under an advisory lock; return the old bytes.

    For counters shared by every process (statistics, the size estimate): one
    lock per update, no write when ``change`` returns ``None``. POSIX only:
    ``os.lockf`` is built in, where ``fcntl`` would be one more shared library to
    load in every exiting process.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.lockf(fd, os.F_LOCK, 0)
        old = os.read(fd, os.fstat(fd).st_size)
        new = change(old)
        if new is not None:
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, new)
            os.ftruncate(fd, len(new))
        return old
    finally:
        os.close(fd)
