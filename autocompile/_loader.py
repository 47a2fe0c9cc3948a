"""The loader's ``get_code``: stock ``SourceFileLoader`` in every respect but where code comes from.

``get_code`` looks up the stat index (one ``stat``, one read), then a valid
stock ``.pyc`` (which stock would use), then the object store by content (the
source is read and hashed), and only then compiles. Anything going wrong inside the cache is a miss or a
fallback to the stock ``get_code``; errors in the user's source surface exactly
as stock, because the compile call and its traceback are stock.
"""

import marshal
import os
import sys
from time import perf_counter_ns, time_ns

import _imp
from _frozen_importlib import _call_with_frames_removed
from _frozen_importlib_external import SourceFileLoader, cache_from_source

from . import _keys, _log, _profiles, _stats, _store

#: A source whose last change is more recent than this may change again within the
#: file system's timestamp granularity without changing its ``stat``; it is not indexed
#: until it has settled (as git does for "racily clean" files).
SETTLE_NS = 2_000_000_000
#: ``types.CodeType``: ``types`` is not imported at start-up, and a first ``compile()`` would build
#: the compiler's AST types (about 2 ms).
CodeType = type(_call_with_frames_removed.__code__)
_IMPORTLIB_FILENAME = "<frozen importlib._bootstrap_external>"
_AST_ONLY = 0x400  # ast.PyCF_ONLY_AST, without importing ast


