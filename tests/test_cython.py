"""The Cython tier: real Cython, a real C compiler, real subprocesses.

Builds small packages with ``autocompile cythonize`` (or ``python -m
autocompile._cython`` until cli.py registers the command), imports them in
child interpreters with the hook, and breaks extensions on purpose to see the
fallback to bytecode.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import child_env, run_python, settle, write_tree

pytest.importorskip("Cython", reason="the Cython tier needs the cython extra: pip install '.[cython]'")
if shutil.which("gcc") is None and shutil.which("cc") is None:  # pragma: no cover
    pytest.skip("no C compiler", allow_module_level=True)

from autocompile import _ext, _store  # noqa: E402

COMMAND = ["-m", "autocompile", "cythonize"]


def cythonize(*args: str, cache_dir: Path, cwd: Path | None = None, env_path: str | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
    env = child_env(cache_dir, **extra)
    if env_path:
        env["PYTHONPATH"] = os.pathsep.join((env_path, env["PYTHONPATH"]))
    return subprocess.run([sys.executable, *COMMAND, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


def cythonize_json(*args: str, cache_dir: Path, expect_ok: bool = True, **kw: str) -> dict:
    if "--json" not in args:
        args = (*args, "--json")
    result = cythonize(*args, cache_dir=cache_dir, **kw)  # type: ignore[arg-type]
    assert (result.returncode == 0) is expect_ok, result.stderr + result.stdout
    return json.loads(result.stdout)


def run_hooked(code: str, cache_dir: Path, src: Path, **env: str) -> dict:
    """Run ``code`` (which prints one JSON line last) with the hook and the tier, ``src`` on sys.path."""
    body = f"import sys; sys.path.insert(0, {str(src)!r})\n" + textwrap.dedent(code)
    result = run_python(body, cache_dir, **env)
    return json.loads(result.stdout.strip().splitlines()[-1])


PACKAGE = {
    "pkg/__init__.py": """\
        import os
        from importlib.resources import files

        def data():
            return files(__name__).joinpath("data.txt").read_text()

        def here():
            return os.path.dirname(__file__)
        """,
    "pkg/fast.py": """\
        def add(a: int, b: int):
            return a + b

        class K:
            def m(self):
                return 1

        def boom():
            raise ValueError("boom")
        """,
    "pkg/data.txt": "hello\n",
}

INSPECT = """\
    import json, inspect, importlib.resources, sys, pkg, pkg.fast as fast
    from autocompile import _stats
    print(json.dumps({
        "loader": type(pkg.__loader__).__name__,
        "fast_loader": type(fast.__loader__).__name__,
        "file": pkg.__file__, "origin": pkg.__spec__.origin, "path": list(pkg.__path__),
        "fast_file": fast.__file__,
        "function": type(fast.add).__name__,
        "add": fast.add(1, 2.5), "typed": fast.add("a", "b"),
        "data": pkg.data(), "here": pkg.here(),
        "resource": importlib.resources.files("pkg").joinpath("data.txt").read_text(),
        # 3.13's inspect finds a class by its __firstlineno__, which Cython's classes lack
        "class_source": inspect.getsource(fast.K).splitlines()[0] if sys.version_info < (3, 13) else "class K:",
        "module_source": inspect.getsource(fast).splitlines()[0],
        "signature": str(inspect.signature(fast.add)),
        "counts": {f"{k[1]}": v for k, v in _stats._counts.items() if k[2] == "pkg"},
    }))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """The package above, built once: (source root, cache, the command's JSON)."""
    base = tmp_path_factory.mktemp("cy")
    src = write_tree(base / "src", PACKAGE)
    cache = base / "cache"
    settle()
    document = cythonize_json(str(src / "pkg"), "--jobs", "2", cache_dir=cache)
    return src, cache, document


