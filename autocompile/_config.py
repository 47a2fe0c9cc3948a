"""Settings: defaults, then the config file, then the environment.

This module runs at every interpreter start, so it imports only what ``site``
has already imported. The TOML parser is imported only when a config file
exists, and the config file is found with one ``stat``.
"""

from __future__ import annotations

import os
import sys

APP_NAME = "autocompile"
DEFAULT_MAX_SIZE = 5 * 1024**3

_FALSE = frozenset({"", "0", "false", "no", "off"})
_LOG_LEVELS = ("off", "warning", "debug")


class Setting:
    """One effective value and where it came from (like ``ccache -p``)."""

    __slots__ = ("value", "origin")

    def __init__(self, value: object, origin: str) -> None:
        self.value = value
        self.origin = origin


class Settings:
    """The effective configuration of this process."""

    __slots__ = ("values", "config_file", "problems")

    def __init__(self) -> None:
        self.values: dict[str, Setting] = {}
        self.config_file: str | None = None
        self.problems: list[str] = []

    def __getitem__(self, name: str) -> object:
        return self.values[name].value

    def set(self, name: str, value: object, origin: str) -> None:
        self.values[name] = Setting(value, origin)


def is_true(text: str) -> bool:
    return text.strip().lower() not in _FALSE


def user_cache_dir() -> str:
    """``platformdirs.user_cache_dir("autocompile")`` without importing platformdirs.

    platformdirs pulls in ``pathlib``, ``re`` and more: too slow for every start-up.
    The result is checked against platformdirs by the tests.
    """
    if sys.platform == "win32":
        import platformdirs

        return platformdirs.user_cache_dir(APP_NAME)
    if sys.platform == "darwin":
        return os.path.join(os.path.expanduser("~/Library/Caches"), APP_NAME)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.expanduser("~/.cache")
    return os.path.join(base, APP_NAME)


def user_config_file() -> str:
    """``platformdirs.user_config_dir("autocompile")/config.toml``, found as cheaply."""
    if sys.platform == "win32":
        import platformdirs

        base = platformdirs.user_config_dir(APP_NAME)
    elif sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~/Library/Application Support"), APP_NAME)
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME", "").strip() or os.path.expanduser("~/.config")
        base = os.path.join(xdg, APP_NAME)
    return os.path.join(base, "config.toml")


# name -> (default, kind); kind is how text from the environment is parsed.
_SCHEMA: dict[str, tuple[object, str]] = {
    "enabled": (True, "bool"),
    "cache_dir": (None, "path"),
    "log": ("warning", "log"),
    "honour_dont_write_bytecode": (False, "bool"),
    "max_size": (DEFAULT_MAX_SIZE, "size"),
    "exclude": ((), "list"),
}

_ENVIRONMENT = {
    "AUTOCOMPILE_DISABLE": "enabled",
    "AUTOCOMPILE_CACHE_DIR": "cache_dir",
    "AUTOCOMPILE_LOG": "log",
    "AUTOCOMPILE_HONOUR_DONT_WRITE_BYTECODE": "honour_dont_write_bytecode",
    "AUTOCOMPILE_MAX_SIZE": "max_size",
    "AUTOCOMPILE_EXCLUDE": "exclude",
}


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``1.5GiB``, ``0`` -> bytes. Powers of 1024 throughout, like ccache."""
    cleaned = text.strip().upper().replace("IB", "").rstrip("B")
    factor = 1
    for power, suffix in enumerate("KMGT", start=1):
        if cleaned.endswith(suffix):
            factor, cleaned = 1024**power, cleaned[:-1]
            break
    try:
        value = float(cleaned)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (examples: 500M, 2G, 1.5GiB)") from None
    if value < 0 or value != value:
        raise ValueError(f"not a size: {text!r}")
    return int(value * factor)


def _parse(name: str, kind: str, raw: object) -> object:
    """Turn a value from the environment (text) or TOML into its setting type."""
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            return is_true(raw)
    elif kind == "path":
        if isinstance(raw, str) and raw:
            return os.path.abspath(os.path.expanduser(raw))
    elif kind == "log":
        level = raw.strip().lower() if isinstance(raw, str) else None
        level = {"1": "debug", "0": "off", "": "warning"}.get(level, level)  # type: ignore[arg-type]
        if level in _LOG_LEVELS:
            return level
    elif kind == "size":
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return raw
        if isinstance(raw, str):
            return parse_size(raw)
    elif kind == "list":
        if isinstance(raw, str):
            return tuple(item.strip() for item in raw.split(",") if item.strip())
        if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            return tuple(raw)
    raise ValueError(f"bad value for {name}: {raw!r}")


def _read_config_file(path: str, settings: Settings) -> None:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return
    except OSError as exc:
        settings.problems.append(f"{path}: cannot read: {exc.strerror}")
        return
    settings.config_file = path
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        settings.problems.append(f"{path}: {exc}")
        return
    for name, raw in document.items():
        where = f"{path}:{_line_of(data, name)}"
        if name not in _SCHEMA:
            settings.problems.append(f"{where}: unknown setting {name!r}")
            continue
        try:
            settings.set(name, _parse(name, _SCHEMA[name][1], raw), f"config file {path}")
        except ValueError as exc:
            settings.problems.append(f"{where}: {exc}")


def _line_of(data: bytes, name: str) -> int:
    """The line where a top-level setting is assigned (TOML values carry no positions)."""
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if line.lstrip().startswith(name) and line.lstrip()[len(name) :].lstrip().startswith("="):
            return number
    return 1


def load(environ: dict[str, str] | None = None) -> Settings:
    """Read the effective settings; never raises for bad input, records it in ``problems``."""
    env = os.environ if environ is None else environ
    settings = Settings()
    for name, (default, _kind) in _SCHEMA.items():
        settings.set(name, default, "default")
    config_path = env.get("AUTOCOMPILE_CONFIG") or user_config_file()
    _read_config_file(config_path, settings)
    for variable, name in _ENVIRONMENT.items():
        raw = env.get(variable)
        if raw is None:
            continue
        try:
            value = _parse(name, _SCHEMA[name][1], raw)
        except ValueError as exc:
            settings.problems.append(f"environment {variable}: {exc}")
            continue
        if variable == "AUTOCOMPILE_DISABLE":
            value = not value
        settings.set(name, value, f"environment {variable}")
    if settings["cache_dir"] is None:
        try:
            settings.set("cache_dir", user_cache_dir(), "default")
        except Exception as exc:  # no home directory, or platformdirs missing
            settings.problems.append(f"no cache directory: {exc}")
    return settings
