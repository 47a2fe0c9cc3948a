"""``autocompile explain``: where an import would come from, and why, without importing it.

The module is located the way the import system would (top-level names with
``importlib.util.find_spec``, submodules with ``PathFinder`` on the parent's
``__path__``, taken from ``sys.modules`` when the parent is already loaded),
so none of its code, nor any package ``__init__`` on the way, runs. The keys
are computed with the loader's own ``CodeCache`` methods, so the verdict is
the loader's.
"""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import os
import sys
from time import time_ns

from . import _config, _ext, _finder, _loader, _location, _manage, _profiles, _stats, _store

HIT, STOCK_PYC, REUSED, COMPILE, EXTENSION = "hit", "stock pyc", "reused", "compile", "extension"
CHANGED, OTHER_BUILD = "source changed", "other interpreter"
EXCLUDED, DISABLED, UNTRUSTED, NOT_SOURCE = "excluded", "disabled", "untrusted", "not source"


class NotFound(Exception):
    """No module of that name can be found."""


def find_spec(fullname: str) -> importlib.machinery.ModuleSpec:
    """The spec an import of ``fullname`` would use; nothing of the module or its parents is executed."""
    parts = fullname.split(".")
    if not all(part.isidentifier() for part in parts):
        raise NotFound(f"not a module name: {fullname!r}")
    spec = _loaded_spec(parts[0]) or importlib.util.find_spec(parts[0])
    for depth in range(1, len(parts)):
        if spec is None:
            break
        parent = sys.modules.get(".".join(parts[:depth]))
        search = getattr(parent, "__path__", None) or spec.submodule_search_locations
        if search is None:
            raise NotFound(f"{'.'.join(parts[:depth])} is not a package")
        name = ".".join(parts[: depth + 1])
        spec = _loaded_spec(name) or importlib.machinery.PathFinder.find_spec(name, list(search))
    if spec is None:
        raise NotFound(f"no module named {fullname!r}")
    return spec


def _loaded_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    module = sys.modules.get(name)
    return getattr(module, "__spec__", None) if module is not None else None


def _kind(spec: importlib.machinery.ModuleSpec) -> str | None:
    """Why the hook leaves this module to the standard import, or ``None`` for a plain source file."""
    loader = spec.loader
    if isinstance(loader, importlib.machinery.SourceFileLoader) and spec.has_location:
        return None
    if spec.origin in (None, "namespace"):
        return "a namespace package, with no code of its own"
    if spec.origin in ("built-in", "frozen"):
        return f"a {spec.origin} module, with no source file"
    return f"loaded by {getattr(loader, '__name__', type(loader).__name__)} from {spec.origin}"


def explain(fullname: str, settings: _config.Settings) -> dict[str, object]:
    """The verdict for ``fullname`` in this interpreter, as a JSON-ready document."""
    spec = find_spec(fullname)
    root = str(settings["cache_dir"] or "")
    document: dict[str, object] = {"module": fullname, "origin": spec.origin, "cache_dir": root, "notes": []}
    not_source = _kind(spec)
    if not settings["enabled"]:
        return _verdict(document, DISABLED, "the hook is disabled (AUTOCOMPILE_DISABLE or enabled = false)")
    if not_source:
        return _verdict(document, NOT_SOURCE, f"not a plain source module: {not_source}")
    origin = str(spec.origin)
    excluded = tuple(settings["exclude"])  # type: ignore[arg-type]
    finder = _finder.AutocompileFinder(importlib.machinery.PathFinder, None, excluded)  # type: ignore[arg-type]
    if excluded and finder._is_excluded(fullname, origin):
        return _verdict(document, EXCLUDED, f"excluded by config (exclude = {list(excluded)})")
    untrusted = _location.describe_untrusted(root) if os.path.isdir(root) else None
    if untrusted:
        return _verdict(document, UNTRUSTED, f"cache untrusted, the standard import is used: {untrusted}")
    rules = _profiles.parse(str(settings["profiles"]), settings.values["profiles"].origin, [])
    rule = _profiles.Rules(rules).match(fullname, origin) if rules else None
    document.update(profile=(rule.profile if rule else "") or "none", profile_rule=str(rule) if rule else None)
    extension = _extension(fullname, spec, root, tuple(settings["exclude_extensions"]), document)  # type: ignore[arg-type]
    if extension is not None:
        return _verdict(document, EXTENSION, f"extension {extension}: loaded instead of bytecode (bytecode if it fails to load)")
    return _lookup(document, spec.loader, origin, root, settings, rule.profile if rule else "")  # type: ignore[arg-type]