def test_build_reports_built_modules(built: tuple[Path, Path, dict]) -> None:
    _src, cache, document = built
    assert document["built"] == 2 and document["failed"] == 0, document
    assert {m["name"] for m in document["modules"]} == {"pkg", "pkg.fast"}
    names = (cache / "extnames").read_text().split()
    assert names == ["pkg", "pkg.fast"]
    so_files = [p for p in (cache / "ext").rglob("*") if p.is_file()]
    assert len(so_files) == 2 and all(p.name.endswith(_ext.EXT_SUFFIX) for p in so_files)


def test_import_loads_the_extension_and_looks_like_the_source(built: tuple[Path, Path, dict]) -> None:
    src, cache, _ = built
    seen = run_hooked(INSPECT, cache, src)
    assert seen["loader"] == seen["fast_loader"] == "ExtensionLoader"
    assert seen["function"] == "cython_function_or_method"
    assert seen["file"] == seen["origin"] == str(src / "pkg" / "__init__.py")
    assert seen["fast_file"] == str(src / "pkg" / "fast.py")
    assert seen["path"] == [str(src / "pkg")]
    assert seen["add"] == 3.5 and seen["typed"] == "ab"  # annotations are not C types
    assert seen["data"] == seen["resource"] == "hello\n"
    assert seen["here"] == str(src / "pkg")
    assert seen["class_source"] == "class K:"
    assert seen["module_source"] == "def add(a: int, b: int):"
    assert seen["signature"] == "(a: int, b: int)" or seen["signature"] == "(a: 'int', b: 'int')"
    assert seen["counts"].get("ext") == 2 and "ext_fallback" not in seen["counts"]


def test_without_the_hook_nothing_changes(built: tuple[Path, Path, dict]) -> None:
    src, cache, _ = built
    code = f"import sys; sys.path.insert(0, {str(src)!r})\nimport json, pkg.fast as f; print(json.dumps([type(f.__loader__).__name__, type(f.add).__name__]))"
    result = run_python(code, cache, hook=False)
    assert json.loads(result.stdout) == ["SourceFileLoader", "function"]


def test_traceback_from_extension_points_at_the_source(built: tuple[Path, Path, dict]) -> None:
    src, cache, _ = built
    seen = run_hooked(
        """\
        import json, traceback, pkg.fast
        try:
            pkg.fast.boom()
        except ValueError:
            text = traceback.format_exc()
        print(json.dumps({"text": text}))
        """,
        cache,
        src,
    )
    assert 'pkg/fast.py", line 9, in pkg.fast.boom' in seen["text"] or "fast.py" in seen["text"], seen["text"]
    assert 'raise ValueError("boom")' in seen["text"]  # linecache finds the source under sys.path


def test_second_build_reuses_and_list_shows_entries(built: tuple[Path, Path, dict]) -> None:
    src, cache, _ = built
    document = cythonize_json(str(src / "pkg"), cache_dir=cache)
    assert document["reused"] == 2 and document["built"] == 0
    listing = cythonize_json("--list", cache_dir=cache)
    assert {(e["module"], e["state"]) for e in listing["built"]} == {("pkg", "ready"), ("pkg.fast", "ready")}


def test_same_file_elsewhere_reuses_the_extension(built: tuple[Path, Path, dict], tmp_path: Path) -> None:
    src, cache, _ = built
    copy = tmp_path / "elsewhere"
    shutil.copytree(src, copy)
    settle()
    document = cythonize_json(str(copy / "pkg"), cache_dir=cache)
    assert document["reused"] == 2 and document["built"] == 0
    seen = run_hooked(INSPECT, cache, copy)
    assert seen["fast_loader"] == "ExtensionLoader" and seen["fast_file"] == str(copy / "pkg" / "fast.py")


def _own_package(tmp_path: Path, name: str, files: dict[str, str] | None = None) -> tuple[Path, Path]:
    src = write_tree(tmp_path / "src", files or {f"{name}/__init__.py": "", f"{name}/mod.py": "def f():\n    return 42\n"})
    cache = tmp_path / "cache"
    settle()
    document = cythonize_json(str(src / name), cache_dir=cache)
    assert document["failed"] == 0, document
    return src, cache


