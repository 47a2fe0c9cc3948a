"""Settings: defaults, config file, environment, and bad input that never breaks start-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autocompile import _config
from conftest import run_python, write_tree


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500M", 500 * 1024**2), ("2G", 2 * 1024**3), ("1.5GiB", int(1.5 * 1024**3)), ("0", 0), ("10k", 10240), ("123", 123)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert _config.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "12Q", "-1G", "G", "nan"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        _config.parse_size(text)


def test_precedence_and_origins(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('cache_dir = "/from/file"\nmax_size = "1G"\nlog = "debug"\n')
    settings = _config.load({"AUTOCOMPILE_CONFIG": str(config), "AUTOCOMPILE_MAX_SIZE": "2G"})
    assert settings["cache_dir"] == "/from/file"
    assert settings.values["cache_dir"].origin == f"config file {config}"
    assert settings["max_size"] == 2 * 1024**3
    assert settings.values["max_size"].origin == "environment AUTOCOMPILE_MAX_SIZE"
    assert settings["log"] == "debug"
    assert settings.values["enabled"].origin == "default"
    assert settings.problems == []


@pytest.mark.parametrize(("value", "enabled"), [("1", False), ("yes", False), ("0", True), ("", True)])
def test_disable_variable(value: str, enabled: bool) -> None:
    settings = _config.load({"AUTOCOMPILE_DISABLE": value, "AUTOCOMPILE_CONFIG": os.devnull + ".missing"})
    assert settings["enabled"] is enabled


def test_broken_config_is_reported_and_ignored(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('log = "debug"\ncache_dir = \n')
    settings = _config.load({"AUTOCOMPILE_CONFIG": str(config), "AUTOCOMPILE_CACHE_DIR": str(tmp_path / "c")})
    assert settings["log"] == "warning"
    assert len(settings.problems) == 1 and str(config) in settings.problems[0]
    assert "line 2" in settings.problems[0]


def test_bad_values_are_reported_with_their_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('# settings\nmax_size = "lots"\nunknown_thing = 1\n')
    settings = _config.load({"AUTOCOMPILE_CONFIG": str(config)})
    assert settings["max_size"] == _config.DEFAULT_MAX_SIZE
    assert settings.problems == [
        f"{config}:2: not a size: 'lots' (examples: 500M, 2G, 1.5GiB)",
        f"{config}:3: unknown setting 'unknown_thing'",
    ]


def test_broken_config_never_breaks_start_up(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('max_size = "lots"\nlog = 3\n')
    write_tree(tmp_path, {"fine.py": "VALUE = 1\n"})
    result = run_python("import fine; print(fine.VALUE)", tmp_path / "cache", cwd=tmp_path, AUTOCOMPILE_CONFIG=str(config))
    assert result.stdout.strip() == "1"
    assert result.stderr == ""


def test_no_home_directory_falls_back_to_stock(tmp_path: Path) -> None:
    write_tree(tmp_path, {"fine.py": "VALUE = 1\n"})
    result = run_python("import fine; print(fine.VALUE)", None, cwd=tmp_path, HOME="/nonexistent/home", XDG_CACHE_HOME="")
    assert result.stdout.strip() == "1"
    assert result.stderr == "", "a missing home is an ordinary environment: no warning"
