"""Where the cache lives and whether it can be trusted."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
import pytest

from autocompile import _location
from conftest import run_python, write_tree


def test_default_directories_match_platformdirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for xdg in (None, str(tmp_path / "xdg")):
        if xdg is None:
            monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
            monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_CACHE_HOME", xdg)
            monkeypatch.setenv("XDG_CONFIG_HOME", xdg)
        assert _location.user_cache_dir() == platformdirs.user_cache_dir("autocompile")
        assert _location.user_config_file() == os.path.join(platformdirs.user_config_dir("autocompile"), "config.toml")


def test_trusted_directory(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    assert _location.open_root(str(root)) is None
    assert oct(root.stat().st_mode & 0o777) == oct(0o700)
    assert (root / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")


def test_group_or_world_writable_directory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    os.chmod(root, 0o777)
    assert "writable by group or others" in str(_location.describe_untrusted(str(root)))


def test_parent_writable_by_others_without_sticky_bit_is_refused(tmp_path: Path) -> None:
    parent = tmp_path / "shared"
    (parent / "cache").mkdir(parents=True, mode=0o700)
    os.chmod(parent, 0o777)
    assert "without the sticky bit" in str(_location.describe_untrusted(str(parent / "cache")))
    os.chmod(parent, 0o1777)
    assert _location.describe_untrusted(str(parent / "cache")) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_directory_owned_by_another_user_is_refused_and_imports_stay_stock(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    assert "owned by uid 65534" in str(_location.describe_untrusted(str(root)))
    write_tree(tmp_path, {"victim.py": "VALUE = 5\n"})
    result = run_python("import victim, sys; print(victim.VALUE, type(victim.__loader__).__name__)", root, cwd=tmp_path)
    assert result.stdout.split() == ["5", "SourceFileLoader"]
    assert result.stderr.count("autocompile:") == 1 and "owned by uid 65534" in result.stderr
    assert os.listdir(root) == []