def _extension(
    fullname: str, spec: importlib.machinery.ModuleSpec, root: str, excluded: tuple[str, ...], document: dict[str, object]
) -> str | None:
    """The extension the finder would load for ``fullname``; a note when one exists for another version of the source."""
    tier = _ext.open_tier(_store.Store(root, writable=False))
    if tier is None or fullname not in tier.names:
        return None
    if _ext.is_excluded(fullname, excluded):
        document["notes"].append(f"exclude_extensions = {list(excluded)} leaves this module to bytecode")  # type: ignore[union-attr]
        return None
    found = tier.find(fullname, copy.copy(spec))  # find() sets the loader of the spec it is given
    if found is None:
        document["notes"].append(  # type: ignore[union-attr]
            "an extension was built for this module, but not for its source as it is now: bytecode is used "
            "(autocompile cythonize rebuilds it; autocompile cythonize --list says why a build failed)"
        )
        return None
    return str(found.loader.extension_path)


def _lookup(
    document: dict[str, object],
    loader: importlib.machinery.SourceFileLoader,
    origin: str,
    root: str,
    settings: _config.Settings,
    profile: str,
) -> dict[str, object]:
    """The loader's own decision: index by ``stat``, a stock pyc, the object by content, else compile."""
    notes: list[str] = document["notes"]  # type: ignore[assignment]
    cache = _loader.CodeCache(_store.Store(root, writable=False), sys.flags.optimize, profile)
    st = os.stat(origin)
    with open(origin, "rb") as file:
        source = file.read()
    stat_key, content_key = cache.stat_key(origin, st), cache.content_key(source)
    document.update(optimize=cache.optimize, stat_key=stat_key, content_key=content_key)
    if not os.access(root, os.W_OK) or (settings["honour_dont_write_bytecode"] and sys.dont_write_bytecode):
        notes.append("the cache is read-only for this process: a miss is compiled and not stored")
    if time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < _loader.SETTLE_NS:
        notes.append("the source changed in the last seconds: it is indexed only once it has settled")
    if cache.load_indexed(stat_key, st) is not None:
        return _verdict(document, HIT, f"hit: index entry {cache.store.index_path(stat_key)}")
    if cache.stock_code(loader, origin, st) is not None:
        return _verdict(document, STOCK_PYC, "served from its valid __pycache__ file, as stock Python would (not copied into the cache)")
    if cache.load_object(content_key) is not None:
        return _verdict(document, REUSED, "miss: no index entry for the file as it is now, but the same content is "
                        f"cached ({cache.store.object_path(content_key)}): reused without compiling, then indexed")
    same_path = [r for r in _manage.records(root) if r.is_object() and r.meta.get("path") == origin]
    ours = [
        r
        for r in same_path
        if r.meta.get("tag") == _stats._TAG and r.meta.get("optimize") == str(cache.optimize) and r.meta.get("profile", "") == profile
    ]
    if ours:
        return _verdict(document, CHANGED, "miss: the source changed since it was cached: it will be compiled")
    if same_path:
        builds = sorted(
            {f"{r.meta.get('tag')} optimize={r.meta.get('optimize')} profile={r.meta.get('profile') or 'none'}" for r in same_path}
        )
        return _verdict(
            document, OTHER_BUILD, f"miss: cached only for another interpreter, optimize level or profile ({', '.join(builds)}): it will be compiled"
        )
    return _verdict(document, COMPILE, "miss: never cached: it will be compiled and stored")


def _verdict(document: dict[str, object], verdict: str, reason: str) -> dict[str, object]:
    document.update(verdict=verdict, reason=reason)
    return document
