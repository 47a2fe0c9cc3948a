"""The meta-path finder: the standard ``PathFinder``, with cached code for plain source modules.

It takes ``PathFinder``'s own slot on ``sys.meta_path`` rather than sitting in
front of it: sitting in front would make every failed import search
``sys.path`` twice. Everything else ``PathFinder`` offers (distributions for
``importlib.metadata``, cache invalidation) is passed through, and it compares
equal to ``PathFinder`` so code that looks for it on ``sys.meta_path`` still
finds it.
"""

import sys

from _frozen_importlib_external import PathFinder, SourceFileLoader

from ._loader import CodeCache, serve_from_cache
from ._profiles import Rules

#: autocompile's own modules are left to the standard machinery: the hook imports
#: some of them lazily (eviction, the remote tier) while it serves an import.
_OWN_PREFIX = __package__ + "."


class AutocompileFinder:
    """Delegates discovery to ``PathFinder``; serves code for specs of plain source files only.

    The spec, and its loader object, are the ones ``PathFinder`` made: only the
    loader's ``get_code`` is replaced, on that instance.
    """

    def __init__(
        self,
        path_finder: type[PathFinder],
        cache: CodeCache,
        excluded: tuple[str, ...] = (),
        profiles: Rules | None = None,
        extensions: "object | None" = None,
    ) -> None:
        self.path_finder = path_finder
        self.cache = cache
        self.excluded = excluded
        self.profiles = profiles
        self.extensions = extensions  # the Cython tier (``_ext.ExtensionTier``), if it has entries
        self._profiled_caches: dict[str, CodeCache] = {}
        self._loading_transforms = False
        if excluded:  # imported now: importing it while finding a module would recurse
            from fnmatch import fnmatchcase

            self._fnmatchcase = fnmatchcase

    def find_spec(self, fullname: str, path=None, target=None):  # type: ignore[no-untyped-def]
        spec = self.path_finder.find_spec(fullname, path, target)
        if (
            spec is not None
            and type(spec.loader) is SourceFileLoader
            and spec.has_location
            and not fullname.startswith(_OWN_PREFIX)  # the hook imports these while serving an import
        ):
            try:
                if not (self.excluded and self._is_excluded(fullname, spec.origin)):
                    serve_from_cache(spec.loader, self.cache_for(fullname, spec.origin))
                    if self.extensions is not None:
                        spec = self.extensions.find(fullname, spec) or spec  # type: ignore[attr-defined]
            except Exception:  # fail open: the stock spec is still a good answer
                pass
        return spec

    def cache_for(self, fullname: str, origin: str) -> CodeCache:
        """The cache of the optimization profile that applies to this module.

        The modules that loading the transformations imports (``ast`` and what
        it needs) never get one: they are imported first, without a profile, so
        that compiling under a profile never needs a module that is itself
        waiting for a profile.
        """
        if self._loading_transforms:
            return self.cache
        rule = self.profiles.match(fullname, origin) if self.profiles is not None else None
        if rule is None or not rule.profile:
            return self.cache
        if "autocompile._transform" not in sys.modules:
            self._loading_transforms = True
            try:
                from . import _transform  # noqa: F401
            finally:
                self._loading_transforms = False
        cache = self._profiled_caches.get(rule.profile)
        if cache is None:
            cache = CodeCache(self.cache.store, self.cache.optimize, rule.profile, self.cache.max_size)
            cache.remote = self.cache.remote
            self._profiled_caches[rule.profile] = cache
        return cache

    def _is_excluded(self, fullname: str, origin: str) -> bool:
        """``exclude`` patterns match a module name (``pkg.*``) or a source path (``*/pkg/*``)."""
        return any(
            self._fnmatchcase(origin if "/" in pattern or "\\" in pattern else fullname, pattern)
            for pattern in self.excluded
        )

    def invalidate_caches(self) -> None:
        self.path_finder.invalidate_caches()

    def find_distributions(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self.path_finder.find_distributions(*args, **kwargs)

    def __eq__(self, other: object) -> bool:
        return other is self or other is self.path_finder

    def __hash__(self) -> int:
        return hash(self.path_finder)

    def __repr__(self) -> str:
        return f"<AutocompileFinder wrapping {self.path_finder.__name__} at {self.cache.store.root!r}>"
