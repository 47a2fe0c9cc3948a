"""Installing and uninstalling the hook: the finder goes in ``PathFinder``'s slot on ``sys.meta_path``."""

import marshal
import os
import sys

from . import _bootstrap, _config, _finder, _loader, _location, _log, _profiles, _stats, _store

_active: "_finder.AutocompileFinder | None" = None
#: Next to each copy's runtime bundle, which copy it belongs to, in text any Python reads:
#: ``prune --orphans`` removes the bundles of copies that are gone (marshal data is per version).
ORIGIN_SUFFIX = ".origin"


def install(settings: "_config.Settings | None" = None) -> bool:
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

    try:
        slot = sys.meta_path.index(PathFinder)
    except ValueError:
        _log.debug("not installed: PathFinder is not on sys.meta_path")
        return False
    root = str(settings["cache_dir"] or "")
    problem = _location.open_root(root) if root else "no cache directory"
    if problem is not None:
        if os.path.isdir(root):  # it exists but is not safe: say so, once
            _log.warn_once("cache_dir", f"{problem}; using the standard import")
        else:  # no home, read-only file system: an ordinary environment, stay quiet
            _log.debug(f"{problem}; using the standard import")
        return False
    writable = not (settings["honour_dont_write_bytecode"] and sys.dont_write_bytecode)
    cache = _loader.CodeCache(_store.Store(root, writable), sys.flags.optimize, "", int(settings["max_size"]))  # type: ignore[call-overload]
    if settings["remote_mode"] != "off":
        cache.remote = settings
    rules = _profiles.parse(str(settings["profiles"]), settings.values["profiles"].origin, [])
    extensions = None
    if os.path.exists(os.path.join(root, "extnames")):  # one stat: caches without extensions pay nothing more
        from . import _ext

        extensions = _ext.open_tier(cache.store, tuple(settings["exclude_extensions"]))  # type: ignore[arg-type]
    _active = _finder.AutocompileFinder(
        PathFinder,  # type: ignore[arg-type]
        cache,
        tuple(settings["exclude"]),  # type: ignore[arg-type]
        _profiles.Rules(rules) if rules else None,
        extensions,
    )
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

    sys.meta_path[:] = [PathFinder if entry is finder else entry for entry in sys.meta_path]
    _stats.flush(finder.cache.store.root)  # type: ignore[attr-defined]
    return True


def active_finder() -> "_finder.AutocompileFinder | None":
    return _active


def start(root: str, loaded: str) -> None:
    """Install at interpreter start; after a start without this copy's bundle, write it.

    ``loaded``: which bundle the runtime came from (see ``_bootstrap.load_runtime``).
    """
    if _active is not None:
        return  # venvs list site-packages twice (lib and lib64): the .pth runs twice
    if install() and loaded != "own":
        save_runtime(root)


def save_runtime(root: str) -> None:
    """Write this copy's bundle and its origin, and the shared bundle when these sources have none
    (in a trusted cache only)."""
    if _location.describe_untrusted(root) is not None:
        return
    pin = _bootstrap.fingerprint()  # before reading: a source changed meanwhile makes the bundle stale, not wrong
    sources = _bootstrap.pinned_sources()
    shared_path, shared_pin = _bootstrap.shared_bundle(root, sources)
    codes = _bootstrap.read_bundle(shared_path, shared_pin)
    try:
        if codes is None:
            codes = tuple(
                # the package keeps its docstrings (public API); the rest runs without
                compile(sources[name], _bootstrap.source_path(name), "exec", dont_inherit=True, optimize=0 if name == "__init__" else 2)
                for name in _bootstrap.BUNDLED
            )
            _store.write_atomic(shared_path, marshal.dumps((shared_pin, codes)))
        own_path = _bootstrap.bundle_path(root)
        _store.write_atomic(own_path, marshal.dumps((pin, codes)))
        origin = f"{_bootstrap.PACKAGE_DIR}\0{os.path.basename(shared_path)}"
        _store.write_atomic(own_path + ORIGIN_SUFFIX, origin.encode("utf-8", "surrogateescape"))
    except OSError:
        pass
