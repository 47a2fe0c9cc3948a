"""Start-up: install, uninstall, and the ways to stay stock."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_python


def test_install_is_idempotent_and_uninstall_restores_pathfinder(cache_dir: Path) -> None:
    result = run_python(
        """
        import sys, autocompile
        from importlib.machinery import PathFinder
        before = list(sys.meta_path)
        print(autocompile.install(), autocompile.install())
        print(sum(type(f).__name__ == "AutocompileFinder" for f in sys.meta_path))
        print(autocompile.uninstall(), autocompile.uninstall())
        print(any(f is PathFinder for f in sys.meta_path), len(sys.meta_path) == len(before))
        """,
        cache_dir,
    )
    assert result.stdout.split() == ["True", "True", "1", "True", "False", "True", "True"]


def test_disable_variable_leaves_python_stock(cache_dir: Path) -> None:
    result = run_python(
        "import sys; print([type(f).__name__ for f in sys.meta_path if 'Autocompile' in type(f).__name__])",
        cache_dir,
        hook=False,
    )
    assert result.stdout.strip() == "[]"
    assert not cache_dir.exists()


def test_boot_swallows_every_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_python(
        "from autocompile._bootstrap import boot; import autocompile; autocompile.uninstall(); boot(); print('alive')",
        blocker / "cache",
        AUTOCOMPILE_LOG="debug",
    )
    assert result.stdout.strip() == "alive"
    assert "cannot create" in result.stderr


def test_stats_are_counted_without_a_write_per_import(tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "counted.py").write_text("")
    run_python("import counted", cache_dir, cwd=tmp_path)
    stats = list((cache_dir / "stats").iterdir())
    assert len(stats) == 1
    assert "compiled\tcounted\t1" in stats[0].read_text()


PTH_LINE = (Path(__file__).resolve().parent.parent / "startup" / "autocompile.pth").read_text()


def test_pth_line_is_harmless_twice(cache_dir: Path) -> None:
    code = f"exec({PTH_LINE!r}); exec({PTH_LINE!r})\n" + (
        "import sys; print(sum(type(f).__name__ == 'AutocompileFinder' for f in sys.meta_path))"
    )
    assert run_python(code, cache_dir).stdout.strip() == "1"


@pytest.mark.parametrize("first", ["import autocompile", "import autocompile._bootstrap"])
def test_pth_line_boots_after_an_earlier_import_of_the_package(first: str, cache_dir: Path) -> None:
    """Another .pth or sitecustomize may import the package first: the line still installs the hook."""
    import subprocess
    import sys

    from conftest import child_env

    code = f"{first}; exec({PTH_LINE!r}); import sys; print(sum(type(f).__name__ == 'AutocompileFinder' for f in sys.meta_path))"
    result = subprocess.run([sys.executable, "-S", "-c", code], env=child_env(cache_dir), capture_output=True, text=True)
    assert (result.stdout, result.stderr) == ("1\n", "")


def private_pycache_env(cache_dir: Path, tmp_path: Path, installed: str, **extra: str) -> dict[str, str]:
    """A child environment whose only ``.pyc`` files are under ``tmp_path``: none, or the package's compiled
    there as pip installs by default (``installed == "with .pyc"``)."""
    import subprocess
    import sys

    from conftest import REPO, child_env

    pycache = tmp_path / "pycache"
    env = child_env(cache_dir, PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=str(pycache), **extra)
    if installed == "with .pyc":
        subprocess.run([sys.executable, "-S", "-m", "compileall", "-q", str(REPO / "autocompile")], env=env, check=True)
        assert list((pycache / REPO.relative_to(REPO.anchor) / "autocompile").glob("_bootstrap.*.pyc"))
    return env


@pytest.mark.parametrize(
    ("disable", "installed", "parsed"),
    [("1", "without .pyc", 1), ("", "with .pyc", 2), ("", "without .pyc", 4)],
)
def test_pth_line_parses_only_what_it_runs(cache_dir: Path, tmp_path: Path, disable: str, installed: str, parsed: int) -> None:
    """CPython's parser is most of what a .pth line costs: disabled, the line parses only itself; with a
    ``.pyc`` for the start-up module, not the code that would run its text (each ``exec`` of text is a
    ``compile`` audit event named ``<string>``)."""
    import subprocess
    import sys

    env = private_pycache_env(cache_dir, tmp_path, installed, AUTOCOMPILE_DISABLE=disable)
    code = (
        "import sys; parsed = []\n"
        "sys.addaudithook(lambda event, args: parsed.append(args[1]) if event == 'compile' else None)\n"
        f"exec({PTH_LINE!r})\n"
        "print(parsed.count('<string>'), sum(type(f).__name__ == 'AutocompileFinder' for f in sys.meta_path))"
    )
    result = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True)
    assert (result.stdout, result.stderr) == (f"{parsed} {int(not disable)}\n", "")


def test_pth_line_survives_a_broken_package(tmp_path: Path, cache_dir: Path) -> None:
    import shutil
    import subprocess
    import sys

    from conftest import REPO, child_env

    half = tmp_path / "half" / "autocompile"  # the start-up module is there, the package fails
    half.mkdir(parents=True)
    (half / "__init__.py").write_text("raise RuntimeError('half-removed install')\n")
    shutil.copy(REPO / "autocompile" / "_bootstrap.py", half)
    bare = tmp_path / "bare" / "autocompile"  # not even the start-up module
    bare.mkdir(parents=True)
    (bare / "__init__.py").write_text("")
    cases = (
        (half, "", ""),
        (half, "warning", "autocompile: disabled: RuntimeError: half-removed install\n"),
        (bare, "warning", f"autocompile: disabled: [Errno 2] No such file or directory: {str(bare / '_bootstrap.py')!r}\n"),
    )
    for package, log, expected in cases:
        env = child_env(cache_dir, AUTOCOMPILE_LOG=log) if log else child_env(cache_dir)
        env["PYTHONPATH"] = str(package.parent)
        result = subprocess.run(
            # -S: only this exec of the line runs, not the installed copy's .pth
            [sys.executable, "-S", "-c", f"exec({PTH_LINE!r}); print('alive')"], env=env, capture_output=True, text=True, cwd=tmp_path
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, "alive\n", expected)


AUDITED_START = """
import sys
compiled = []
sys.addaudithook(lambda event, args: compiled.append(args[1]) if event == "compile" else None)
import site
site.main()  # the .pth line runs here, with the audit hook in place
import autocompile
package = autocompile.__path__[0]
print(sorted({name[len(package) + 1:] for name in compiled if name.startswith(package)}) or "nothing")
print(sum(type(f).__name__ == "AutocompileFinder" for f in sys.meta_path), autocompile._bootstrap is sys.modules["autocompile._bootstrap"])
print(autocompile.__spec__.submodule_search_locations == [package], autocompile._bootstrap.__file__.startswith(package))
print(autocompile.__doc__ is not None, autocompile.install.__doc__ is not None, sys.modules["autocompile._finder"].__doc__ is None)
print("text" if autocompile._bootstrap.boot.__code__.co_filename == "<string>" else "pyc")
"""


@pytest.mark.parametrize("installed", ["without .pyc", "with .pyc"])
def test_a_start_compiles_none_of_autocompile(cache_dir: Path, tmp_path: Path, installed: str) -> None:
    """The .pth line imports the start-up module from its .pyc, or runs its text where it has none, and the
    package comes from its .pyc or the bundle: no compile() at all."""
    import subprocess
    import sys

    env = private_pycache_env(cache_dir, tmp_path, installed)

    def start() -> list[str]:
        result = subprocess.run([sys.executable, "-S", "-c", AUDITED_START], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    how = "pyc" if installed == "with .pyc" else "text"
    first = start()
    # the first start compiles the bundle: the package and its runtime, not the start-up module
    assert "'__init__.py'" in first[0] and "'_bootstrap.py'" not in first[0]
    assert first[1:] == ["1 True", "True True", "True True False", how]
    assert start() == ["nothing", "1 True", "True True", "True True True", how]  # the package keeps its docstrings


BOOT = """
import sys
from autocompile._bootstrap import boot
boot()
finder = sys.modules["autocompile._finder"]
print(type(sys.meta_path[-1]).__name__, "bundle" if finder.__doc__ is None else "stock")
# where the code says it comes from: the running copy's files, also from a bundle another copy made
assert finder.AutocompileFinder.find_spec.__code__.co_filename == finder.__file__, finder.__file__
"""


def boot_child(cache_dir: Path, package_parent: Path | None = None) -> str:
    """Start a child (with the package found in ``package_parent``, if given) and say where its runtime came from."""
    import subprocess
    import sys

    from conftest import child_env

    env = child_env(cache_dir)
    if package_parent is not None:
        env["PYTHONPATH"] = str(package_parent)
    result = subprocess.run([sys.executable, "-c", BOOT], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def bundle_files(cache_dir: Path) -> list[Path]:
    """The bundles in ``runtime/``, without the origin files next to the copies' bundles."""
    return [path for path in (cache_dir / "runtime").iterdir() if path.suffix != ".origin"]


