"""Start-up: the runtime comes from its bundle in the cache, then the hook is installed.

This file and the package's ``__init__`` are all that the standard machinery
imports (and, with no ``.pyc``, compiles) at every start: keep them small. The
other start-up modules run from a *bundle* of their code objects, trusted by
its own file alone (a regular file of this user, not writable by others, whose
pin ties it to the sources). Each installed copy has a bundle pinned to its
files' ``stat``, so a start reads no source; a copy without one (a fresh venv)
uses the bundle of identical sources that another copy made, found by their
hash, and compiles nothing. Never raises.
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
        loaded = load_runtime(root)
        from ._install import start

        start(root, loaded)
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
    """This installed copy's bundle, for this interpreter."""
    identity = f"{PACKAGE_DIR}\0{sys.version}".encode("utf-8", "surrogateescape")
    return os.path.join(root, "runtime", _imp.source_hash(_RAW_MAGIC_NUMBER, identity).hex())


def source_path(name: str) -> str:
    return os.path.join(PACKAGE_DIR, name + ".py")


def runtime_sources() -> list[bytes]:
    """The runtime modules' source bytes, in order."""
    sources = []
    for name in RUNTIME_MODULES:
        with open(source_path(name), "rb") as file:
            sources.append(file.read())
    return sources


def fingerprint() -> str:
    """The runtime modules' sources as they are now: any change invalidates this copy's bundle."""
    parts = []
    for name in RUNTIME_MODULES:
        st = os.stat(source_path(name))
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}")
    return "|".join(parts)


def shared_bundle(root: str, sources: list[bytes]) -> tuple[str, str]:
    """The path and pin of the bundle that any copy of these exact sources can use, for this interpreter."""
    hashed = b"\0".join([sys.version.encode(), *sources])
    digest = _imp.source_hash(_RAW_MAGIC_NUMBER, hashed).hex()
    return os.path.join(root, "runtime", f"shared-{digest}"), f"{digest}:{len(hashed)}"


def load_runtime(root: str) -> str:
    """Execute the runtime modules from a valid bundle; say which one: ``"own"``, ``"shared"`` or ``""``."""
    if "autocompile._finder" in sys.modules:
        return ""
    codes = read_bundle(bundle_path(root), fingerprint())
    if codes is not None:
        return "own" if execute(codes) else ""
    codes = read_bundle(*shared_bundle(root, runtime_sources()))
    return "shared" if codes is not None and execute(codes) else ""


def read_bundle(path: str, pin: str) -> "tuple | None":
    """The code objects in the bundle at ``path``, if it may be trusted and carries ``pin``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        foreign = hasattr(os, "geteuid") and st.st_uid != os.geteuid()
        if (st.st_mode & 0o170000) != 0o100000 or foreign or st.st_mode & 0o022:
            return None
        data = os.read(fd, st.st_size)
    finally:
        os.close(fd)
    try:
        pinned, codes = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return None
    return codes if pinned == pin and len(codes) == len(RUNTIME_MODULES) else None


def execute(codes: tuple) -> bool:
    """Run the runtime modules' code as their modules; on any error, leave none of them behind."""
    package = sys.modules[__package__]
    loaded = []
    try:
        for name, code in zip(RUNTIME_MODULES, codes):
            fullname = f"{__package__}.{name}"
            if fullname in sys.modules:
                continue
            module = module_from_spec(spec_from_file_location(fullname, source_path(name)))
            sys.modules[fullname] = module
            loaded.append(fullname)
            exec(code, module.__dict__)
            setattr(package, name, module)
    except Exception:
        for fullname in loaded:
            sys.modules.pop(fullname, None)
        return False
    return True
