"""Hostile environments: imports succeed exactly as stock, quietly, and nothing is lost.

Already elsewhere: a full and a read-only cache file system (test_loader.py), a
missing home directory (test_config.py). Here: a cache directory that is
read-only by permission, deleted under running processes, HOME unset,
XDG_CACHE_HOME unwritable, non-UTF-8 and very long paths, a 10 MB module, NUL
bytes in a source, and a source rewritten while it is being compiled.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import HOOK_PRELUDE, child_env, run_python, settle, write_tree
from reliability import NO_PYC, invalid_entries, spawn, stock_results, workload_code

NOBODY = 65534


def outcomes(stderr: str) -> dict[str, str]:
    found = {}
    for line in stderr.splitlines():
        if line.startswith("autocompile: ") and ": " in line[13:]:
            name, _, rest = line[13:].partition(": ")
            found[name] = rest.split(" ")[0].rstrip(";")
    return found


def same_as_stock(code: str, cache_dir: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    stock = run_python(code, cache_dir, hook=False, cwd=cwd, check=False, **NO_PYC, **env)
    ours = run_python(code, cache_dir, cwd=cwd, check=False, **NO_PYC, **env)
    assert (ours.returncode, ours.stdout, ours.stderr) == (stock.returncode, stock.stdout, stock.stderr)
    return ours


@pytest.fixture
def public_dir():  # type: ignore[no-untyped-def]
    """A directory another user can traverse (pytest's own tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="autocompile-hostile-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _runs_as_nobody(python: str) -> bool:
    """Whether another user can run ``python`` (not when it lives in a directory only its owner can enter)."""
    if os.geteuid() != 0 or not os.path.exists(python):
        return False
    try:
        return subprocess.run([python, "-c", "pass"], user=NOBODY, group=NOBODY, capture_output=True).returncode == 0
    except OSError:
        return False


#: An interpreter another user may run, if this machine has one.
PUBLIC_PYTHON = next((p for p in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3") if _runs_as_nobody(p)), None)


@pytest.mark.skipif(os.geteuid() != 0 or PUBLIC_PYTHON is None, reason="needs root, and an interpreter another user can run")
def test_read_only_cache_directory_serves_what_it_has(public_dir: Path) -> None:
    """A cache its owner cannot write (mode 0500): hits are served, misses compile, nothing is said."""
    write_tree(public_dir, {"src/old_mod.py": "VALUE = 1\n", "src/new_mod.py": "VALUE = 2\n"})
    os.chmod(public_dir / "src", 0o755)
    settle()
    cache = public_dir / "cache"
    cache.mkdir(mode=0o700)
    os.chown(cache, NOBODY, NOBODY)

    def run(code: str) -> subprocess.CompletedProcess[str]:
        env = child_env(cache, AUTOCOMPILE_LOG="debug", HOME=str(public_dir))
        return subprocess.run(
            [PUBLIC_PYTHON, "-c", HOOK_PRELUDE + code], env=env, cwd=public_dir / "src", user=NOBODY, group=NOBODY,
            capture_output=True, text=True, timeout=120,
        )

    first = run("import old_mod")
    assert first.returncode == 0, first.stderr
    for path in [cache, *cache.rglob("*")]:
        if path.is_dir():
            os.chmod(path, 0o500)
    result = run("import old_mod, new_mod; print(old_mod.VALUE, new_mod.VALUE)")
    assert result.returncode == 0 and result.stdout.split() == ["1", "2"]
    found = outcomes(result.stderr)
    assert found["old_mod"] == "hit" and found["new_mod"] == "fallback"
    assert not [line for line in result.stderr.splitlines() if not line.startswith("autocompile: ") or "warning" in line]


def test_cache_directory_deleted_while_processes_run(tmp_path: Path) -> None:
    """The whole cache removed again and again under three importing processes: each imports correctly."""
    cache = tmp_path / "cache"
    expected = stock_results([sys.executable], workload_code(), **NO_PYC)[sys.executable]
    children = [spawn(workload_code(), cache, **NO_PYC) for _ in range(3)]
    removals = 0
    while any(child.poll() is None for child in children):
        shutil.rmtree(cache, ignore_errors=True)
        removals += 1
        time.sleep(0.05)
    for child in children:
        out, err = child.communicate()
        assert child.returncode == 0 and err == ""
        assert json.loads(out)["digest"] == expected["digest"]
    assert removals > 5
    assert invalid_entries(cache) == [] if cache.exists() else True
    # It is recreated, trusted, by the next process.
    result = run_python("import json; print(json.__spec__.loader.get_code.__class__.__name__)", cache, **NO_PYC)
    assert result.stdout.strip() == "CachedGetCode" and result.stderr == ""


def test_home_unset_entirely(tmp_path: Path) -> None:
    write_tree(tmp_path, {"homeless.py": "VALUE = 3\n"})
    env = child_env(None)
    env.pop("HOME", None)
    env.pop("XDG_CACHE_HOME", None)
    result = subprocess.run(
        [sys.executable, "-c", HOOK_PRELUDE + "import homeless; print(homeless.VALUE)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "3", "")


@pytest.mark.parametrize("kind", ["regular_file", "read_only_mount", "missing_parent_on_read_only"])
def test_unwritable_xdg_cache_home(tmp_path: Path, tmpfs, kind: str) -> None:  # type: ignore[no-untyped-def]
    write_tree(tmp_path, {"xdg_mod.py": "VALUE = 4\n"})
    if kind == "regular_file":
        xdg = tmp_path / "not-a-directory"
        xdg.write_text("")
    elif kind == "read_only_mount":
        xdg = tmpfs("xdg", read_only=True)
    else:
        xdg = tmpfs("xdg", read_only=True) / "deeper" / "still"
    env = child_env(None, XDG_CACHE_HOME=str(xdg), HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [sys.executable, "-c", HOOK_PRELUDE + "import xdg_mod; print(xdg_mod.VALUE)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "4", "")


def test_non_utf8_paths(tmp_path: Path, cache_dir: Path) -> None:
    directory = os.path.join(os.fsencode(tmp_path), b"caf\xe9-\xff\xfe-dir")
    os.makedirs(os.path.join(directory, b"pkg"))
    with open(os.path.join(directory, b"pkg", b"__init__.py"), "w") as file:
        file.write("")
    with open(os.path.join(directory, b"pkg", b"mod.py"), "w") as file:
        file.write("def where():\n    return __file__\nVALUE = 'ok'\n")
    settle()
    code = f"""
        import os, sys
        sys.path.insert(0, os.fsdecode({directory!r}))
        import pkg.mod
        print(os.fsencode(pkg.mod.where()), pkg.mod.VALUE, os.fsencode(pkg.mod.where.__code__.co_filename))
        """
    same_as_stock(code, cache_dir, tmp_path)
    again = run_python(code, cache_dir, cwd=tmp_path, AUTOCOMPILE_LOG="debug", **NO_PYC)
    assert outcomes(again.stderr)["pkg.mod"] == "hit"


def test_very_long_and_deep_paths(tmp_path: Path, cache_dir: Path) -> None:
    """A module 60 directories deep whose path is about 4000 bytes (PATH_MAX is 4096)."""
    base = str(tmp_path)
    parts = []
    while len(base) + sum(len(p) + 1 for p in parts) < 3900:
        parts.append(f"d{len(parts):02d}" + "x" * 60)
    deep = os.path.join(base, *parts)
    os.makedirs(deep)
    Path(deep, "deep_mod.py").write_text("VALUE = 'deep'\ndef f():\n    raise ValueError('from deep')\n")
    assert 3900 <= len(os.path.join(deep, "deep_mod.py")) < 4096
    settle()
    code = f"""
        import sys, traceback
        sys.path.insert(0, {deep!r})
        import deep_mod
        print(deep_mod.VALUE, len(deep_mod.__file__))
        try:
            deep_mod.f()
        except ValueError:
            print(traceback.format_exc().count('deep_mod.py'))
        """
    same_as_stock(code, cache_dir, tmp_path)
    assert outcomes(run_python(code, cache_dir, cwd=tmp_path, AUTOCOMPILE_LOG="debug", **NO_PYC).stderr)["deep_mod"] == "hit"


def test_ten_megabyte_module(tmp_path: Path, cache_dir: Path) -> None:
    lines = [f"TABLE_{n} = ({n}, {str(n) * 40!r}, {n}.5)\n" for n in range(20000)]
    body = "".join(lines)
    blob = "BLOB = " + repr("abcdefghij" * (1024 * 1024 - len(body) // 10)) + "\n"
    write_tree(tmp_path, {"huge_mod.py": body + blob + "TOTAL = sum(globals()[f'TABLE_{n}'][0] for n in range(20000))\n"})
    assert (tmp_path / "huge_mod.py").stat().st_size >= 10 * 1000 * 1000
    settle()
    code = "import huge_mod; print(huge_mod.TOTAL, len(huge_mod.BLOB), huge_mod.TABLE_19999)"
    same_as_stock(code, cache_dir, tmp_path)
    assert outcomes(run_python(code, cache_dir, cwd=tmp_path, AUTOCOMPILE_LOG="debug", **NO_PYC).stderr)["huge_mod"] == "hit"


@pytest.mark.parametrize("where", ["code", "string", "comment"])
def test_source_with_nul_bytes_is_exactly_stock(tmp_path: Path, cache_dir: Path, where: str) -> None:
    source = {"code": b"VALUE = 1\x00\n", "string": b"VALUE = '\x00'\n", "comment": b"# \x00\nVALUE = 1\n"}[where]
    write_tree(tmp_path, {"nul_mod.py": source})
    code = """
        try:
            import nul_mod
            print("imported", nul_mod.VALUE)
        except BaseException as exc:
            print(type(exc).__name__, exc)
        """
    same_as_stock(code, cache_dir, tmp_path)
    settle()
    same_as_stock(code, cache_dir, tmp_path)


REWRITER = r"""
import os, sys, time
path, mode, stop, rounds = sys.argv[1], sys.argv[2], sys.argv[3], 0
def version(n):
    return f"VERSION = {n}\n" + "".join(f"def f{k}():\n    return {n}\n" for k in range(3000))
while not os.path.exists(stop):
    n = rounds % 7
    if mode == "replace":
        tmp = path + ".new"
        with open(tmp, "w") as f:
            f.write(version(n))
        os.replace(tmp, path)
    else:  # in place: the same inode, rewritten (same length for every n < 10)
        with open(path, "r+") as f:
            f.write(version(n))
    rounds += 1
print(rounds)
"""

CHECKER = r"""
import importlib, sys, json
sys.path.insert(0, sys.argv[1])
seen, torn, errors = set(), 0, 0
for _ in range(int(sys.argv[2])):
    try:
        if "live_mod" in sys.modules:
            module = importlib.reload(sys.modules["live_mod"])
        else:
            module = importlib.import_module("live_mod")
    except SyntaxError:  # an in-place rewrite read half-way: stock reads the same bytes
        errors += 1
        continue
    values = {getattr(module, f"f{k}")() for k in range(3000)}
    if values != {module.VERSION}:
        torn += 1
    seen.add(module.VERSION)
print(json.dumps({"seen": sorted(seen), "torn": torn, "errors": errors}))
"""


@pytest.mark.parametrize("mode", ["replace", "in place"])
def test_source_rewritten_while_it_is_compiled(tmp_path: Path, cache_dir: Path, mode: str) -> None:
    """Another process rewrites a big module in a loop while three processes import and reload
    it. Replaced atomically, the code that runs is always one whole version. Rewritten in place,
    a read that races the writer sees a mix of two versions, as stock's does (POSIX does not make
    a read atomic against a write), so there only validity is asserted. Afterwards the final
    version is served, from source and then from the index, in both modes."""
    src = tmp_path / "src"
    src.mkdir()
    final = "VERSION = 99\n" + "".join(f"def f{k}():\n    return 99\n" for k in range(3000))
    (src / "live_mod.py").write_text(final.replace("99", "0"))
    stop = tmp_path / "stop"
    rewriter = subprocess.Popen([sys.executable, "-c", REWRITER, str(src / "live_mod.py"), mode, str(stop)], stdout=subprocess.PIPE, text=True)
    checkers = [
        subprocess.Popen(
            [sys.executable, "-c", HOOK_PRELUDE + CHECKER, str(src), "40"], env=child_env(cache_dir, **NO_PYC),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(3)
    ]
    reports = []
    for checker in checkers:
        out, err = checker.communicate(timeout=300)
        assert checker.returncode == 0 and err == "", err
        reports.append(json.loads(out))
    stop.touch()
    assert int(rewriter.communicate(timeout=60)[0]) > 10
    if mode == "replace":
        assert all(report["torn"] == 0 and report["errors"] == 0 for report in reports), reports
    assert len(set().union(*(report["seen"] for report in reports))) > 1, "the rewrites were never seen"
    assert invalid_entries(cache_dir) == []
    (src / "live_mod.py").write_text(final)
    code = "import sys; sys.path.insert(0, 'src'); import live_mod; print(live_mod.VERSION, live_mod.f2999())"
    assert run_python(code, cache_dir, cwd=tmp_path, **NO_PYC).stdout.split() == ["99", "99"]
    settle()
    result = run_python(code, cache_dir, cwd=tmp_path, AUTOCOMPILE_LOG="debug", **NO_PYC)
    assert result.stdout.split() == ["99", "99"]
    result = run_python(code, cache_dir, cwd=tmp_path, AUTOCOMPILE_LOG="debug", **NO_PYC)
    assert result.stdout.split() == ["99", "99"] and outcomes(result.stderr)["live_mod"] == "hit"