PROBE = """\
    import json, {name}.mod as m
    from autocompile import _stats
    print(json.dumps({{"loader": type(m.__loader__).__name__, "function": type(m.f).__name__, "value": m.f(),
                       "counts": {{k[1]: v for k, v in _stats._counts.items() if k[2] == "{name}"}}}}))
"""


def test_source_edit_means_bytecode_until_rebuilt(tmp_path: Path) -> None:
    src, cache = _own_package(tmp_path, "edited")
    probe = PROBE.format(name="edited")
    assert run_hooked(probe, cache, src)["function"] == "cython_function_or_method"
    (src / "edited" / "mod.py").write_text("def f():\n    return 43\n")
    seen = run_hooked(probe, cache, src)
    assert (seen["loader"], seen["function"], seen["value"]) == ("SourceFileLoader", "function", 43)
    listing = cythonize_json("--list", cache_dir=cache)
    assert ("edited.mod", "stale") in {(e["module"], e["state"]) for e in listing["built"]}
    settle()
    assert cythonize_json(str(src / "edited"), cache_dir=cache)["built"] == 1
    seen = run_hooked(probe, cache, src)
    assert (seen["function"], seen["value"]) == ("cython_function_or_method", 43)


def _so_of(cache: Path, name: str, src: Path) -> tuple[Path, Path, _store.Entry]:
    """The extension file and index entry of module ``name`` (source under ``src``)."""
    path = str(src / name.replace(".", "/")) + ".py"
    index = Path(_ext.index_path(str(cache), _ext.index_key(name, path, os.stat(path))))
    entry = _store.unpack(index.read_bytes())
    return Path(_ext.extension_path(str(cache), entry.key)), index, entry


def test_unloadable_extension_falls_back_to_bytecode(tmp_path: Path) -> None:
    src, cache = _own_package(tmp_path, "garbled")
    so_file, _index, _entry = _so_of(cache, "garbled.mod", src)
    so_file.write_bytes(b"\0" * so_file.stat().st_size)  # same size, not an ELF file: dlopen fails
    seen = run_hooked(PROBE.format(name="garbled"), cache, src, AUTOCOMPILE_LOG="debug")
    assert (seen["function"], seen["value"]) == ("function", 42)
    assert seen["counts"].get("ext_fallback") == 1


def test_missing_init_function_falls_back_to_bytecode(tmp_path: Path) -> None:
    """An extension built for another module name has no PyInit_<name>: bytecode, counted."""
    src, cache = _own_package(tmp_path, "renamed")
    other = write_tree(tmp_path / "other", {"other/__init__.py": "", "other/thing.py": "def f():\n    return 1\n"})
    settle()
    assert cythonize_json(str(other / "other"), cache_dir=cache)["built"] == 2
    wrong, _, _ = _so_of(cache, "other.thing", other)
    so_file, index, entry = _so_of(cache, "renamed.mod", src)
    so_file.write_bytes(wrong.read_bytes())
    meta = dict(entry.meta, size=str(so_file.stat().st_size))
    index.write_bytes(_store.pack(entry.kind, entry.key, b"", meta))
    result = run_python(f"import sys; sys.path.insert(0, {str(src)!r})\n" + textwrap.dedent(PROBE.format(name="renamed")), cache, AUTOCOMPILE_LOG="debug")
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert (seen["function"], seen["value"]) == ("function", 42)
    assert seen["counts"].get("ext_fallback") == 1 and seen["counts"].get("ext") == 1  # the package's __init__
    assert "renamed.mod: extension failed to load, using bytecode" in result.stderr


