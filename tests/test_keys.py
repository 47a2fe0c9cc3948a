"""Keys: every input that changes compiled output changes the key; nothing else does."""

from __future__ import annotations

import os
from pathlib import Path

from autocompile import _keys


def test_content_key_depends_on_source_and_context() -> None:
    base = _keys.content_key(_keys.code_context(0), b"x = 1\n")
    assert base == _keys.content_key(_keys.code_context(0), b"x = 1\n")
    assert len(base) == 64
    assert base != _keys.content_key(_keys.code_context(0), b"x = 2\n")
    assert base != _keys.content_key(_keys.code_context(1), b"x = 1\n")
    assert base != _keys.content_key(_keys.code_context(0, "strip-docstrings"), b"x = 1\n")


def test_context_names_the_interpreter() -> None:
    context = _keys.code_context(0)
    assert _keys.MAGIC_NUMBER in context
    import sys

    assert sys.implementation.cache_tag.encode() in context


def test_stat_key_changes_with_ctime_even_when_size_and_mtime_are_restored(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("a = 1\n")
    before = os.stat(path)
    context = _keys.code_context(0)
    first = _keys.stat_key(context, str(path), before)
    assert first == _keys.stat_key(context, str(path), os.stat(path))
    path.write_text("a = 2\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    if after.st_ctime_ns != before.st_ctime_ns:
        assert _keys.stat_key(context, str(path), after) != first
    assert _keys.stat_key(context, str(tmp_path / "other.py"), before) != first
