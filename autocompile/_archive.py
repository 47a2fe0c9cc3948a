"""Portable archives of cache objects, for image builds and read-only deployments.

An archive is a zip file holding ``manifest.json``, one ``objects/<key>``
member per object and one ``ext/<key><suffix>`` member per Cython extension.
Index entries are not exported: their keys name inodes and devices of this
machine. An imported object is found by content on the first import and
indexed from then on; an imported extension is indexed by ``autocompile
cythonize``, which finds it built already (same key: same source, name,
interpreter, Cython and flags) and so needs no compiler.

Importing reads and checks every member (zip CRC, then the object's own
header, key and checksum) before it writes anything, and writes each object
with ``write_atomic``: a damaged or foreign archive leaves the cache as it was.
"""

from __future__ import annotations

import json
import os
import re
import zipfile

from . import _ext, _keys, _manage, _store

ARCHIVE_FORMAT = "autocompile-archive"
#: 2 added extensions; archives of version 1 (objects only) are still read.
ARCHIVE_VERSION = 2
_READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
_EXTENSION = "extension"
_SUFFIX = re.compile(r"\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.(so|pyd)")


class ArchiveError(Exception):
    """The archive cannot be read or is not one this version can import."""


def export(store: _store.Store, records: list[_manage.Record], path: str) -> int:
    """Write the objects and extensions of ``records`` to a new archive at ``path``; return how many."""
    entries = []
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
            for record in records:
                member = _member(store, record)
                if member is None:
                    continue
                name, data = member
                archive.writestr(name, data)
                entry = {"key": record.key, **{k: record.meta.get(k, "") for k in ("name", "tag", "path")}}
                if record.is_extension():
                    entry.update(kind=_EXTENSION, suffix=record.meta["suffix"])
                entries.append(entry)
            manifest = {
                "format": ARCHIVE_FORMAT,
                "version": ARCHIVE_VERSION,
                "store_format": _keys.FORMAT_VERSION,
                "entries": entries,
            }
            archive.writestr(MANIFEST, json.dumps(manifest, indent=1))
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return len(entries)


def _member(store: _store.Store, record: _manage.Record) -> tuple[str, bytes] | None:
    """The archive member name and bytes of an object or extension; ``None`` for one that is damaged (never shipped)."""
    member = _Member(record.key, record.meta["suffix"] if record.is_extension() else None)
    data = store.read(member.destination(store))
    if not data:
        return None
    if member.suffix is None:
        try:
            _store.unpack(data, record.key)
        except _store.CorruptEntry:
            return None
    return member.name, data


class _Member:
    """One entry of an archive's manifest: where it is in the archive and where it goes in the store."""

    __slots__ = ("key", "suffix")

    def __init__(self, key: str, suffix: str | None) -> None:
        self.key = key
        self.suffix = suffix  # None for an object

    @property
    def name(self) -> str:
        return f"objects/{self.key}" if self.suffix is None else f"ext/{self.key}{self.suffix}"

    def destination(self, store: _store.Store) -> str:
        return store.object_path(self.key) if self.suffix is None else _ext.extension_path(store.root, self.key, self.suffix)


def _manifest(archive: zipfile.ZipFile) -> list[_Member]:
    """What an archive claims to hold, after checking it is an archive this version reads."""
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except KeyError:
        raise ArchiveError("not an autocompile archive (no manifest)") from None
    except ValueError as exc:
        raise ArchiveError(f"damaged manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError("not an autocompile archive")
    if manifest.get("version") not in _READABLE_VERSIONS or manifest.get("store_format") != _keys.FORMAT_VERSION:
        raise ArchiveError(
            f"archive format {manifest.get('version')}/{manifest.get('store_format')} is not "
            f"{ARCHIVE_VERSION}/{_keys.FORMAT_VERSION}: written by another version of autocompile"
        )
    members = []
    for entry in manifest.get("entries", []):
        if not isinstance(entry, dict):
            continue
        key, suffix = entry.get("key"), entry.get("suffix") if entry.get("kind") == _EXTENSION else None
        if not (isinstance(key, str) and len(key) == 2 * _keys.KEY_BYTES and all(c in "0123456789abcdef" for c in key)):
            raise ArchiveError(f"bad key in manifest: {key!r}")
        if entry.get("kind") == _EXTENSION and not (isinstance(suffix, str) and _SUFFIX.fullmatch(suffix)):
            raise ArchiveError(f"bad extension suffix in manifest: {suffix!r}")
        members.append(_Member(key, suffix))
    return members


def _read_member(archive: zipfile.ZipFile, member: _Member) -> bytes:
    """One member, checked by zip's CRC and, for an object, by its own header."""
    try:
        data = archive.read(member.name)
        if member.suffix is None:
            _store.unpack(data, member.key)
        elif not data:
            raise ArchiveError(f"empty extension {member.key[:12]}…")
    except KeyError:
        raise ArchiveError(f"entry {member.key[:12]}… listed in the manifest is missing") from None
    except (_store.CorruptEntry, zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"damaged entry {member.key[:12]}…: {exc}") from None
    return data


def _has(store: _store.Store, member: _Member) -> bool:
    """Whether the store holds a good copy already (an extension is never rewritten: it may be mapped)."""
    if member.suffix is not None:
        return os.path.lexists(member.destination(store))
    try:
        return store.load(store.object_path(member.key), member.key) is not None
    except _store.CorruptEntry:
        return False  # replaced by the archive's good copy


def import_(store: _store.Store, path: str) -> tuple[int, int]:
    """Check every member of the archive, then add the new ones; return ``(added, already present)``."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = _manifest(archive)
            for member in members:
                _read_member(archive, member)
            added = present = 0
            for member in members:
                if _has(store, member):
                    present += 1
                    continue
                _store.write_atomic(member.destination(store), _read_member(archive, member))
                added += 1
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"not a zip archive or damaged: {exc}") from None
    return added, present