def test_exception_in_module_init_falls_back_to_bytecode(tmp_path: Path) -> None:
    """A module whose initialisation fails only as an extension (it raises when its functions are compiled)."""
    body = "def f():\n    return 42\n\nif type(f).__name__ != 'function':\n    raise RuntimeError('init failed in the extension')\n"
    files = {"initfail/__init__.py": "", "initfail/mod.py": body}
    src, cache = _own_package(tmp_path, "initfail", files)
    code = textwrap.dedent(PROBE.format(name="initfail"))
    result = run_python(f"import sys; sys.path.insert(0, {str(src)!r})\n" + code, cache, AUTOCOMPILE_LOG="debug")
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert (seen["function"], seen["value"]) == ("function", 42)
    assert seen["counts"].get("ext_fallback") == 1
    assert "initfail.mod: extension failed to init, using bytecode" in result.stderr


def test_error_raised_by_the_source_itself_is_stock(tmp_path: Path) -> None:
    files = {"raising/__init__.py": "", "raising/mod.py": "def f():\n    return 42\n\nraise ImportError('optional dependency missing')\n"}
    src, cache = _own_package(tmp_path, "raising", files)
    code = f"import sys; sys.path.insert(0, {str(src)!r})\n" + "import raising.mod\n"
    result = run_python(code, cache, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "ImportError: optional dependency missing"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the module Cython cannot compile uses 3.11 syntax (a[*b])")
def test_compile_failure_is_recorded_with_reason_and_not_retried(tmp_path: Path) -> None:
    src = write_tree(
        tmp_path / "src",
        {"mixed/__init__.py": "", "mixed/good.py": "X = 1\n", "mixed/bad.py": "def f(a, b):\n    return a[*b]\n"},
    )
    cache = tmp_path / "cache"
    settle()
    first = cythonize_json(str(src / "mixed"), cache_dir=cache)
    assert (first["built"], first["failed"]) == (2, 1)
    (failure,) = first["failures"]
    assert failure["module"] == "mixed.bad" and "starred expression is not allowed here" in failure["reason"], failure
    second = cythonize_json(str(src / "mixed"), cache_dir=cache)
    assert (second["reused"], second["failed"]) == (2, 1)
    assert "recorded earlier" in second["failures"][0]["reason"]
    listing = cythonize_json("--list", cache_dir=cache)
    assert [(f["module"], f["state"]) for f in listing["failed"]] == [("mixed.bad", "failed")]
    # The module still imports, from bytecode.
    seen = run_hooked("import json, mixed.bad as b, mixed.good as g\nprint(json.dumps([type(b.__loader__).__name__, type(g.__loader__).__name__]))", cache, src)
    assert seen == ["SourceFileLoader", "ExtensionLoader"]


def test_without_cython_a_one_line_error_and_exit_1(tmp_path: Path) -> None:
    fake = write_tree(tmp_path / "nocython", {"Cython/__init__.py": "raise ImportError('No module named Cython')\n"})
    src = write_tree(tmp_path / "src", {"m.py": "X = 1\n"})
    result = cythonize(str(src / "m.py"), cache_dir=tmp_path / "cache", env_path=str(fake))
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines() == ['autocompile: error: Cython is not installed: pip install "autocompile[cython]" (Cython>=3 and setuptools)']


def test_without_a_compiler_a_one_line_error_and_exit_1(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"m.py": "X = 1\n"})
    result = cythonize(str(src / "m.py"), cache_dir=tmp_path / "cache", CC="/nonexistent/cc")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "no C compiler" in result.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert cythonize(cache_dir=tmp_path / "cache").returncode == 2
    assert cythonize("no_such_module_anywhere", cache_dir=tmp_path / "cache").returncode == 2
    assert cythonize(str(tmp_path), "--jobs", "0", cache_dir=tmp_path / "cache").returncode == 2


