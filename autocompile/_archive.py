"""Portable archives of cache objects, for image builds and read-only deployments.

An archive is a zip file holding ``manifest.json`` and one ``objects/<key>``
member per object. Index entries are not exported: their keys name inodes and
devices of this machine. An imported object is found by content on the first
import and indexed from then on.

Importing reads and checks every member (zip CRC, then the object's own
header, key and checksum) before it writes anything, and writes each object
with ``write_atomic``: a damaged or foreign archive leaves the cache as it was.
"""

from __future__ import annotations

import json
import os
import zipfile

from . import _keys, _manage, _store

ARCHIVE_FORMAT = "autocompile-archive"
ARCHIVE_VERSION = 1
MANIFEST = "manifest.json"


class ArchiveError(Exception):
    """The archive cannot be read or is not one this version can import."""


def export(store: _store.Store, records: list[_manage.Record], path: str) -> int:
    """Write the objects of ``records`` to a new archive at ``path``; return how many."""
    entries = []
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
            for record in records:
                data = store.read(store.object_path(record.key))
                if data is None:
                    continue
                try:
                    _store.unpack(data, record.key)
                except _store.CorruptEntry:
                    continue  # never ship a damaged entry
                archive.writestr(f"objects/{record.key}", data)
                entries.append({"key": record.key, **{k: record.meta.get(k, "") for k in ("name", "tag", "path")}})
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


def _manifest(archive: zipfile.ZipFile) -> list[str]:
    """The keys an archive claims to hold, after checking it is an archive this version reads."""
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except KeyError:
        raise ArchiveError("not an autocompile archive (no manifest)") from None
    except ValueError as exc:
        raise ArchiveError(f"damaged manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError("not an autocompile archive")
    if manifest.get("version") != ARCHIVE_VERSION or manifest.get("store_format") != _keys.FORMAT_VERSION:
        raise ArchiveError(
            f"archive format {manifest.get('version')}/{manifest.get('store_format')} is not "
            f"{ARCHIVE_VERSION}/{_keys.FORMAT_VERSION}: written by another version of autocompile"
        )
    keys = [entry.get("key") for entry in manifest.get("entries", []) if isinstance(entry, dict)]
    for key in keys:
        if not (isinstance(key, str) and len(key) == 2 * _keys.KEY_BYTES and all(c in "0123456789abcdef" for c in key)):
            raise ArchiveError(f"bad key in manifest: {key!r}")
    return keys


def _read_object(archive: zipfile.ZipFile, key: str) -> bytes:
    """One object, checked by zip's CRC and by the object's own header."""
    try:
        data = archive.read(f"objects/{key}")
        _store.unpack(data, key)
    except KeyError:
        raise ArchiveError(f"entry {key[:12]}… listed in the manifest is missing") from None
    except (_store.CorruptEntry, zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"damaged entry {key[:12]}…: {exc}") from None
    return data


def _has(store: _store.Store, key: str) -> bool:
    try:
        return store.load(store.object_path(key), key) is not None
    except _store.CorruptEntry:
        return False  # replaced by the archive's good copy


def import_(store: _store.Store, path: str) -> tuple[int, int]:
    """Check every object in the archive, then add the new ones; return ``(added, already present)``."""
    try:
        with zipfile.ZipFile(path) as archive:
            keys = _manifest(archive)
            for key in keys:
                _read_object(archive, key)
            added = present = 0
            for key in keys:
                if _has(store, key):
                    present += 1
                    continue
                store.write_object(key, _read_object(archive, key))
                added += 1
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"not a zip archive or damaged: {exc}") from None
    return added, present
