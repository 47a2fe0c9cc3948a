"""The Cython tier at import time: find a ready extension for a source module and load it.

Only this module is imported by the hook; building lives in ``_cython`` and is
never run during an import. Layout under the cache root::

    extnames               module names that have (or had) an extension: one per line
    ext/a/<key><suffix>    the extension modules, named by their extension key
    extindex/c/<statkey>   one entry per (source path, module name, stat): the key of its extension
    failed/a/<key>         builds that failed, with the compiler's reason

An extension file is never rewritten: new content has a new key, so a new
name, and a process that has mapped the old file keeps it.

The hook reads ``extnames`` once (one failed ``open`` when the tier was never
used); an import of a module not named there costs one set lookup. For one named
there, it costs a ``stat`` of the source, a read of the index entry and an
``lstat`` of the extension file.
"""


import os
import sys

import _imp
from _frozen_importlib_external import ExtensionFileLoader

from . import _keys, _log, _stats, _store

#: Store kinds next to ``_store.KIND_CODE``.
KIND_EXTINDEX = 1
KIND_EXTFAILED = 2
NAMES_FILE = "extnames"
#: Outcomes counted by ``_stats``.
EXT, EXT_FALLBACK = "ext", "ext_fallback"
#: The interpreter's own extension suffix (``importlib.machinery.EXTENSION_SUFFIXES[0]``).
EXT_SUFFIX = _imp.extension_suffixes()[0]


def index_context(fullname: str) -> bytes:
    """What an ``extindex`` stat key covers besides the source's path and ``stat``.

    The module name is in it: the same file imported under another name needs
    another extension (its ``PyInit_`` function is named after the module).
    """
    return b"\0".join(
        (
            b"autocompile-extindex",
            str(_keys.FORMAT_VERSION).encode(),
            (sys.implementation.cache_tag or "").encode(),
            EXT_SUFFIX.encode(),
            fullname.encode("utf-8", "surrogateescape"),
        )
    )


def index_key(fullname: str, path: str, st: os.stat_result) -> str:
    return _keys.stat_key(index_context(fullname), path, st)


def extension_path(root: str, key: str, suffix: str = EXT_SUFFIX) -> str:
    """Where the extension of ``key`` is; ``suffix``: the interpreter's it was built for."""
    return _store.sharded(f"{root}/ext", key + suffix)


def index_path(root: str, stat_key: str) -> str:
    return _store.sharded(f"{root}/extindex", stat_key)


def failed_path(root: str, key: str) -> str:
    return _store.sharded(f"{root}/failed", key)


def read_names(root: str) -> "frozenset[str] | None":
    """The module names with extensions, or ``None`` when the tier was never used here."""
    try:
        fd = os.open(f"{root}/{NAMES_FILE}", _store._OPEN_READ)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (st.st_mode & 0o170000) != 0o100000 or (_store._CHECK_OWNER and st.st_uid != os.geteuid()):
            return None
        data = os.read(fd, st.st_size) if st.st_size else b""
    finally:
        os.close(fd)
    return frozenset(data.decode("utf-8", "surrogateescape").split())


class ExtensionTier:
    """The extensions of one cache root, as the finder sees them."""

    __slots__ = ("store", "names")

    def __init__(self, store: _store.Store, names: "frozenset[str]") -> None:
        self.store = store
        self.names = names

    def find(self, fullname: str, spec):  # type: ignore[no-untyped-def]
        """``spec`` (a plain source module's) with a loader for its ready extension, or ``None``.

        Never raises: any trouble means "no extension", and bytecode serves the module.
        """
        if fullname not in self.names:
            return None
        path = spec.origin
        try:
            st = os.stat(path)
            entry = self.store.load(index_path(self.store.root, index_key(fullname, path, st)))
            if entry is None or entry.kind != KIND_EXTINDEX:
                return None
            if entry.meta.get("name") != fullname or entry.meta.get("suffix") != EXT_SUFFIX:
                return None
            so_path = extension_path(self.store.root, entry.key)
            so = os.lstat(so_path)
            if (so.st_mode & 0o170000) != 0o100000 or str(so.st_size) != entry.meta.get("size"):
                _log.debug(f"{fullname}: extension {so_path} is missing or has the wrong size")
                return None
            if self.store._uid is not None and so.st_uid != self.store._uid:
                return None
            if self.store.writable:
                _store.refresh_if_stale(so_path, so)
        except FileNotFoundError:
            return None
        except Exception as exc:
            _log.debug(f"{fullname}: no extension ({exc!r})")
            return None
        spec.loader = ExtensionLoader(spec.loader, so_path)
        return spec


