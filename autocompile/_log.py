"""One-line messages on stderr, controlled by ``AUTOCOMPILE_LOG`` (off, warning, debug)."""

import sys

_LEVELS = {"off": 0, "warning": 1, "debug": 2}
_level = 1
_warned: set[str] = set()


def set_level(name: str) -> None:
    global _level
    _level = _LEVELS.get(name, 1)


def debugging() -> bool:
    return _level >= 2


def debug(message: str) -> None:
    if _level >= 2:
        write(message)


def warn_once(topic: str, message: str) -> None:
    """Warn at most once per process and topic: a hook must not flood a program's stderr."""
    if _level >= 1 and topic not in _warned:
        _warned.add(topic)
        write(message)


def write(message: str) -> None:
    try:
        sys.stderr.write(f"autocompile: {message}\n")
    except Exception:  # no stderr (pythonw, closed pipe): stay silent
        pass
