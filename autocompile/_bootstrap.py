"""Start-up: put the finder in ``PathFinder``'s slot on ``sys.meta_path``, or leave Python stock.

Run by ``autocompile.pth`` (and ``autocompile.start`` on Python 3.15+) at
every interpreter start, so it imports only small modules and never raises.
"""

from __future__ import annotations

import os
import sys

from . import _config, _log

_active: "object | None" = None  # the installed finder


def boot() -> None:
    """The ``.pth``/``.start`` entry point: install unless disabled; never raises."""
    try:
        if not _config.is_true(os.environ.get("AUTOCOMPILE_DISABLE", "")):
            install()
    except Exception as exc:  # a hook must never break interpreter start-up
        if os.environ.get("AUTOCOMPILE_LOG"):
            _log.write(f"disabled: {type(exc).__name__}: {exc}")


def install(settings: _config.Settings | None = None) -> bool:
    """Install the import hook in this process; return whether it is active.

    For programs that start without ``site`` (``python -S``, embedded
    interpreters). Installing twice is harmless.
    """
    global _active
    if _active is not None:
        return True
    settings = settings or _config.load()
    _log.set_level(str(settings["log"]))
    if not settings["enabled"]:
        return False
    from _frozen_importlib_external import PathFinder

    from . import _finder, _loader, _stats, _store

    try:
        slot = sys.meta_path.index(PathFinder)
    except ValueError:
        _log.debug("not installed: PathFinder is not on sys.meta_path")
        return False
    root = str(settings["cache_dir"] or "")
    problem = _store.open_root(root) if root else "no cache directory"
    if problem is not None:
        if os.path.isdir(root):  # it exists but is not safe: say so, once
            _log.warn_once("cache_dir", f"{problem}; using the standard import")
        else:  # no home, read-only file system: an ordinary environment, stay quiet
            _log.debug(f"{problem}; using the standard import")
        return False
    writable = not (settings["honour_dont_write_bytecode"] and sys.dont_write_bytecode)
    cache = _loader.CodeCache(_store.Store(root, writable), sys.flags.optimize)
    _active = _finder.AutocompileFinder(PathFinder, cache, tuple(settings["exclude"]))  # type: ignore[arg-type]
    sys.meta_path[slot] = _active
    import atexit

    atexit.register(_stats.flush, root)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_stats.reset)
    return True


def uninstall() -> bool:
    """Put ``PathFinder`` back in its slot; return whether the hook was active."""
    global _active
    finder, _active = _active, None
    if finder is None:
        return False
    from _frozen_importlib_external import PathFinder

    from . import _stats

    sys.meta_path[:] = [PathFinder if entry is finder else entry for entry in sys.meta_path]
    _stats.flush(finder.cache.store.root)  # type: ignore[attr-defined]
    return True


def active_finder() -> "object | None":
    return _active
