"""Start-up: put the finder in ``PathFinder``'s slot on ``sys.meta_path``, or leave Python stock.

Run by ``autocompile.pth`` (and ``autocompile.start`` on Python 3.15+) at
every interpreter start, so it never raises. This module and ``_location`` are
the only ones the standard machinery imports (and, without a ``.pyc``, compiles)
at every start: the rest of the runtime is executed from a bundle of code
objects kept in the cache, so autocompile starts warm even where its own
``__pycache__`` cannot exist.
"""

import marshal
import os
import sys

import _imp
from _frozen_importlib import module_from_spec
from _frozen_importlib_external import _RAW_MAGIC_NUMBER, spec_from_file_location

from . import _location

_FALSE = frozenset({"", "0", "false", "no", "off"})
#: autocompile's own start-up modules, in dependency order.
RUNTIME_MODULES = ("_log", "_config", "_keys", "_store", "_stats", "_profiles", "_loader", "_finder")
_PACKAGE_DIR = os.path.dirname(__file__)
_active: "object | None" = None  # the installed finder


def is_true(text: str) -> bool:
    return text.strip().lower() not in _FALSE


def boot() -> None:
    """The ``.pth``/``.start`` entry point: install unless disabled; never raises."""
    try:
        if _active is not None or is_true(os.environ.get("AUTOCOMPILE_DISABLE", "")):
            return  # venvs list site-packages twice (lib and lib64): the .pth runs twice
        root = os.environ.get("AUTOCOMPILE_CACHE_DIR") or _location.user_cache_dir()
        trusted = os.path.isdir(root) and _location.describe_untrusted(root) is None
        from_bundle = trusted and load_runtime(root)
        if install() and trusted and not from_bundle:
            save_runtime(root)
    except Exception as exc:  # a hook must never break interpreter start-up
        if os.environ.get("AUTOCOMPILE_LOG"):
            sys.stderr.write(f"autocompile: disabled: {type(exc).__name__}: {exc}\n")


def _bundle_path(root: str) -> str:
    """One bundle per installed copy of autocompile and interpreter."""
    identity = f"{_PACKAGE_DIR}\0{sys.version}".encode("utf-8", "surrogateescape")
    return os.path.join(root, "runtime", _imp.source_hash(_RAW_MAGIC_NUMBER, identity).hex())


def _fingerprint() -> str:
    """The runtime modules' sources as they are now: any change invalidates the bundle."""
    parts = []
    for name in RUNTIME_MODULES:
        st = os.stat(os.path.join(_PACKAGE_DIR, name + ".py"))
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}")
    return "|".join(parts)


def load_runtime(root: str) -> bool:
    """Execute the runtime modules from a valid bundle; return whether they were."""
    if "autocompile._finder" in sys.modules:
        return False
    try:
        fd = os.open(_bundle_path(root), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if (st.st_mode & 0o170000) != 0o100000 or (hasattr(os, "geteuid") and st.st_uid != os.geteuid()):
            return False
        data = os.read(fd, st.st_size)
    finally:
        os.close(fd)
    try:
        fingerprint, codes = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return False
    if fingerprint != _fingerprint() or len(codes) != len(RUNTIME_MODULES):
        return False
    package = sys.modules[__package__]
    loaded = []
    try:
        for name, code in zip(RUNTIME_MODULES, codes):
            fullname = f"{__package__}.{name}"
            if fullname in sys.modules:
                continue
            module = module_from_spec(spec_from_file_location(fullname, os.path.join(_PACKAGE_DIR, name + ".py")))
            sys.modules[fullname] = module
            loaded.append(fullname)
            exec(code, module.__dict__)
            setattr(package, name, module)
    except Exception:
        for fullname in loaded:
            sys.modules.pop(fullname, None)
        return False
    return True


def save_runtime(root: str) -> None:
    """Compile the runtime modules into a bundle for the next start."""
    from . import _store

    codes = []
    for name in RUNTIME_MODULES:
        path = os.path.join(_PACKAGE_DIR, name + ".py")
        with open(path, "rb") as file:
            codes.append(compile(file.read(), path, "exec", dont_inherit=True, optimize=2))  # no docstrings: smaller, faster
    try:
        _store.write_atomic(_bundle_path(root), marshal.dumps((_fingerprint(), tuple(codes))))
    except OSError:
        pass


def install(settings: "_config.Settings | None" = None) -> bool:  # noqa: F821
    """Install the import hook in this process; return whether it is active.

    For programs that start without ``site`` (``python -S``, embedded
    interpreters). Installing twice is harmless.
    """
    global _active
    if _active is not None:
        return True
    from . import _config, _log

    settings = settings or _config.load()
    _log.set_level(str(settings["log"]))
    if not settings["enabled"]:
        return False
    from _frozen_importlib_external import PathFinder

    from . import _finder, _loader, _profiles, _stats, _store

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

        extensions = _ext.open_tier(cache.store)
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

    from . import _stats

    sys.meta_path[:] = [PathFinder if entry is finder else entry for entry in sys.meta_path]
    _stats.flush(finder.cache.store.root)  # type: ignore[attr-defined]
    return True


def active_finder() -> "object | None":
    return _active
