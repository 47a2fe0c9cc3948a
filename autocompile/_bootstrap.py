"""Start-up: run the hook's runtime from its bundle in the cache, then install it.

Run by ``autocompile.pth`` (and ``autocompile.start`` on Python 3.15+) at
every interpreter start, so it never raises. This module and the package's
``__init__`` are the only ones the standard machinery imports (and, without a
``.pyc``, compiles) at every start: the rest of the runtime is executed from a
*bundle* of its code objects kept in the cache, so autocompile starts warm even
where its own ``__pycache__`` cannot exist.

A bundle is trusted by its own file alone: a regular file owned by this user,
not writable by others, whose fingerprint pins it to the very source files of
this installed copy. The cache directory's own checks come later, in
``_install``, before any cached code of the user's modules is served.
"""

import marshal
import os
import sys

import _imp
from _frozen_importlib import module_from_spec
from _frozen_importlib_external import _RAW_MAGIC_NUMBER, spec_from_file_location

_FALSE = frozenset({"", "0", "false", "no", "off"})
#: autocompile's own start-up modules, each after those it imports.
RUNTIME_MODULES = (
    "_location", "_log", "_profiles", "_config", "_keys", "_store", "_stats", "_loader", "_finder", "_install"
)
_PACKAGE_DIR = os.path.dirname(__file__)
_APP_NAME = "autocompile"


def is_true(text: str) -> bool:
    return text.strip().lower() not in _FALSE


def boot() -> None:
    """The ``.pth``/``.start`` entry point: install unless disabled; never raises."""
    try:
        if is_true(os.environ.get("AUTOCOMPILE_DISABLE", "")):
            return
        if f"{__package__}._install" in sys.modules and sys.modules[f"{__package__}._install"].active_finder():
            return  # venvs list site-packages twice (lib and lib64): the .pth runs twice
        root = os.environ.get("AUTOCOMPILE_CACHE_DIR") or user_cache_dir()
        from_bundle = load_runtime(root)
        from ._install import install

        if install() and not from_bundle:
            save_runtime(root)
    except Exception as exc:  # a hook must never break interpreter start-up
        if os.environ.get("AUTOCOMPILE_LOG"):
            sys.stderr.write(f"autocompile: disabled: {type(exc).__name__}: {exc}\n")


def user_cache_dir() -> str:
    """``platformdirs.user_cache_dir("autocompile")`` without importing platformdirs.

    platformdirs pulls in ``pathlib``, ``re`` and more: too slow for every start-up.
    The result is checked against platformdirs by the tests.
    """
    if sys.platform == "win32":
        import platformdirs

        return platformdirs.user_cache_dir(_APP_NAME)
    if sys.platform == "darwin":
        return os.path.join(os.path.expanduser("~/Library/Caches"), _APP_NAME)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.expanduser("~/.cache")
    return os.path.join(base, _APP_NAME)


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
        foreign = hasattr(os, "geteuid") and st.st_uid != os.geteuid()
        if (st.st_mode & 0o170000) != 0o100000 or foreign or st.st_mode & 0o022:
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
    """Compile the runtime modules into a bundle for the next start (in a trusted cache only)."""
    from . import _location, _store

    if _location.describe_untrusted(root) is not None:
        return
    codes = []
    for name in RUNTIME_MODULES:
        path = os.path.join(_PACKAGE_DIR, name + ".py")
        with open(path, "rb") as file:
            codes.append(compile(file.read(), path, "exec", dont_inherit=True, optimize=2))  # no docstrings: smaller, faster
    try:
        _store.write_atomic(_bundle_path(root), marshal.dumps((_fingerprint(), tuple(codes))))
    except OSError:
        pass