def test_hot_builds_the_modules_where_time_is_spent(tmp_path: Path) -> None:
    src = write_tree(
        tmp_path / "app",
        {
            "main.py": "import busy, idle\nidle.hello()\nprint(busy.work(300000))\n",
            "busy.py": "def work(n):\n    total = 0\n    for i in range(n):\n        total += i * i % 7\n    return total\n",
            "idle.py": "def hello():\n    return 'hi'\n",
        },
    )
    cache = tmp_path / "cache"
    settle()
    document = cythonize_json("--json", "--hot", "--top", "1", "--rounds", "0", "--", sys.executable, str(src / "main.py"), cache_dir=cache)
    assert [h["module"] for h in document["hot"]] == ["busy"]
    assert document["built"] == 1 and document["measured"] == []
    seen = run_hooked("import json, busy\nprint(json.dumps(type(busy.work).__name__))", cache, src)
    assert seen == "cython_function_or_method"


def test_hot_keeps_only_the_extensions_that_make_the_command_faster(tmp_path: Path) -> None:
    """The command sleeps when ``slow`` is an extension and when ``fast`` is not: timing decides, deterministically."""
    work = "def work(n):\n    total = 0\n    for i in range(n):\n        total += i * i % 7\n    return total\n"
    main = (
        "import time, fast, slow\nfast.work(200000)\nslow.work(200000)\n"
        "if type(slow.__loader__).__name__ == 'ExtensionLoader': time.sleep(0.5)\n"
        "if type(fast.__loader__).__name__ != 'ExtensionLoader': time.sleep(0.5)\n"
    )
    src = write_tree(tmp_path / "app", {"main.py": main, "fast.py": work, "slow.py": work + "# another source\n"})
    cache = tmp_path / "cache"
    settle()
    document = cythonize_json("--json", "--hot", "--top", "2", "--rounds", "1", "--", sys.executable, str(src / "main.py"), cache_dir=cache)
    assert sorted(h["module"] for h in document["hot"]) == ["fast", "slow"] and document["built"] == 2
    verdicts = {m["name"]: m for m in document["measured"]}
    assert verdicts["fast"]["kept"] and verdicts["fast"]["speedup"] > 1.5
    assert not verdicts["slow"]["kept"] and "no faster with this extension" in verdicts["slow"]["reason"]
    loaders = "import json, fast, slow\nprint(json.dumps([type(m.__loader__).__name__ for m in (fast, slow)]))"
    assert run_hooked(loaders, cache, src) == ["ExtensionLoader", "SourceFileLoader"]
    listed = autocompile_json("cythonize", "--list", cache_dir=cache)
    assert [f["module"] for f in listed["failed"]] == ["slow"] and "no faster" in listed["failed"][0]["reason"]
    again = cythonize_json(str(src / "slow.py"), cache_dir=cache, expect_ok=False)
    assert again["failed"] == 1 and "recorded earlier" in again["failures"][0]["reason"]
    retried = cythonize_json(str(src / "slow.py"), "--retry-failed", cache_dir=cache)
    assert retried["reused"] == 1 and autocompile_json("cythonize", "--list", cache_dir=cache)["failed"] == []
    assert run_hooked(loaders, cache, src) == ["ExtensionLoader", "ExtensionLoader"]
    # exclude_extensions leaves a module with a ready extension to bytecode
    assert run_hooked(loaders, cache, src, AUTOCOMPILE_EXCLUDE_EXTENSIONS="f*") == ["SourceFileLoader", "ExtensionLoader"]


