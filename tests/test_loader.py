"""The loader, through real imports in real interpreters: what a program sees is stock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_python, settle, write_tree

PROBE = """
import json, sys, importlib, inspect, linecache, pkgutil, pickle
import importlib.resources as resources
import pkg, pkg.mod
m = pkg.mod
print(json.dumps({
    "file": m.__file__,
    "origin": m.__spec__.origin,
    "cached": m.__cached__,
    "path": list(pkg.__path__),
    "loader_type": type(m.__loader__).__name__,
    "co_filename": m.func.__code__.co_filename,
    "nested_co_filename": m.Klass.method.__code__.co_filename,
    "source": inspect.getsource(m.func),
    "line": linecache.getline(m.__file__, 2),
    "resource": (resources.files("pkg") / "data.txt").read_text(),
    "modules": sorted(info.name for info in pkgutil.iter_modules(pkg.__path__)),
    "pickle": pickle.loads(pickle.dumps(m.Klass)).__qualname__ + pickle.loads(pickle.dumps(m.func)).__name__,
    "doc": m.__doc__,
    "is_package": m.__loader__.is_package("pkg.mod"),
}))
"""

PACKAGE = {
    "pkg/__init__.py": "",
    "pkg/data.txt": "some data",
    "pkg/mod.py": '''\
        """Module docstring."""
        def func():
            return 42

        class Klass:
            def method(self):
                return [x for x in range(3)]
        ''',
    "pkg/other.py": "",
}


def probe(tmp_path: Path, cache_dir: Path | None, hook: bool = True) -> dict:
    result = run_python(PROBE, cache_dir, hook=hook, cwd=tmp_path)
    return json.loads(result.stdout)


def test_module_attributes_are_stock(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path, PACKAGE)
    first = probe(tmp_path, cache_dir)
    second = probe(tmp_path, cache_dir)
    assert not list(tmp_path.rglob("__pycache__")), "autocompile must not write __pycache__"
    stock = probe(tmp_path, None, hook=False)
    assert first == stock
    assert second == stock
    assert stock["cached"].endswith(f"__pycache__/mod.{sys.implementation.cache_tag}.pyc")


def test_co_filename_is_the_importing_path_for_shared_objects(tmp_path: Path, cache_dir: Path) -> None:
    """Two copies of one file share an object; each sees its own path, in nested code too."""
    for copy in ("a", "b"):
        write_tree(tmp_path / copy, PACKAGE)
    a = probe(tmp_path / "a", cache_dir)
    b = probe(tmp_path / "b", cache_dir)
    assert a["co_filename"] == a["nested_co_filename"] == str(tmp_path / "a" / "pkg" / "mod.py")
    assert b["co_filename"] == b["nested_co_filename"] == str(tmp_path / "b" / "pkg" / "mod.py")


def outcomes(stderr: str) -> dict[str, str]:
    """Module name -> outcome, from ``AUTOCOMPILE_LOG=debug`` lines."""
    found = {}
    for line in stderr.splitlines():
        if line.startswith("autocompile: ") and ": " in line[13:]:
            name, _, rest = line[13:].partition(": ")
            found[name] = rest.split(" (")[0]
    return found


def test_hit_after_settling_and_reuse_across_paths(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path / "a", {"shared_mod.py": "VALUE = 1\n"})
    write_tree(tmp_path / "b", {"shared_mod.py": "VALUE = 1\n"})
    settle()
    log = {"AUTOCOMPILE_LOG": "debug"}
    first = run_python("import shared_mod", cache_dir, cwd=tmp_path / "a", **log)
    assert outcomes(first.stderr)["shared_mod"] == "compiled"
    second = run_python("import shared_mod", cache_dir, cwd=tmp_path / "a", **log)
    assert outcomes(second.stderr)["shared_mod"] == "hit"
    other_path = run_python("import shared_mod", cache_dir, cwd=tmp_path / "b", **log)
    assert outcomes(other_path.stderr)["shared_mod"] == "reused"


@pytest.mark.parametrize(
    "edit",
    ["same_size_restored_mtime", "atomic_replace", "in_place_write", "hard_link_swap"],
)
def test_edits_are_never_served_stale(tmp_path: Path, cache_dir: Path, edit: str) -> None:
    module = tmp_path / "edited.py"
    module.write_text("VALUE = 'aaaa'\n")
    settle()
    code = "import edited; print(edited.VALUE)"
    assert run_python(code, cache_dir, cwd=tmp_path).stdout.strip() == "aaaa"
    assert run_python(code, cache_dir, cwd=tmp_path).stdout.strip() == "aaaa"
    before = module.stat()
    if edit == "same_size_restored_mtime":
        module.write_text("VALUE = 'bbbb'\n")
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    elif edit == "atomic_replace":
        (tmp_path / "new.tmp").write_text("VALUE = 'bbbb'\n")
        os.replace(tmp_path / "new.tmp", module)
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    elif edit == "in_place_write":
        with open(module, "r+b") as file:
            file.write(b"VALUE = 'bbbb'\n")
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    else:
        (tmp_path / "elsewhere.py").write_text("VALUE = 'bbbb'\n")
        module.unlink()
        os.link(tmp_path / "elsewhere.py", module)
    assert module.stat().st_size == before.st_size
    assert run_python(code, cache_dir, cwd=tmp_path).stdout.strip() == "bbbb"


def test_reload_after_edit_serves_new_code(tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "reloaded.py").write_text("VALUE = 1\n")
    result = run_python(
        """
        import importlib, pathlib, reloaded
        first = reloaded.VALUE
        pathlib.Path("reloaded.py").write_text("VALUE = 2\\n")
        importlib.invalidate_caches()
        importlib.reload(reloaded)
        print(first, reloaded.VALUE)
        """,
        cache_dir,
        cwd=tmp_path,
    )
    assert result.stdout.split() == ["1", "2"]


ERROR_SOURCES = {
    "syntax": "x = 1\ndef broken(:\n    pass\n",
    "indentation": "def f():\nreturn 1\n",
    "runtime": "x = 1\nraise ValueError('boom from module body')\n",
    "null_bytes": b"x = 1\x00\n",
}


@pytest.mark.parametrize("kind", sorted(ERROR_SOURCES))
@pytest.mark.parametrize("cached", [False, True], ids=["cold", "after-first-failure"])
def test_errors_in_user_code_are_exactly_stock(tmp_path: Path, cache_dir: Path, kind: str, cached: bool) -> None:
    write_tree(tmp_path, {"faulty.py": ERROR_SOURCES[kind]})
    code = "import faulty"
    stock = run_python(code, None, hook=False, cwd=tmp_path, check=False)
    if cached:
        run_python(code, cache_dir, cwd=tmp_path, check=False)
    ours = run_python(code, cache_dir, cwd=tmp_path, check=False)
    assert stock.returncode != 0
    assert (ours.returncode, ours.stdout, ours.stderr) == (stock.returncode, stock.stdout, stock.stderr)


def test_traceback_through_cached_module_is_stock(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path, {"deep.py": "def fail():\n    return 1 / 0\n"})
    code = "import deep; deep.fail()"
    stock = run_python(code, None, hook=False, cwd=tmp_path, check=False)
    run_python(code, cache_dir, cwd=tmp_path, check=False)
    ours = run_python(code, cache_dir, cwd=tmp_path, check=False)
    assert "ZeroDivisionError" in stock.stderr and 'deep.py", line 2' in stock.stderr
    assert ours.stderr == stock.stderr


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("# -*- coding: latin-1 -*-\nVALUE = 'caf\xe9'\n".encode("latin-1"), id="coding-cookie"),
        pytest.param("\ufeffVALUE = 'bom'\n".encode("utf-8"), id="bom"),
        pytest.param(b"VALUE = 'crlf'\r\nOTHER = 2\r\n", id="crlf"),
        pytest.param(b"from __future__ import annotations\ndef f(x: Undefined) -> None: pass\nVALUE = f.__annotations__['x']\n", id="future"),
    ],
)
def test_source_encodings_and_future_imports(tmp_path: Path, cache_dir: Path, source: bytes) -> None:
    write_tree(tmp_path, {"encoded.py": source})
    code = "import encoded; print(ascii(encoded.VALUE))"
    stock = run_python(code, None, hook=False, cwd=tmp_path).stdout
    assert run_python(code, cache_dir, cwd=tmp_path).stdout == stock
    assert run_python(code, cache_dir, cwd=tmp_path).stdout == stock


def test_circular_imports_and_threads(tmp_path: Path, cache_dir: Path) -> None:
    files = {"circ_a.py": "import circ_b\nA = 1\n", "circ_b.py": "import circ_a\nB = 2\n"}
    files.update({f"threaded_{n}.py": f"import time\ntime.sleep(0.01)\nN = {n}\n" for n in range(20)})
    write_tree(tmp_path, files)
    code = """
        import threading, importlib, circ_a, circ_b
        results = {}
        def worker(n):
            results[n] = importlib.import_module(f"threaded_{n % 20}").N
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(40)]
        [t.start() for t in threads]; [t.join() for t in threads]
        assert all(results[n] == n % 20 for n in range(40)), results
        print(circ_a.A + circ_b.B)
        """
    assert run_python(code, cache_dir, cwd=tmp_path).stdout.strip() == "3"
    assert run_python(code, cache_dir, cwd=tmp_path).stdout.strip() == "3"


@pytest.mark.parametrize("flag", ["-O", "-OO"])
def test_optimize_levels_get_separate_objects(tmp_path: Path, cache_dir: Path, flag: str) -> None:
    write_tree(tmp_path, {"optimized.py": '"""doc"""\nassert False, "asserts run"\n'})
    code = "import optimized; print(optimized.__doc__)"
    plain = run_python(code, cache_dir, cwd=tmp_path, check=False)
    assert "asserts run" in plain.stderr
    optimized = run_python(code, cache_dir, cwd=tmp_path, args=(flag,))
    assert optimized.stdout.strip() == ("None" if flag == "-OO" else "doc")
    again = run_python(code, cache_dir, cwd=tmp_path, check=False)
    assert "asserts run" in again.stderr


def test_valid_stock_pyc_fills_a_miss(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path, {"precompiled.py": "VALUE = 1\n"})
    run_python("import py_compile; py_compile.compile('precompiled.py')", None, hook=False, cwd=tmp_path)
    result = run_python("import precompiled", cache_dir, cwd=tmp_path, AUTOCOMPILE_LOG="debug")
    assert outcomes(result.stderr)["precompiled"] == "stock pyc"


def test_a_stock_pyc_wins_over_the_cache_but_never_enters_it(tmp_path: Path, cache_dir: Path) -> None:
    """As stock, a valid pyc is used even if it differs from its source (CPython's test_foreign_code)."""
    write_tree(tmp_path / "a", {"altered.py": "VALUE = 1\n"})
    write_tree(tmp_path / "b", {"altered.py": "VALUE = 1\n"})
    alter = """
        import marshal, py_compile
        pyc = py_compile.compile("altered.py")
        with open(pyc, "rb") as f:
            header, code = f.read(16), marshal.load(f)
        code = code.replace(co_consts=tuple(2 if c == 1 else c for c in code.co_consts))
        with open(pyc, "wb") as f:
            f.write(header)
            marshal.dump(code, f)
        """
    run_python(alter, None, hook=False, cwd=tmp_path / "a")
    code = "import altered; print(altered.VALUE)"
    assert run_python(code, None, hook=False, cwd=tmp_path / "a").stdout.strip() == "2"
    assert run_python(code, cache_dir, cwd=tmp_path / "a").stdout.strip() == "2"
    assert run_python(code, cache_dir, cwd=tmp_path / "b").stdout.strip() == "1"


def test_stale_stock_pyc_is_not_trusted(tmp_path: Path, cache_dir: Path) -> None:
    """A pyc whose mtime and size still match after ``touch -r`` must not be used."""
    module = tmp_path / "stalepyc.py"
    module.write_text("VALUE = 'old'\n")
    run_python("import py_compile; py_compile.compile('stalepyc.py')", None, hook=False, cwd=tmp_path)
    before = module.stat()
    module.write_text("VALUE = 'new'\n")
    os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    result = run_python("import stalepyc; print(stalepyc.VALUE)", cache_dir, cwd=tmp_path, AUTOCOMPILE_LOG="debug")
    assert result.stdout.strip() == "new"
    assert outcomes(result.stderr)["stalepyc"] == "compiled"


def test_read_only_cache_file_system_serves_what_it_has(tmp_path: Path, tmpfs) -> None:  # type: ignore[no-untyped-def]
    write_tree(tmp_path, {"ro_case.py": "VALUE = 7\n", "ro_new.py": "VALUE = 8\n"})
    cache = tmpfs("cache")
    run_python("import ro_case", cache, cwd=tmp_path)
    subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
    result = run_python("import ro_case, ro_new; print(ro_case.VALUE, ro_new.VALUE)", cache, cwd=tmp_path, AUTOCOMPILE_LOG="debug")
    assert result.stdout.split() == ["7", "8"]
    found = outcomes(result.stderr)
    assert found["ro_case"] in ("hit", "reused") and found["ro_new"] == "fallback"


def test_full_cache_file_system_falls_back_and_loses_nothing(tmp_path: Path, tmpfs) -> None:  # type: ignore[no-untyped-def]
    cache = tmpfs("cache", size="64k")
    (cache / "filler").write_bytes(b"x" * (64 * 1024 - 4096))
    files = {f"full_{n}.py": f"VALUE = {n}\n" + "# padding\n" * 400 for n in range(10)}
    write_tree(tmp_path, files)
    code = "import importlib; print(sum(importlib.import_module(f'full_{n}').VALUE for n in range(10)))"
    assert run_python(code, cache, cwd=tmp_path).stdout.strip() == "45"
    (cache / "filler").unlink()
    assert run_python(code, cache, cwd=tmp_path).stdout.strip() == "45"
    leftovers = [p for p in cache.rglob(".tmp-*")]
    assert leftovers == []