class CodeCache:
    """Compiled code in a store, for this interpreter, an optimize level and a profile."""

    def __init__(self, store: _store.Store, optimize: int, profile: str = "", max_size: int = 0) -> None:
        self.store = store
        self.optimize = optimize
        self.profile = profile
        self.max_size = max_size
        self.context = _keys.code_context(optimize, profile)
        self.context_id = _keys.context_id(self.context)
        #: The settings of the remote tier when it is on (set at install), else ``None``.
        self.remote: object = None

    def stat_key(self, path: str, st: os.stat_result) -> str:
        return _keys.stat_key(self.context, path, st)

    def content_key(self, source: bytes) -> str:
        return _keys.content_key(self.context, source)

    def load_indexed(self, stat_key: str, st: os.stat_result) -> CodeType | None:
        """The code an index entry points at: no hashing, no source read."""
        try:
            entry = self.store.load(self.store.index_path(stat_key), context_id=self.context_id, source_size=st.st_size)
        except _store.CorruptEntry:
            return None
        return None if entry is None else _unmarshal(entry.payload)

    def load_object(self, key: str) -> CodeType | None:
        try:
            entry = self.store.load(self.store.object_path(key), key, context_id=self.context_id)
        except _store.CorruptEntry:
            return None
        return None if entry is None else _unmarshal(entry.payload)

    def stock_code(self, loader: SourceFileLoader, path: str, st: os.stat_result) -> CodeType | None:
        """Code from a stock ``__pycache__`` file that stock would use, or ``None``.

        Served as stock would serve it, but never copied into the shared store: a
        pyc is not derived from its source by anything autocompile can check
        without compiling. A timestamp pyc must also have been written no earlier
        than the source last changed (its mtime against the source's ctime), so
        that ``touch -r`` after an edit does not make a stale pyc look valid.
        """
        if self.profile:
            return None
        try:
            pyc_path = cache_from_source(path)
            with open(pyc_path, "rb") as file:
                data = file.read()
                pyc_mtime_ns = os.fstat(file.fileno()).st_mtime_ns
        except (OSError, NotImplementedError, ValueError):
            return None
        if len(data) < 16 or data[:4] != _keys.MAGIC_NUMBER:
            return None
        flags = int.from_bytes(data[4:8], "little")
        if flags == 0:
            valid = (
                int.from_bytes(data[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
                and int.from_bytes(data[12:16], "little") == st.st_size & 0xFFFFFFFF
                and pyc_mtime_ns >= st.st_ctime_ns
            )
        elif flags in (1, 3):
            check = _imp.check_hash_based_pycs
            must_check = check != "never" and (flags == 3 or check == "always")
            valid = not must_check or data[8:16] == _keys.source_hash(loader.get_data(path))
        else:
            valid = False
        return _unmarshal(memoryview(data)[16:]) if valid else None  # as stock: no copy of the code

    def store_code(self, key: str, code: CodeType, meta: dict[str, str]) -> str:
        """Publish compiled code under its content key; return the object's path."""
        payload = marshal.dumps(code)
        data = _store.pack(
            _store.KIND_CODE, key, payload, meta, context_id=self.context_id, source_size=int(meta["source_size"])
        )
        path = self.store.write_object(key, data)
        if self.max_size:
            own_module("_evict").after_write(self.store, len(data), self.max_size)
        return path

    def remember(self, stat_key: str, st: os.stat_result, key: str) -> bool:
        """Index the source's current ``stat`` once it has settled; return whether it was indexed."""
        if time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < SETTLE_NS:
            return False
        self.store.link_index(stat_key, self.store.object_path(key))
        return True

    def meta(self, fullname: str, path: str, source: bytes, compile_ns: int) -> dict[str, str]:
        return {
            "name": fullname,
            "path": path,
            "tag": _stats._TAG,
            "optimize": str(self.optimize),
            "profile": self.profile,
            "source_size": str(len(source)),
            "compile_ns": str(compile_ns),
        }


def _unmarshal(payload: bytes) -> CodeType | None:
    try:
        code = marshal.loads(payload)
    except (EOFError, ValueError, TypeError):
        return None
    return code if type(code) is CodeType else None


def _importlib_frame(function):  # type: ignore[no-untyped-def]
    """Give ``function`` importlib's file name.

    ``import.c`` trims importlib's frames from the traceback of an error in the
    user's module (a ``SyntaxError``, say) only when they form one unbroken run;
    a frame of ours in the middle would leave four importlib frames and ours in
    every such traceback. Wearing importlib's name, ours is trimmed with them.
    """
    function.__code__ = function.__code__.replace(co_filename=_IMPORTLIB_FILENAME)
    return function


_importing_own = False  # see own_module


def own_module(name: str):  # type: ignore[no-untyped-def]
    """One of autocompile's modules that the import path needs only sometimes, imported on first use.

    Whatever that import itself imports (``__future__``, say) is served the stock
    way: through the cache, it could come back here for a module that is only
    half initialized (the re-entrancy pytest's assertion rewriting guards
    against too).
    """
    global _importing_own
    fullname = f"{__package__}.{name}"
    module = sys.modules.get(fullname)
    if module is None:
        _importing_own = True
        try:
            __import__(fullname)
            module = sys.modules[fullname]
        finally:
            _importing_own = False
    return module


class CachedGetCode:
    """``get_code`` for one stock ``SourceFileLoader``, set on the instance by the finder.

    The loader stays a plain ``SourceFileLoader`` (not a subclass): code that looks
    loaders up by exact type, such as distlib's resource finders inside pip, keeps
    working, and every other method is stock because it is stock.
    """

    __slots__ = ("loader", "cache")

    def __init__(self, loader: SourceFileLoader, cache: CodeCache) -> None:
        self.loader = loader
        self.cache = cache

    def __eq__(self, other: object) -> bool:
        return type(other) is CachedGetCode and other.cache is self.cache  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return id(self.cache)

    @_importlib_frame
    def __call__(self, fullname: str) -> CodeType | None:
        loader, cache = self.loader, self.cache
        if _importing_own:
            return SourceFileLoader.get_code(loader, fullname)
        path = loader.get_filename(fullname)
        try:
            st = os.stat(path)
            stat_key = cache.stat_key(path, st)
            code = cache.load_indexed(stat_key, st)
            if code is not None:
                outcome = _stats.HIT
            else:
                code = cache.stock_code(loader, path, st)
                outcome = _stats.STOCK_PYC
        except Exception as exc:
            return self._stock_code(fullname, exc)
        if code is not None:
            _imp._fix_co_filename(code, path)
            _stats.count(outcome, fullname)
            _log.debugging() and _log.debug(f"{fullname}: {outcome} ({path})")
            return code
        source = loader.get_data(path)
        try:
            key = cache.content_key(source)
            code = cache.load_object(key)
            if code is None and cache.remote is not None:
                # imported only now, on a local miss with the remote tier on; never raises, keeps its budget
                code = own_module("_remote").fetch_for_import(cache, key, fullname)
        except Exception as exc:
            return self._stock_code(fullname, exc)
        compile_ns = 0
        if code is None:
            started = perf_counter_ns()
            if cache.profile:  # parse and compile as stock does, transform in between
                tree = _call_with_frames_removed(compile, source, path, "exec", _AST_ONLY, True, cache.optimize)
                tree = _profiles.transform(tree, cache.profile)
                code = _call_with_frames_removed(compile, tree, path, "exec", 0, True, cache.optimize)
            else:
                code = loader.source_to_code(source, path)
            compile_ns = perf_counter_ns() - started
        try:
            if compile_ns and cache.store.writable:
                cache.store_code(key, code, cache.meta(fullname, path, source, compile_ns))
            indexed = cache.store.writable and cache.remember(stat_key, st, key)
        except Exception as exc:
            _note_failure(fullname, exc)
            return code
        _imp._fix_co_filename(code, path)
        outcome = _stats.COMPILED if compile_ns else _stats.REUSED
        _stats.count(outcome, fullname)
        if compile_ns:
            _stats.count(_stats.COMPILE_NS, fullname, compile_ns)
        if _log.debugging():
            _log.debug(f"{fullname}: {outcome} ({path}){'' if indexed else '; not indexed yet: changed recently'}")
        return code

    @_importlib_frame
    def _stock_code(self, fullname: str, exc: Exception) -> CodeType | None:
        _note_failure(fullname, exc)
        return SourceFileLoader.get_code(self.loader, fullname)


def serve_from_cache(loader: SourceFileLoader, cache: CodeCache) -> None:
    """Make ``loader`` take its code objects from ``cache``."""
    loader.get_code = CachedGetCode(loader, cache)  # type: ignore[method-assign]


def is_served(loader: object) -> bool:
    """Whether ``loader`` gets its code from the cache (for tools and tests)."""
    return type(getattr(loader, "__dict__", {}).get("get_code")) is CachedGetCode


def _note_failure(fullname: str, exc: Exception) -> None:
    """Count a fallback. I/O trouble is expected (full or read-only disk); anything else is a bug."""
    _stats.count(_stats.FALLBACK, fullname)
    if isinstance(exc, OSError):
        _log.debug(f"{fullname}: fallback ({exc})")
    else:
        _log.warn_once("bug", f"internal error, using the standard import ({type(exc).__name__}: {exc})")
        _log.debug(f"{fullname}: fallback ({exc!r})")