def test_no_tier_when_nothing_was_built(tmp_path: Path) -> None:
    """A cache that never had extensions: the tier is off (one failed open at start-up)."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    assert _ext.open_tier(_store.Store(str(cache))) is None
    seen = run_hooked("import json; from autocompile import _install\nprint(json.dumps('find_spec' in vars(_install.active_finder())))", cache, tmp_path)
    assert seen is False


def autocompile_json(*args: str, cache_dir: Path, env_path: str | None = None, expect: int = 0, **extra: str) -> dict:
    """``python -m autocompile ARGS --json``: its JSON document, after checking its exit code."""
    env = child_env(cache_dir, **extra)
    if env_path:
        env["PYTHONPATH"] = os.pathsep.join((env_path, env["PYTHONPATH"]))
    result = subprocess.run([sys.executable, "-m", "autocompile", *args, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == expect, result.stderr + result.stdout
    return json.loads(result.stdout)


def test_cache_commands_cover_extensions(tmp_path: Path) -> None:
    """stats, list, explain, verify, prune, clear, export and import see extensions, with their kind."""
    src, cache = _own_package(tmp_path, "shipped")
    probe = PROBE.format(name="shipped")
    assert run_hooked(probe, cache, src)["loader"] == "ExtensionLoader"

    listed = autocompile_json("list", cache_dir=cache)["entries"]
    extensions = {e["module"]: e for e in listed if e["kind"] == "extension"}
    assert set(extensions) == {"shipped", "shipped.mod"}
    assert extensions["shipped.mod"]["path"] == str(src / "shipped" / "mod.py")
    assert extensions["shipped.mod"]["python"] == sys.implementation.cache_tag
    assert {e["kind"] for e in autocompile_json("list", "shipped.mod", cache_dir=cache)["entries"]} == {"extension"}
    stats = autocompile_json("stats", cache_dir=cache)
    assert stats["extensions"] == 2 and stats["extensions_size_bytes"] > 0 and stats["extension_loads"] == 2
    explained = autocompile_json("explain", "shipped.mod", cache_dir=cache, env_path=str(src))
    assert explained["verdict"] == "extension" and explained["reason"].startswith(f"extension {cache}/ext/")
    left_out = autocompile_json("explain", "shipped.mod", cache_dir=cache, env_path=str(src), AUTOCOMPILE_EXCLUDE_EXTENSIONS="shipped.*")
    assert left_out["verdict"] != "extension" and any("exclude_extensions" in note for note in left_out["notes"])
    assert autocompile_json("verify", "--all", cache_dir=cache)["problems"] == []

    # A damaged extension index entry: verify names it, --fix removes it, bytecode serves the module.
    so_file, index, _entry = _so_of(cache, "shipped.mod", src)
    index.write_bytes(index.read_bytes()[:-3] + b"xyz")
    problems = autocompile_json("verify", cache_dir=cache, expect=1)["problems"]
    assert [p["path"] for p in problems] == [str(index)]
    autocompile_json("verify", "--fix", cache_dir=cache, expect=1)
    assert not index.exists() and run_hooked(probe, cache, src)["loader"] == "SourceFileLoader"
    pruned = autocompile_json("prune", "--orphans", "--dry-run", cache_dir=cache)
    assert [(e["path"], e["reason"]) for e in pruned["entries"]] == [(str(so_file), "orphaned")]  # nothing points at it

    assert cythonize_json(str(src / "shipped"), cache_dir=cache)["reused"] == 2  # indexed again, not rebuilt

    # Shipped to a new cache: the extensions travel; cythonize indexes them without compiling.
    archive = tmp_path / "shipped.zip"
    assert autocompile_json("export", str(archive), "shipped", cache_dir=cache)["entries"] >= 2
    cleared = autocompile_json("clear", "--yes", cache_dir=cache)
    assert cleared["removed"] > 0 and not (cache / "extnames").exists()
    assert autocompile_json("list", cache_dir=cache)["entries"] == []
    imported = autocompile_json("import", str(archive), cache_dir=cache)
    assert imported["added"] >= 2
    rebuilt = cythonize_json(str(src / "shipped"), cache_dir=cache, PATH="/nonexistent")  # no compiler on PATH
    assert (rebuilt["reused"], rebuilt["built"], rebuilt["failed"]) == (2, 0, 0), rebuilt
    seen = run_hooked(probe, cache, src)
    assert (seen["loader"], seen["function"], seen["value"]) == ("ExtensionLoader", "cython_function_or_method", 42)
