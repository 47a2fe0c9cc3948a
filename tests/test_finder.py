"""The finder: standard discovery, only plain source modules taken over."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from conftest import run_python, write_tree

LOADERS = """
import importlib, json, sys
names = sys.argv[1:]
found = {}
for name in names:
    module = importlib.import_module(name)
    loader = module.__spec__.loader
    from autocompile._loader import is_served
    found[name] = "cached" if is_served(loader) else loader.__name__ if isinstance(loader, type) else type(loader).__name__
print(json.dumps(found))
"""


def loader_names(tmp_path: Path, cache_dir: Path, *names: str) -> dict[str, str | None]:
    code = LOADERS.replace("sys.argv[1:]", repr(list(names)))
    return json.loads(run_python(code, cache_dir, cwd=tmp_path).stdout)


def test_only_plain_source_modules_are_taken_over(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path, {"plain.py": "", "nspkg/inner.py": ""})
    with zipfile.ZipFile(tmp_path / "zipped.zip", "w") as archive:
        archive.writestr("inzip.py", "VALUE = 3\n")
    code = LOADERS.replace("sys.argv[1:]", repr(["plain", "nspkg", "nspkg.inner", "inzip", "array", "sys", "zipimport", "json"]))
    found = json.loads(run_python("import sys; sys.path.append('zipped.zip')\n" + code, cache_dir, cwd=tmp_path).stdout)
    assert found["plain"] == "cached"
    assert found["nspkg.inner"] == "cached"
    assert found["json"] == "cached"  # the standard library too
    assert found["nspkg"] in ("NamespaceLoader", "_NamespaceLoader")
    assert found["inzip"] == "zipimporter"
    assert found["array"] in ("ExtensionFileLoader", "BuiltinImporter")
    assert found["sys"] == "BuiltinImporter"
    assert found["zipimport"] == "FrozenImporter"


def test_loaders_keep_their_exact_stock_type(tmp_path: Path, cache_dir: Path) -> None:
    """Code that looks loaders up by exact type (distlib's resource finders, in pip) still works."""
    write_tree(tmp_path, {"typed.py": ""})
    result = run_python(
        """
        import typed
        from importlib.machinery import SourceFileLoader
        from autocompile._loader import is_served
        print(type(typed.__loader__) is SourceFileLoader, is_served(typed.__loader__), typed.__loader__ is typed.__spec__.loader)
        """,
        cache_dir,
        cwd=tmp_path,
    )
    assert result.stdout.split() == ["True", "True", "True"]


def test_takes_pathfinders_slot_and_passes_the_rest_through(cache_dir: Path) -> None:
    result = run_python(
        """
        import sys, importlib.metadata
        from importlib.machinery import PathFinder
        finder = next(f for f in sys.meta_path if type(f).__name__ == "AutocompileFinder")
        print(PathFinder in sys.meta_path, sys.meta_path.index(PathFinder) == sys.meta_path.index(finder))
        print(sum(1 for f in sys.meta_path if f is PathFinder))
        print(importlib.metadata.version("pytest") != "")
        importlib.invalidate_caches()
        """,
        cache_dir,
    )
    assert result.stdout.split() == ["True", "True", "0", "True"]


def test_a_failed_import_searches_sys_path_once(tmp_path: Path, cache_dir: Path) -> None:
    """A path hook counts how often the path entries are searched for a missing module."""
    code = """
        import sys
        calls = []
        class CountingFinder:
            def __init__(self, path): self.path = path
            def find_spec(self, name, target=None):
                calls.append(name)
                return None
            def invalidate_caches(self): pass
        def hook(path):
            if path == "counting-entry":
                return CountingFinder(path)
            raise ImportError
        sys.path_hooks.insert(0, hook)
        sys.path.insert(0, "counting-entry")
        for _ in range(3):
            try:
                import no_such_module_anywhere
            except ImportError:
                pass
        print(len(calls))
        """
    stock = run_python(code, None, hook=False, cwd=tmp_path).stdout.strip()
    ours = run_python(code, cache_dir, cwd=tmp_path).stdout.strip()
    assert stock == ours == "3"


def test_excluded_modules_use_the_stock_loader(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path, {"keepme.py": "", "skipme.py": "", "skipdir/inner.py": ""})
    found = json.loads(
        run_python(
            LOADERS.replace("sys.argv[1:]", repr(["keepme", "skipme", "skipdir.inner"])),
            cache_dir,
            cwd=tmp_path,
            AUTOCOMPILE_EXCLUDE="skipme,*/skipdir/*",
        ).stdout
    )
    assert found == {"keepme": "cached", "skipme": "SourceFileLoader", "skipdir.inner": "SourceFileLoader"}


def test_runpy_runs_modules_served_from_the_cache(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path, {"runme/__init__.py": "", "runme/__main__.py": "print('main', __name__, __spec__.name)\n"})
    code = "import runpy; runpy.run_module('runme', run_name='__main__')"
    for _ in range(2):
        assert run_python(code, cache_dir, cwd=tmp_path).stdout.strip() == "main __main__ runme.__main__"
