"""Settings: defaults, then the config file, then the environment.

This module runs at every interpreter start, so it imports only what ``site``
has already imported. The TOML parser is imported only when a config file
exists, and the config file is found with one ``stat``.
"""

import os
import sys

from . import _profiles
from ._bootstrap import _FALSE
from ._location import user_cache_dir, user_config_file

DEFAULT_MAX_SIZE = 5 * 1024**3

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


# name -> (default, kind); kind is how text from the environment is parsed.
_SCHEMA: dict[str, tuple[object, str]] = {
    "enabled": (True, "bool"),
    "cache_dir": (None, "path"),
    "log": ("warning", "log"),
    "honour_dont_write_bytecode": (False, "bool"),
    "max_size": (DEFAULT_MAX_SIZE, "size"),
    "exclude": ((), "list"),
    "exclude_extensions": ((), "list"),
    "profiles": ("", "rules"),
    # The remote tier (see ``_remote``): nothing of it is imported unless remote_mode is set.
    "remote_url": ("", "url"),
    "remote_token": ("", "secret"),
    "remote_mode": ("off", "remote_mode"),
    "remote_key": ("", "secret"),
    "remote_trust": ("signed", "remote_trust"),
    "remote_budget_ms": (5.0, "milliseconds"),
}

_ENVIRONMENT = {
    "AUTOCOMPILE_DISABLE": "enabled",
    "AUTOCOMPILE_CACHE_DIR": "cache_dir",
    "AUTOCOMPILE_LOG": "log",
    "AUTOCOMPILE_HONOUR_DONT_WRITE_BYTECODE": "honour_dont_write_bytecode",
    "AUTOCOMPILE_MAX_SIZE": "max_size",
    "AUTOCOMPILE_EXCLUDE": "exclude",
    "AUTOCOMPILE_EXCLUDE_EXTENSIONS": "exclude_extensions",
    "AUTOCOMPILE_PROFILES": "profiles",
    "AUTOCOMPILE_REMOTE_URL": "remote_url",
    "AUTOCOMPILE_REMOTE_TOKEN": "remote_token",
    "AUTOCOMPILE_REMOTE_MODE": "remote_mode",
    "AUTOCOMPILE_REMOTE_KEY": "remote_key",
    "AUTOCOMPILE_REMOTE_TRUST": "remote_trust",
    "AUTOCOMPILE_REMOTE_BUDGET_MS": "remote_budget_ms",
}

_REMOTE_MODES = ("off", "read", "read-write")
_REMOTE_TRUSTS = ("signed", "unsigned")


class Secret(dict):  # type: ignore[type-arg]
    """A credential (or a URL holding one): never shown, only read through :meth:`reveal`.

    A ``dict`` subclass so that ``json.dump`` (``config --json``) writes ``{"hidden": ...}``
    and ``str``/``repr`` write the masked form; the value itself is an attribute.
    """

    def __init__(self, value: str, shown: str = "(hidden)") -> None:
        super().__init__(hidden=shown)
        self._value = value
        self._shown = shown

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return self._shown

    __str__ = __repr__

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Secret, (self._value, self._shown))


def is_true(text: str) -> bool:
    return text.strip().lower() not in _FALSE


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
    elif kind == "rules":  # profile rules, kept as "pattern=profile;..." text (see _profiles)
        if isinstance(raw, str):
            return raw
        if isinstance(raw, dict) and all(isinstance(v, str) for v in raw.values()):
            return ";".join(f"{pattern}={profile}" for pattern, profile in raw.items())
    elif kind == "secret":
        if isinstance(raw, str):
            return Secret(raw.strip()) if raw.strip() else ""
    elif kind == "url":  # a password in the URL (basic auth) is never shown
        if isinstance(raw, str):
            url = raw.strip()
            scheme, sep, rest = url.partition("://")
            authority, slash, path = rest.partition("/")
            if sep and ":" in authority.rpartition("@")[0]:
                user = authority.rpartition("@")[0].partition(":")[0]
                return Secret(url, f"{scheme}://{user}:***@{authority.rpartition('@')[2]}{slash}{path}")
            return url
    elif kind in ("remote_mode", "remote_trust"):
        choices = _REMOTE_MODES if kind == "remote_mode" else _REMOTE_TRUSTS
        value = raw.strip().lower() if isinstance(raw, str) else None
        if value in choices:
            return value
        raise ValueError(f"bad value for {name}: {raw!r} (one of: {', '.join(choices)})")
    elif kind == "milliseconds":
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = float(raw.strip().lower().removesuffix("ms"))
            except ValueError:
                value = -1.0
        else:
            value = -1.0
        if 0 <= value < 3_600_000:
            return value
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
    _profiles.parse(str(settings["profiles"]), settings.values["profiles"].origin, settings.problems)
    if settings["cache_dir"] is None:
        try:
            settings.set("cache_dir", user_cache_dir(), "default")
        except Exception as exc:  # no home directory, or platformdirs missing
            settings.problems.append(f"no cache directory: {exc}")
    return settings
