"""Start-up: the runtime comes from its bundle in the cache, then the hook is installed.

This file and the package's ``__init__`` are all that the standard machinery
imports (and, with no ``.pyc``, compiles) at every start: keep them small. The
other start-up modules run from a *bundle* of their code objects, trusted by
its own file alone (a regular file of this user, not writable by others, whose
fingerprint pins it to this installed copy's sources). Never raises.
"""

import marshal
import os
import sys

import _imp
from _frozen_importlib import module_from_spec
from _frozen_importlib_external import _RAW_MAGIC_NUMBER, spec_from_file_location

#: autocompile's own start-up modules, each after those it imports.
RUNTIME_MODULES = (
    "_location", "_log", "_profiles", "_config", "_keys", "_store", "_stats", "_loader", "_finder", "_install"
)
PACKAGE_DIR = os.path.dirname(__file__)
_APP_NAME = "autocompile"
_FALSE = ("", "0", "false", "no", "off")


def boot() -> None:
    """The ``.pth``/``.start`` entry point: install unless disabled; never raises."""
    try:
        if os.environ.get("AUTOCOMPILE_DISABLE", "").strip().lower() not in _FALSE:
            return
        root = os.environ.get("AUTOCOMPILE_CACHE_DIR") or user_cache_dir()
        from_bundle = load_runtime(root)
        from ._install import start

        start(root, from_bundle)
    except Exception as exc:  # a hook must never break interpreter start-up
        if os.environ.get("AUTOCOMPILE_LOG"):
            sys.stderr.write(f"autocompile: disabled: {type(exc).__name__}: {exc}\n")


def user_cache_dir() -> str:
    """``platformdirs.user_cache_dir("autocompile")``, without importing platformdirs (tests compare)."""
    if sys.platform == "win32":
        import platformdirs

        return platformdirs.user_cache_dir(_APP_NAME)
    if sys.platform == "darwin":
        return os.path.join(os.path.expanduser("~/Library/Caches"), _APP_NAME)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.expanduser("~/.cache")
    return os.path.join(base, _APP_NAME)


def bundle_path(root: str) -> str:
    """One bundle per installed copy of autocompile and interpreter."""
    identity = f"{PACKAGE_DIR}\0{sys.version}".encode("utf-8", "surrogateescape")
    return os.path.join(root, "runtime", _imp.source_hash(_RAW_MAGIC_NUMBER, identity).hex())


def fingerprint() -> str:
    """The runtime modules' sources as they are now: any change invalidates the bundle."""
    parts = []
    for name in RUNTIME_MODULES:
        st = os.stat(os.path.join(PACKAGE_DIR, name + ".py"))
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}")
    return "|".join(parts)


def load_runtime(root: str) -> bool:
    """Execute the runtime modules from a valid bundle; return whether they were."""
    if "autocompile._finder" in sys.modules:
        return False
    try:
        fd = os.open(bundle_path(root), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        foreign = hasattr(os, "geteuid") and st.st_uid != os.geteuid()
        if (st.st_mode & 0o170000) != 0o100000 or foreign or st.st_mode & 0o022:
            return False
        data = os.read(fd, st.st_size)
    finally:
        os.close(fd)
    try:
        pinned, codes = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return False
    if pinned != fingerprint() or len(codes) != len(RUNTIME_MODULES):
        return False
    package = sys.modules[__package__]
    loaded = []
    try:
        for name, code in zip(RUNTIME_MODULES, codes):
            fullname = f"{__package__}.{name}"
            if fullname in sys.modules:
                continue
            module = module_from_spec(spec_from_file_location(fullname, os.path.join(PACKAGE_DIR, name + ".py")))
            sys.modules[fullname] = module
            loaded.append(fullname)
            exec(code, module.__dict__)
            setattr(package, name, module)
    except Exception:
        for fullname in loaded:
            sys.modules.pop(fullname, None)
        return False
    return True