def open_tier(store: _store.Store, excluded: "tuple[str, ...]" = ()) -> "ExtensionTier | None":
    """The tier of ``store``, or ``None`` (one failed ``open``) when no extension was ever built there.

    Modules matching an ``excluded`` pattern (the ``exclude_extensions`` setting)
    are left out of its names: bytecode serves them, at no cost per import.
    """
    names = read_names(store.root)
    if names and excluded:
        names = frozenset(name for name in names if not is_excluded(name, excluded))
    return ExtensionTier(store, names) if names else None


def is_excluded(fullname: str, patterns: "tuple[str, ...]") -> bool:
    """Whether a module-name glob of ``exclude_extensions`` matches ``fullname``.

    Plain names (what ``cythonize --hot`` sets while it measures) are compared
    without importing ``fnmatch`` and ``re``, which would load in one variant only.
    """
    if fullname in patterns:
        return True
    globs = [pattern for pattern in patterns if "*" in pattern or "?" in pattern or "[" in pattern]
    if not globs:
        return False
    from fnmatch import fnmatchcase

    return any(fnmatchcase(fullname, pattern) for pattern in globs)


def _bootstrap():  # type: ignore[no-untyped-def]
    import _frozen_importlib

    return _frozen_importlib


class ExtensionLoader(ExtensionFileLoader):
    """Loads a module from its extension while it looks like its source module.

    ``path`` (so ``get_filename``, ``get_resource_reader``, ``__file__``) is the
    ``.py`` path; only the ``dlopen`` uses the extension file. Source, code and
    package questions go to the stock ``SourceFileLoader`` the finder made (its
    ``get_code`` served by the cache), which also loads the module from bytecode
    when the extension cannot be loaded.
    """

    def __init__(self, source_loader, extension_path: str) -> None:  # type: ignore[no-untyped-def]
        self.name = source_loader.name
        self.path = source_loader.path
        self.source_loader = source_loader
        self.extension_path = extension_path
        self.fell_back = False

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is ExtensionLoader
            and other.name == self.name  # type: ignore[attr-defined]
            and other.extension_path == self.extension_path  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        return hash((self.name, self.extension_path))

    def __repr__(self) -> str:
        return f"<autocompile ExtensionLoader {self.name!r} from {self.extension_path!r} for {self.path!r}>"

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        shadow = _bootstrap().ModuleSpec(spec.name, self, origin=self.extension_path, is_package=spec.submodule_search_locations is not None)
        if spec.submodule_search_locations is not None:
            shadow.submodule_search_locations = list(spec.submodule_search_locations)
        try:
            module = _imp.create_dynamic(shadow)
        except Exception as exc:
            self._fall_back(spec.name, "load", exc)
            return self.source_loader.create_module(spec)
        try:
            module.__file__ = spec.origin
        except Exception:  # pragma: no cover - a module type without a writable __file__
            pass
        return module

    def exec_module(self, module) -> None:  # type: ignore[no-untyped-def]
        if self.fell_back:
            self.source_loader.exec_module(module)
            return
        try:
            _imp.exec_dynamic(module)
        except Exception as exc:
            # The module's initialisation failed in the extension: run it from
            # bytecode in a fresh module, which the import system picks up from
            # sys.modules. An error the source itself raises is raised again, as stock.
            self._fall_back(module.__name__, "init", exc)
            spec = module.__spec__
            fresh = _bootstrap()._new_module(spec.name)
            _bootstrap()._init_module_attrs(spec, fresh)
            sys.modules[spec.name] = fresh
            self.source_loader.exec_module(fresh)
            return
        _stats.count(EXT, module.__name__)
        if _log.debugging():
            _log.debug(f"{module.__name__}: extension ({self.extension_path})")

    def _fall_back(self, fullname: str, stage: str, exc: BaseException) -> None:
        self.fell_back = True
        _stats.count(EXT_FALLBACK, fullname)
        _log.debug(f"{fullname}: extension failed to {stage}, using bytecode ({type(exc).__name__}: {exc})")

    # Everything else is the source module's.

    def get_filename(self, name=None):  # type: ignore[no-untyped-def]
        return self.path

    def is_package(self, fullname: str) -> bool:
        return self.source_loader.is_package(fullname)

    def get_code(self, fullname: str):  # type: ignore[no-untyped-def]
        return self.source_loader.get_code(fullname)

    def get_source(self, fullname: str):  # type: ignore[no-untyped-def]
        return self.source_loader.get_source(fullname)

    def get_data(self, path: str) -> bytes:
        return self.source_loader.get_data(path)

    def get_resource_reader(self, name=None):  # type: ignore[no-untyped-def]
        return self.source_loader.get_resource_reader(name)


def is_extension_loader(loader: object) -> bool:
    return type(loader) is ExtensionLoader
