"""Start-up: the package and its runtime come from their bundle in the cache, then the hook is installed.

Where this file has a ``.pyc`` (installers compile by default) the ``.pth``
line imports it as usual. Without one it runs this file's *text* as
``autocompile._bootstrap`` (the package found as the standard import would
find it), and the bundle holds the package's ``__init__`` and the other
start-up modules, so that a start compiles nothing: the standard import of a
module without ``.pyc`` calls ``compile()``, and a process's first
``compile()`` sets up the ``ast`` types (9.4 million instructions on CPython
3.11), which ``exec`` of text does not; parsing the text still costs about
8 million, loading the ``.pyc`` a fraction of one. A bundle is
trusted by its own file alone (a regular file of this user, not writable by
others, whose pin ties it to the sources). Each installed copy has a bundle
pinned to its files' ``stat``, so a start reads no source; a copy without one
(a fresh venv) uses the bundle of identical sources that another copy made,
found by their hash, and compiles nothing; without either, the standard import
runs. Never raises.
"""

import marshal
import os
import sys

import _imp
from _frozen_importlib import module_from_spec
from _frozen_importlib_external import _RAW_MAGIC_NUMBER, spec_from_file_location

#: The modules a bundle holds, each after those it imports: the package first.
BUNDLED = (
    "__init__", "_location", "_log", "_profiles", "_config", "_keys", "_store", "_stats", "_loader", "_finder", "_install"
)
#: The files a bundle is pinned to: those it holds, and this one, which runs them.
PINNED = ("_bootstrap", *BUNDLED)
PACKAGE_DIR = os.path.dirname(__file__)
#: The name of a bundle any copy of the same sources can use starts with this.
SHARED_PREFIX = "shared-"
_APP_NAME = "autocompile"
_FALSE = ("", "0", "false", "no", "off")


def boot() -> None:
    """The ``.pth``/``.start`` entry point: install unless disabled; never raises."""
    try:
        if os.environ.get("AUTOCOMPILE_DISABLE", "").strip().lower() not in _FALSE:
            return
        root = os.environ.get("AUTOCOMPILE_CACHE_DIR") or user_cache_dir()
        loaded = load_runtime(root)
        from . import _install  # the standard import, for what no bundle served

        package = sys.modules[__package__]
        if not hasattr(package, "_bootstrap"):  # run as text by the .pth line, before its package existed
            package._bootstrap = sys.modules[__name__]  # type: ignore[attr-defined]
        _install.start(root, loaded)
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


def pinned_sources() -> dict[str, bytes]:
    """The pinned files' source bytes, by module name."""
    sources = {}
    for name in PINNED:
        with open(source_path(name), "rb") as file:
            sources[name] = file.read()
    return sources


def fingerprint() -> str:
    """The pinned files as they are now: any change invalidates this copy's bundle."""
    parts = []
    for name in PINNED:
        st = os.stat(source_path(name))
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}")
    return "|".join(parts)


def shared_bundle(root: str, sources: dict[str, bytes]) -> tuple[str, str]:
    """The path and pin of the bundle that any copy of these exact sources can use, for this interpreter."""
    hashed = b"\0".join([sys.version.encode(), *sources.values()])
    digest = _imp.source_hash(_RAW_MAGIC_NUMBER, hashed).hex()
    return os.path.join(root, "runtime", SHARED_PREFIX + digest), f"{digest}:{len(hashed)}"


def load_runtime(root: str) -> str:
    """Execute the bundled modules from a valid bundle; say which one: ``"own"``, ``"shared"`` or ``""``."""
    if f"{__package__}._install" in sys.modules:
        return ""
    try:
        codes = read_bundle(bundle_path(root), fingerprint())
        if codes is not None:
            return "own" if execute(codes) else ""
        codes = read_bundle(*shared_bundle(root, pinned_sources()))
    except OSError:  # a pinned file is missing: the standard import says what is wrong
        return ""
    return "shared" if codes is not None and execute(codes) else ""


def read_bundle(path: str, pin: str) -> "tuple | None":
    """The code objects in the bundle at ``path``, if it may be trusted and carries ``pin``, naming this
    copy's files (a shared bundle's code names the copy that made it; stock renames a moved ``.pyc`` so)."""
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
        if pinned != pin or len(codes) != len(BUNDLED):
            return None
        for name, code in zip(BUNDLED, codes):
            _imp._fix_co_filename(code, source_path(name))  # a string comparison where they match
    except (EOFError, ValueError, TypeError):  # damaged: the standard import runs
        return None
    return codes


def execute(codes: tuple) -> bool:
    """Run the bundled code as its modules, where not imported yet; on any error, leave none of them behind."""
    loaded = []
    try:
        for name, code in zip(BUNDLED, codes):
            fullname = __package__ if name == "__init__" else f"{__package__}.{name}"
            if fullname in sys.modules:
                continue
            module = module_from_spec(spec_from_file_location(fullname, source_path(name)))
            sys.modules[fullname] = module
            loaded.append(fullname)
            exec(code, module.__dict__)
            if name != "__init__":
                setattr(sys.modules[__package__], name, module)
    except Exception:
        for fullname in loaded:
            sys.modules.pop(fullname, None)
        return False
    return True