def bundles(cache_dir: Path) -> tuple[Path, Path]:
    """This copy's bundle and the shared one, the only bundles in ``runtime/``."""
    shared, own = sorted(bundle_files(cache_dir), key=lambda path: path.name.startswith("shared-"), reverse=True)
    assert shared.name.startswith("shared-") and not own.name.startswith("shared-")
    return own, shared


def test_runtime_comes_from_the_bundle_after_the_first_start(cache_dir: Path) -> None:
    """autocompile's own modules start warm even where their __pycache__ cannot exist."""
    cache_dir.mkdir(mode=0o700)
    assert boot_child(cache_dir) == "AutocompileFinder stock"
    own, shared = bundles(cache_dir)
    written = own.stat().st_mtime_ns, shared.stat().st_mtime_ns
    assert boot_child(cache_dir) == "AutocompileFinder bundle"
    assert (own.stat().st_mtime_ns, shared.stat().st_mtime_ns) == written, "valid bundles are not rewritten"


def test_a_fresh_copy_of_the_same_sources_compiles_nothing(tmp_path: Path, cache_dir: Path) -> None:
    """A new venv with the same autocompile starts from the bundle another copy made, then has its own
    (naming its own files); a copy whose sources differ compiles them."""
    import marshal
    import shutil

    from autocompile._bootstrap import BUNDLED

    from conftest import REPO

    cache_dir.mkdir(mode=0o700)
    boot_child(cache_dir)
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "autocompile", copy / "autocompile", ignore=shutil.ignore_patterns("__pycache__"))
    assert boot_child(cache_dir, copy) == "AutocompileFinder bundle"
    assert len(bundle_files(cache_dir)) == 3  # the first copy's, the copy's, the shared one
    (origin,) = [path for path in (cache_dir / "runtime").glob("*.origin") if path.read_bytes().startswith(bytes(copy))]
    _, codes = marshal.loads(origin.with_suffix("").read_bytes())
    assert [code.co_filename for code in codes] == [str(copy / "autocompile" / f"{name}.py") for name in BUNDLED]
    assert boot_child(cache_dir, copy) == "AutocompileFinder bundle"
    with open(copy / "autocompile" / "_log.py", "a") as file:
        file.write("# edited\n")
    assert boot_child(cache_dir, copy) == "AutocompileFinder stock"
    assert len(bundle_files(cache_dir)) == 4  # and the edited sources' shared bundle
    assert boot_child(cache_dir, copy) == "AutocompileFinder bundle"


