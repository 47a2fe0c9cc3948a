"""The store: self-checking objects, atomic writes, and refusing what it cannot trust."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autocompile import _store
from conftest import run_python, settle, write_tree

KEY = "ab" * 32


def entry_bytes(payload: bytes = b"payload" * 10) -> bytes:
    return _store.pack(_store.KIND_CODE, KEY, payload, {"name": "mod", "path": "/x/mod.py"})


def test_pack_unpack_round_trip() -> None:
    entry = _store.unpack(entry_bytes(), KEY)
    assert (entry.kind, entry.key, entry.payload) == (_store.KIND_CODE, KEY, b"payload" * 10)
    assert entry.meta == {"name": "mod", "path": "/x/mod.py"}


def test_entries_unpack_from_any_buffer() -> None:
    """Remote packs hand over ``memoryview`` slices: metadata decodes from those too."""
    for data in (entry_bytes(), memoryview(entry_bytes()), bytearray(entry_bytes())):
        entry = _store.unpack(data, KEY)  # type: ignore[arg-type]
        assert entry.meta == {"name": "mod", "path": "/x/mod.py"} and entry.payload == b"payload" * 10


def test_meta_keeps_non_utf8_paths() -> None:
    path = os.fsdecode(b"/tmp/caf\xe9/mod.py")
    data = _store.pack(_store.KIND_CODE, KEY, b"", {"path": path})
    assert _store.unpack(data).meta["path"] == path


def test_wrong_key_is_refused() -> None:
    with pytest.raises(_store.CorruptEntry):
        _store.unpack(entry_bytes(), "cd" * 32)


@settings(max_examples=2000, deadline=None)
@given(st.data())
def test_any_mutation_is_detected(data: st.DataObject) -> None:
    """Truncation, extension, bit flips and overwrites: the entry is rejected or unchanged."""
    original = entry_bytes(data.draw(st.binary(max_size=200)))
    mutated = bytearray(original)
    kind = data.draw(st.sampled_from(["truncate", "extend", "flip", "overwrite"]))
    if kind == "truncate":
        del mutated[data.draw(st.integers(0, len(mutated) - 1)) :]
    elif kind == "extend":
        mutated += data.draw(st.binary(min_size=1, max_size=20))
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            position = data.draw(st.integers(0, len(mutated) - 1))
            mutated[position] ^= 1 << data.draw(st.integers(0, 7))
    else:
        start = data.draw(st.integers(0, len(mutated) - 1))
        garbage = data.draw(st.binary(min_size=1, max_size=16))
        mutated[start : start + len(garbage)] = garbage
    try:
        entry = _store.unpack(bytes(mutated), KEY)
    except _store.CorruptEntry:
        return
    assert bytes(mutated) == original, "a changed entry was accepted"
    assert entry.payload == _store.unpack(original, KEY).payload


def test_write_atomic_creates_directories_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "objects" / "ab" / KEY
    _store.write_atomic(str(target), b"data")
    assert target.read_bytes() == b"data"
    assert oct(target.stat().st_mode & 0o777) == oct(0o600)
    assert os.listdir(target.parent) == [KEY]


def test_write_atomic_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    with pytest.raises(TypeError):
        _store.write_atomic(str(target), object())  # type: ignore[arg-type]  # fails mid-write
    assert os.listdir(tmp_path) == []


def test_a_directory_in_an_entrys_place_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    (target / "inner").mkdir(parents=True)
    _store.write_atomic(str(target), b"data")
    assert target.read_bytes() == b"data"


def test_link_index_links_new_names_and_replaces_old_entries(tmp_path: Path) -> None:
    """A free name gets the object's inode; a taken one (the same object, or a damaged entry) is
    replaced atomically; no temporary is left either way."""
    store = _store.Store(str(tmp_path))
    obj = store.write_object(KEY, entry_bytes())
    stat_key = "cd" * 16
    index = Path(store.index_path(stat_key))
    for before in (None, obj, b"damaged"):
        if isinstance(before, bytes):
            index.unlink()
            index.write_bytes(before)
        store.link_index(stat_key, obj)
        assert os.path.samefile(index, obj)
        assert os.listdir(index.parent) == [index.name]


def test_read_does_not_follow_symlinks(tmp_path: Path) -> None:
    store = _store.Store(str(tmp_path))
    real = tmp_path / "real"
    real.write_bytes(entry_bytes())
    (tmp_path / "link").symlink_to(real)
    assert store.read(str(real)) is not None
    assert store.read(str(tmp_path / "link")) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_entries_owned_by_someone_else_are_not_read(tmp_path: Path) -> None:
    store = _store.Store(str(tmp_path))
    planted = tmp_path / "planted"
    planted.write_bytes(entry_bytes())
    os.chown(planted, 65534, 65534)
    assert store.read(str(planted)) is None


def test_an_entry_that_checks_out_is_sealed_and_any_write_breaks_the_seal(tmp_path: Path) -> None:
    store = _store.Store(str(tmp_path))
    path = Path(store.write_object(KEY, entry_bytes()))
    assert not _store.is_sealed(path.stat())  # written, not yet read back
    assert store.load(str(path), KEY) is not None
    assert _store.is_sealed(path.stat())
    assert store.load(str(path), KEY) is not None  # served without its checksum
    with open(path, "r+b") as file:  # the same inode, one byte changed
        file.seek(-1, os.SEEK_END)
        last = file.read(1)
        file.seek(-1, os.SEEK_END)
        file.write(bytes([last[0] ^ 1]))
    assert not _store.is_sealed(path.stat())
    with pytest.raises(_store.CorruptEntry):
        store.load(str(path), KEY)
    assert not _store.is_sealed(path.stat())  # a failed check seals nothing


def test_a_copy_of_a_sealed_entry_is_checked_again(tmp_path: Path) -> None:
    """``cp -p``, ``rsync -a`` or a restored backup keeps the bytes and times, not the inode."""
    store = _store.Store(str(tmp_path))
    path = Path(store.write_object(KEY, entry_bytes()))
    store.load(str(path), KEY)
    assert _store.is_sealed(path.stat())
    copy = tmp_path / "copy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    shutil.copystat(path, copy)
    assert copy.stat().st_mtime_ns == path.stat().st_mtime_ns
    assert not _store.is_sealed(copy.stat())
    with pytest.raises(_store.CorruptEntry):
        store.load(str(copy), KEY)


def test_a_read_only_store_checks_every_read_and_seals_nothing(tmp_path: Path) -> None:
    path = Path(_store.Store(str(tmp_path)).write_object(KEY, entry_bytes()))
    assert _store.Store(str(tmp_path), writable=False).load(str(path), KEY) is not None
    assert not _store.is_sealed(path.stat())


CORRUPTIONS = ["truncate", "zero", "flip", "flip_in_place", "garbage", "directory", "symlink", "other_interpreter_magic"]


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_entries_are_misses_and_get_replaced(tmp_path: Path, cache_dir: Path, corruption: str) -> None:
    write_tree(tmp_path, {"victim.py": "VALUE = 'right'\n"})
    settle()
    code = "import victim; print(victim.VALUE)"
    run_python(code, cache_dir, cwd=tmp_path)
    entries = [
        p for p in cache_dir.glob("*/*/*") if p.parent.parent.name in ("index", "objects") and b"victim.py" in p.read_bytes()
    ]
    assert len(entries) == 2  # the object and its index link
    run_python(code, cache_dir, cwd=tmp_path)  # a hit: the entry checks out and is sealed
    assert all(_store.is_sealed(path.stat()) for path in entries)
    for path in entries:
        data = path.read_bytes()
        if corruption == "flip_in_place":  # written through: the object and its link are one inode
            with open(path, "r+b") as file:
                file.seek(-5, os.SEEK_END)
                file.write(bytes([data[-5] ^ 0x40]))
            break
        path.unlink()
        if corruption == "truncate":
            path.write_bytes(data[: len(data) // 2])
        elif corruption == "zero":
            path.write_bytes(b"")
        elif corruption == "flip":
            path.write_bytes(data[:-5] + bytes([data[-5] ^ 0x40]) + data[-4:])
        elif corruption == "garbage":
            path.write_bytes(os.urandom(len(data)))
        elif corruption == "directory":
            (path / "inside").mkdir(parents=True)
        elif corruption == "symlink":
            (tmp_path / "elsewhere").write_bytes(data)
            path.symlink_to(tmp_path / "elsewhere")
        else:
            path.write_bytes(data[:4] + (int.from_bytes(data[4:6], "little") + 1).to_bytes(2, "little") + data[6:])
    result = run_python(code, cache_dir, cwd=tmp_path)
    assert result.stdout.strip() == "right" and result.stderr == ""
    for path in entries:
        assert path.is_file() and not path.is_symlink()
        _store.unpack(path.read_bytes())
    log = run_python(code, cache_dir, cwd=tmp_path, AUTOCOMPILE_LOG="debug")
    assert "victim: hit" in log.stderr
