"""The size cap, exercised by real imports in concurrent processes against a real cache."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import HOOK_PRELUDE, child_env, cli_json, run_python, settle, write_tree

from autocompile import _evict, _store

CAP = 256 * 1024


def package(name: str, modules: int) -> dict[str, str]:
    """A package whose modules compile to a few KiB each and check their own value."""
    body = "".join(f"def f{n}(x):\n    return x * {n} + len('{name}-{n}')\n" for n in range(60))
    files = {f"{name}/__init__.py": ""}
    files.update({f"{name}/m{n}.py": f"VALUE = {n}\n{body}" for n in range(modules)})
    return files


def importer(name: str, modules: int) -> str:
    names = ", ".join(f"{name}.m{n}" for n in range(modules))
    return f"import {names}\nassert [m.VALUE for m in ({names},)] == list(range({modules}))\n"


def cache_bytes(cache_dir: Path) -> int:
    return _evict.total_size(_evict.scan(str(cache_dir)))


def test_cap_holds_under_concurrent_writers(cache_dir: Path, tmp_path: Path) -> None:
    names = [f"pkg{n}" for n in range(6)]
    tree = tmp_path / "src"
    for name in names:
        write_tree(tree, package(name, 25))
    settle()
    env = child_env(cache_dir, AUTOCOMPILE_MAX_SIZE=str(CAP))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", HOOK_PRELUDE + importer(name, 25)],
            cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in names
    ]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0 and err == "", err
    counts = cli_json("stats", cache_dir=cache_dir)["by_package"]
    # Every module was compiled and stored (the empty __init__.py files share one object): far more than
    # the cap. A writer whose fresh object is evicted before it is indexed counts a fallback, with correct code.
    assert sum(counts[name]["misses"] + counts[name]["fallbacks"] for name in names) == 6 * 26
    assert sum(counts[name]["compiles"] + counts[name]["fallbacks"] for name in names) >= 6 * 25
    assert 0 < cache_bytes(cache_dir) <= CAP
    assert not [p for p in cache_dir.glob("objects/*/.tmp-*")]
    # What is left still serves correct code, and what was evicted is compiled again.
    for name in names:
        run_python(importer(name, 25), cache_dir, cwd=tree, AUTOCOMPILE_MAX_SIZE=str(CAP))
    assert cache_bytes(cache_dir) <= CAP


def test_eviction_takes_least_recently_used_and_spares_temporaries(cache_dir: Path, tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "src", {**package("old", 40), **package("new", 10)})
    settle()
    run_python(importer("old", 40), cache_dir, cwd=tree)  # no cap yet
    old = {e["key"] for e in cli_json("list", "old*", cache_dir=cache_dir)["entries"]}
    then = time.time() - 3 * 86400
    for path in cache_dir.glob("*/*/*"):
        os.utime(path, (then, then))
    shard = next(cache_dir.glob("objects/*"))
    in_flight = shard / ".tmp-0123456789ab-in-flight"
    in_flight.write_bytes(b"another writer's file")
    cap = cache_bytes(cache_dir) + 16 * 1024
    run_python(importer("new", 10), cache_dir, cwd=tree, AUTOCOMPILE_MAX_SIZE=str(cap))
    left = {e["module"]: e["key"] for e in cli_json("list", cache_dir=cache_dir)["entries"]}
    assert cache_bytes(cache_dir) <= cap
    assert {f"new.m{n}" for n in range(10)} <= set(left)  # the fresh entries stay
    assert len(old - set(left.values())) >= 10  # the old ones went
    assert in_flight.exists()


def test_an_open_entry_survives_eviction(cache_dir: Path, tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "src", package("held", 1))
    run_python(importer("held", 1), cache_dir, cwd=tree)
    path = next(cache_dir.glob("objects/*/*"))
    with open(path, "rb") as reader:
        cli_json("prune", "--max-size", "0", cache_dir=cache_dir)
        assert not path.exists()
        entry = _store.unpack(reader.read(), path.name)
    assert entry.key == path.name


def test_after_write_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = f"""
        from autocompile import _evict, _store
        _evict.after_write(_store.Store({str(blocker / 'cache')!r}), 1 << 30, 1)
        _evict.after_write(_store.Store({str(blocker / 'cache')!r}), 1, 1)
        print("alive")
    """
    result = run_python(code, None, hook=False)
    assert (result.stdout, result.stderr) == ("alive\n", "")


def test_no_cap_means_no_accounting_and_the_estimate_errs_high(cache_dir: Path, tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "src", {**package("first", 3), **package("second", 5)})
    run_python(importer("first", 3), cache_dir, cwd=tree, AUTOCOMPILE_MAX_SIZE="0")
    assert not (cache_dir / _evict.ESTIMATE_FILE).exists()
    run_python(importer("second", 5), cache_dir, cwd=tree, AUTOCOMPILE_MAX_SIZE="10M")
    estimate = int((cache_dir / _evict.ESTIMATE_FILE).read_text())
    assert estimate >= cache_bytes(cache_dir) > 0