def test_damaged_or_foreign_bundles_are_ignored(cache_dir: Path) -> None:
    import marshal
    import os

    cache_dir.mkdir(mode=0o700)
    boot_child(cache_dir)
    for bundle in bundles(cache_dir):
        bundle.write_bytes(bundle.read_bytes()[:100])
    assert boot_child(cache_dir) == "AutocompileFinder stock"
    assert boot_child(cache_dir) == "AutocompileFinder bundle"
    for bundle in bundles(cache_dir):  # the right pin, but not code
        pin, codes = marshal.loads(bundle.read_bytes())
        bundle.write_bytes(marshal.dumps((pin, (0,) * len(codes))))
    assert boot_child(cache_dir) == "AutocompileFinder stock"
    assert boot_child(cache_dir) == "AutocompileFinder bundle"
    own, shared = bundles(cache_dir)
    own.unlink()
    assert boot_child(cache_dir) == "AutocompileFinder bundle"  # from the shared one, which gives it back
    own, shared = bundles(cache_dir)
    os.chmod(own, 0o622)
    os.chmod(shared, 0o622)
    assert boot_child(cache_dir) == "AutocompileFinder stock"  # writable by others: not trusted
    if os.geteuid() == 0:
        assert boot_child(cache_dir) == "AutocompileFinder bundle"
        for bundle in bundles(cache_dir):
            os.chown(bundle, 65534, 65534)
        assert boot_child(cache_dir) == "AutocompileFinder stock"
