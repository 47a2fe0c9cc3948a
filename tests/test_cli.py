"""The management commands, run as a user runs them: ``python -m autocompile`` on caches built by real imports."""

from __future__ import annotations

import json
import os
import py_compile
import shutil
import stat
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, child_env, cli_json, run_cli, run_python, settle, write_tree

TAG = sys.implementation.cache_tag
MODULES = {f"demo/m{n}.py": f"VALUE = {n}\ndef twice():\n    return 2 * VALUE\n" for n in range(4)}
#: Another package, with a different name and size (``import json`` would be served by stdlib pycs).
EXTRA = {"extra/__init__.py": "from . import a, b, c\n", **{f"extra/{n}.py": f"NAME = {n!r}\n" for n in "abc"}}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A settled source tree: ``demo`` (five modules), ``extra`` (four) and ``trap``, whose ``__init__`` must never run."""
    root = tmp_path_factory.mktemp("project")
    write_tree(root, {"demo/__init__.py": "", **MODULES, **EXTRA})
    write_tree(root, {"trap/__init__.py": "raise SystemExit('trap imported')\n", "trap/inner.py": "X = 1\n"})
    settle()
    return root


def import_extra(cache_dir: Path, project: Path) -> None:
    run_python("import extra\nassert extra.c.NAME == 'c'", cache_dir, cwd=project)


def import_demo(cache_dir: Path, project: Path, **env: str) -> None:
    code = "import demo.m0, demo.m1, demo.m2, demo.m3\nassert [m.twice() for m in (demo.m0, demo.m1, demo.m2, demo.m3)] == [0, 2, 4, 6]"
    run_python(code, cache_dir, cwd=project, **env)


def objects(cache_dir: Path) -> list[Path]:
    return [p for p in (cache_dir / "objects").glob("*/*") if not p.name.startswith(".tmp-")]


def assert_one_line_error(result, code: int, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    # Where autocompile is installed for real, the CLI's own interpreter runs the hook, which may
    # already have said, once, that it cannot use that cache: that line is the hook's, not the command's.
    lines = [line for line in result.stderr.strip().splitlines() if not line.endswith("; using the standard import")]
    assert len(lines) == 1 and lines[0].startswith("autocompile: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]
    assert result.stdout == ""


# stats -----------------------------------------------------------------------


def test_stats_by_interpreter_and_package_with_time_saved(cache_dir: Path, project: Path) -> None:
    import_demo(cache_dir, project)
    import_demo(cache_dir, project)
    doc = cli_json("stats", cache_dir=cache_dir)
    demo = doc["by_package"]["demo"]
    assert (demo["compiles"], demo["hits"], demo["fallbacks"]) == (5, 5, 0)
    assert demo["hit_rate"] == 0.5
    assert demo["saved_seconds"] == pytest.approx(5 * demo["mean_compile_ms"] / 1000, rel=0.01, abs=0.002)
    assert doc["by_python"][TAG]["compiles"] == doc["compiles"] >= 5
    assert doc["entries"] >= 5 and doc["size_bytes"] > 0
    human = run_cli("stats", cache_dir=cache_dir).stdout
    assert "demo" in human and TAG in human and "time saved" in human

    zeroed = cli_json("stats", "--zero", cache_dir=cache_dir)
    assert (zeroed["hits"], zeroed["misses"], zeroed["by_package"]) == (0, 0, {})
    assert zeroed["entries"] == doc["entries"]


# list and explain ------------------------------------------------------------------


def test_list_selects_by_module_or_path_pattern(cache_dir: Path, project: Path) -> None:
    import_demo(cache_dir, project)
    import_extra(cache_dir, project)
    entries = cli_json("list", "demo.*", cache_dir=cache_dir)["entries"]
    assert sorted(e["module"] for e in entries) == [f"demo.m{n}" for n in range(4)]
    assert all(e["kind"] == "code" and e["python"] == TAG and e["optimize"] == 0 and e["size_bytes"] > 0 for e in entries)
    assert {e["path"] for e in entries} == {str(project / name) for name in MODULES}
    by_path = cli_json("list", f"{project}/demo/*", cache_dir=cache_dir)["entries"]
    assert len(by_path) == 5
    table = run_cli("list", "extra*", cache_dir=cache_dir).stdout
    assert table.splitlines()[0].split() == ["module", "kind", "python", "opt", "size", "last", "use", "source"]
    assert "demo" not in table


def explain(module: str, cache_dir: Path, project: Path, **env: str) -> dict:
    result = run_cli("explain", module, "--json", cache_dir=cache_dir, PYTHONPATH=f"{os.pathsep.join([str(project), child_env(None)['PYTHONPATH']])}", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_explain_gives_the_loaders_verdict_without_importing(cache_dir: Path, project: Path, tmp_path: Path) -> None:
    assert explain("demo.m1", cache_dir, project)["verdict"] == "compile"
    import_demo(cache_dir, project)
    hit = explain("demo.m1", cache_dir, project)
    assert hit["verdict"] == "hit" and hit["origin"] == str(project / "demo/m1.py")
    assert (cache_dir / "index" / hit["stat_key"][:1] / hit["stat_key"]).exists()

    copy = write_tree(tmp_path / "copy", {"demo/__init__.py": "", "demo/m1.py": MODULES["demo/m1.py"]})
    assert explain("demo.m1", cache_dir, copy)["verdict"] == "reused"

    assert explain("trap.inner", cache_dir, project)["verdict"] == "compile"  # trap/__init__.py never ran
    assert explain("sys", cache_dir, project)["verdict"] == "not source"
    assert explain("demo.m1", cache_dir, project, AUTOCOMPILE_EXCLUDE="demo.*")["verdict"] == "excluded"
    assert explain("demo.m1", cache_dir, project, AUTOCOMPILE_DISABLE="1")["verdict"] == "disabled"


def test_explain_source_changed_and_untrusted_cache(cache_dir: Path, tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "src", {"edited.py": "A = 1\n"})
    settle()
    run_python("import edited", cache_dir, cwd=tree)
    (tree / "edited.py").write_text("A = 22\n")
    changed = explain("edited", cache_dir, tree)
    assert changed["verdict"] == "source changed"
    assert any("settled" in note for note in changed["notes"])
    py_compile.compile(str(tree / "edited.py"))  # now stock Python would use the pyc
    assert explain("edited", cache_dir, tree)["verdict"] == "stock pyc"
    os.chmod(cache_dir, 0o777)
    assert explain("edited", cache_dir, tree)["verdict"] == "untrusted"


# clear -----------------------------------------------------------------------


def test_clear_refuses_without_a_terminal_then_removes_a_package(cache_dir: Path, project: Path) -> None:
    import_demo(cache_dir, project)
    import_extra(cache_dir, project)
    before = len(objects(cache_dir))
    assert_one_line_error(run_cli("clear", cache_dir=cache_dir), 2, "--yes")
    assert len(objects(cache_dir)) == before
    assert cli_json("clear", "--python", "cpython-00", "--yes", cache_dir=cache_dir)["removed"] == 0
    removed = cli_json("clear", "--package", "demo", "--yes", cache_dir=cache_dir)["removed"]
    assert removed == 5
    assert len(objects(cache_dir)) == before - 5
    assert cli_json("list", "demo*", cache_dir=cache_dir)["entries"] == []
    assert cli_json("list", "extra*", cache_dir=cache_dir)["entries"]
    cli_json("clear", "--yes", cache_dir=cache_dir)
    assert objects(cache_dir) == [] and not list((cache_dir / "index").glob("*/*"))
    import_demo(cache_dir, project)  # still works, and refills it
    assert len(objects(cache_dir)) == 5


# prune -----------------------------------------------------------------------


def age(paths: list[Path], seconds: float) -> None:
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


def test_prune_older_than_max_size_dry_run_and_stale_temporaries(cache_dir: Path, project: Path) -> None:
    import_demo(cache_dir, project)
    import_extra(cache_dir, project)
    demo = {e["key"] for e in cli_json("list", "demo*", cache_dir=cache_dir)["entries"]}
    age([p for p in objects(cache_dir) if p.name in demo], 3 * 86400)
    shard = objects(cache_dir)[0].parent  # where writers put their temporaries
    stale, fresh = shard / ".tmp-stale", shard / ".tmp-fresh"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    age([stale], 7200)

    dry = cli_json("prune", "--older-than", "2d", "--dry-run", cache_dir=cache_dir)
    assert (dry["removed"], dry["stale_temporaries"]) == (5, 1)
    assert {e["reason"] for e in dry["entries"]} == {"unused"}
    assert stale.exists() and len(objects(cache_dir)) == len(demo) + 4

    done = cli_json("prune", "--older-than", "2d", cache_dir=cache_dir)
    assert done["removed"] == 5 and not stale.exists() and fresh.exists()
    assert not {p.name for p in objects(cache_dir)} & demo

    size = cli_json("stats", cache_dir=cache_dir)["size_bytes"]
    cli_json("prune", "--max-size", str(size // 2), cache_dir=cache_dir)
    assert cli_json("stats", cache_dir=cache_dir)["size_bytes"] <= size // 2
    cli_json("prune", "--max-size", "0", cache_dir=cache_dir)
    assert objects(cache_dir) == []


def test_prune_least_recently_used_goes_first(cache_dir: Path, project: Path) -> None:
    import_demo(cache_dir, project)
    entries = cli_json("list", "demo.m*", cache_dir=cache_dir)["entries"]
    by_module = {e["module"]: cache_dir / "objects" / e["key"][:1] / e["key"] for e in entries}
    for n, module in enumerate(sorted(by_module)):
        age([by_module[module]], 1000 * (10 - n))  # demo.m0 is the least recently used
    size = cli_json("stats", cache_dir=cache_dir)["size_bytes"]
    smallest_cut = size - by_module["demo.m0"].stat().st_blocks * 512
    gone = cli_json("prune", "--max-size", str(smallest_cut), "--dry-run", cache_dir=cache_dir)["entries"]
    assert [e["module"] for e in gone] == ["demo.m0"]


def test_prune_orphans(cache_dir: Path, tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "src", {"gone.py": "A = 1\n", "kept.py": "B = 2\n"})
    settle()
    run_python("import gone, kept", cache_dir, cwd=tree)
    kept = {e["module"]: e["key"] for e in cli_json("list", cache_dir=cache_dir)["entries"]}["kept"]
    (tree / "gone.py").unlink()
    (cache_dir / "objects" / kept[:1] / kept).unlink()  # its index link is now orphaned
    result = cli_json("prune", "--orphans", cache_dir=cache_dir)
    assert sorted(e["reason"] for e in result["entries"]) == ["orphaned", "orphaned"]
    assert objects(cache_dir) == [] and not list((cache_dir / "index").glob("*/*"))
    run_python("import kept; assert kept.B == 2", cache_dir, cwd=tree)


def test_prune_orphans_removes_the_runtime_bundles_of_removed_copies(cache_dir: Path, tmp_path: Path) -> None:
    """Every installed copy leaves a runtime bundle; when the copy goes (a deleted venv), its bundle
    goes with ``--orphans``, and a shared bundle goes once no remaining copy came from it."""
    runtime = cache_dir / "runtime"
    copies = {}
    for name, edit in (("copy", False), ("edited", True)):
        copies[name] = tmp_path / name
        shutil.copytree(REPO / "autocompile", copies[name] / "autocompile", ignore=shutil.ignore_patterns("__pycache__"))
        if edit:  # other sources: another shared bundle
            with open(copies[name] / "autocompile" / "_log.py", "a") as file:
                file.write("# edited\n")
    for parent in (REPO, *copies.values()):  # the .pth line boots the copy found first on PYTHONPATH
        run_python("pass", cache_dir, PYTHONPATH=str(parent))
    assert len(list(runtime.iterdir())) == 8  # three copies' bundles and their origins, two shared bundles

    def pruned() -> list[str]:
        result = cli_json("prune", "--orphans", cache_dir=cache_dir)
        assert {e["module"] for e in result["entries"]} <= {"(autocompile runtime)"}
        return sorted(Path(e["path"]).name for e in result["entries"])

    assert pruned() == []
    assert cli_json("stats", cache_dir=cache_dir)["runtime"]["bundles"] == 5
    shutil.rmtree(copies["copy"])
    runtime_stats = cli_json("stats", cache_dir=cache_dir)["runtime"]
    assert (runtime_stats["bundles"], runtime_stats["orphans"]) == (5, 1) and runtime_stats["size_bytes"] > 0
    assert "1 orphaned, see prune --orphans" in run_cli("stats", cache_dir=cache_dir).stdout
    gone = pruned()
    assert len(gone) == 1 and not gone[0].startswith("shared-")  # its shared bundle serves the repository's copy
    assert len(list(runtime.iterdir())) == 6, "the bundle's origin goes with it"
    shutil.rmtree(copies["edited"])
    gone = pruned()
    assert len(gone) == 2 and sum(name.startswith("shared-") for name in gone) == 1
    (own,) = [path for path in runtime.iterdir() if path.suffix == ".origin"]
    own.unlink()  # a bundle an older autocompile wrote: nothing says whose it is
    assert len(pruned()) == 2 and list(runtime.iterdir()) == []
    run_python("pass", cache_dir)  # a copy whose bundle went starts as usual and writes it again
    assert len(list(runtime.iterdir())) == 3


# verify ----------------------------------------------------------------------


def test_verify_finds_corrupt_and_wrong_entries_and_fix_removes_them(cache_dir: Path, project: Path) -> None:
    import_demo(cache_dir, project)
    assert cli_json("verify", "--all", cache_dir=cache_dir)["problems"] == []
    keys = {e["module"]: e["key"] for e in cli_json("list", cache_dir=cache_dir)["entries"]}
    corrupt = cache_dir / "objects" / keys["demo.m1"][:1] / keys["demo.m1"]
    data = bytearray(corrupt.read_bytes())
    data[-1] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    # A well-formed entry holding the wrong code: only recompiling finds it.
    wrong = run_python(
        f"""
        import marshal, sys
        sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
        from autocompile import _store
        path = {str(cache_dir / 'objects' / keys['demo.m2'][:1] / keys['demo.m2'])!r}
        entry = _store.unpack(open(path, 'rb').read())
        data = _store.pack(0, entry.key, marshal.dumps(compile('VALUE = 666', entry.meta['path'], 'exec')), entry.meta)
        _store.write_atomic(path, data)
        """,
        None,
        hook=False,
    )
    assert wrong.returncode == 0
    result = run_cli("verify", "--all", "--json", cache_dir=cache_dir)
    assert result.returncode == 1
    problems = {p["module"]: p["problem"] for p in json.loads(result.stdout)["problems"]}
    assert problems == {"demo.m1": "checksum mismatch", "demo.m2": "code differs from a fresh compile of its source"}
    assert run_cli("verify", "--all", "--fix", cache_dir=cache_dir).returncode == 1
    assert run_cli("verify", "--all", cache_dir=cache_dir).returncode == 0
    import_demo(cache_dir, project)  # recompiled, correct


# warm ------------------------------------------------------------------------


def test_warm_compiles_then_skips_reports_failures_and_keeps_the_cap(cache_dir: Path, project: Path, tmp_path: Path) -> None:
    first = cli_json("warm", str(project / "demo"), cache_dir=cache_dir)
    assert (first["compiled"], first["skipped"], first["failed"]) == (5, 0, 0)
    again = cli_json("warm", str(project / "demo"), cache_dir=cache_dir)
    assert (again["compiled"], again["skipped"]) == (0, 5)
    import_demo(cache_dir, project)
    assert cli_json("stats", cache_dir=cache_dir)["by_package"]["demo"]["hits"] == 5
    broken = write_tree(tmp_path / "broken", {"bad.py": "def (:\n"})
    failed = cli_json("warm", str(broken), cache_dir=cache_dir)
    assert failed["failed"] == 1 and "SyntaxError" in failed["failures"][0]["reason"]
    capped = tmp_path / "capped"
    many = write_tree(tmp_path / "many", {f"m{n}.py": f"X = {n}\n" * 400 for n in range(40)})
    result = cli_json("warm", str(many), "--jobs", "1", cache_dir=capped, AUTOCOMPILE_MAX_SIZE="64K")
    assert result["compiled"] == 40
    assert cli_json("stats", cache_dir=capped)["size_bytes"] <= 64 * 1024


# export and import -----------------------------------------------------------------


def test_export_import_round_trip_serves_imports(cache_dir: Path, project: Path, tmp_path: Path) -> None:
    import_demo(cache_dir, project)
    import_extra(cache_dir, project)
    archive = tmp_path / "demo.zip"
    assert cli_json("export", str(archive), "demo", cache_dir=cache_dir)["entries"] == 5
    other = tmp_path / "other-cache"
    assert cli_json("import", str(archive), cache_dir=other) == {"file": str(archive), "added": 5, "already_present": 0}
    assert cli_json("import", str(archive), cache_dir=other)["already_present"] == 5
    import_demo(other, project)
    stats = cli_json("stats", cache_dir=other)["by_package"]["demo"]
    assert (stats["compiles"], stats["reused"]) == (0, 5)


def archive_with(path: Path, manifest: object, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_damaged_or_foreign_archives_are_refused_and_nothing_is_written(cache_dir: Path, project: Path, tmp_path: Path) -> None:
    import_demo(cache_dir, project)
    good = tmp_path / "good.zip"
    cli_json("export", str(good), cache_dir=cache_dir)
    with zipfile.ZipFile(good) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        members = {name: archive.read(name) for name in archive.namelist() if name != "manifest.json"}
    last = sorted(members)[-1]
    target = tmp_path / "target"
    cases = {
        "truncated.zip": (good.read_bytes()[: good.stat().st_size // 2], "not a zip archive"),
        "text.zip": (b"hello\n", "not a zip archive"),
        "foreign.zip": (archive_with(tmp_path / "f", {"format": "other"}, {}).read_bytes(), "not an autocompile archive"),
        "future.zip": (archive_with(tmp_path / "v", {**manifest, "version": 99}, members).read_bytes(), "another version"),
        "bad-entry.zip": (
            archive_with(tmp_path / "b", manifest, {**members, last: members[last][:-1] + b"!"}).read_bytes(),
            "damaged entry",
        ),
        "missing-entry.zip": (archive_with(tmp_path / "m", manifest, {}).read_bytes(), "missing"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert_one_line_error(run_cli("import", str(tmp_path / name), cache_dir=target), 1, message, "nothing imported")
        assert objects(target) == [], name
    assert_one_line_error(run_cli("import", str(tmp_path / "absent.zip"), cache_dir=target), 2, "no such archive")


# config and doctor -----------------------------------------------------------------


def test_config_shows_each_origin(cache_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('max_size = "300M"\nexclude = ["tests.*"]\n')
    doc = cli_json("config", cache_dir=cache_dir, AUTOCOMPILE_CONFIG=str(config), AUTOCOMPILE_LOG="debug")
    settings = doc["settings"]
    assert settings["max_size"] == {"value": 300 * 1024**2, "origin": f"config file {config}"}
    assert settings["exclude"]["value"] == ["tests.*"]
    assert settings["log"] == {"value": "debug", "origin": "environment AUTOCOMPILE_LOG"}
    assert settings["cache_dir"]["origin"] == "environment AUTOCOMPILE_CACHE_DIR"
    assert settings["enabled"]["origin"] == "default"
    assert "config file" in run_cli("config", cache_dir=cache_dir, AUTOCOMPILE_CONFIG=str(config)).stdout


def test_doctor_reports_storage_and_config_problems_with_line(cache_dir: Path, project: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('log = "debug"\nmax_sise = "1G"\n')
    result = run_cli("doctor", "--json", cache_dir=cache_dir, AUTOCOMPILE_CONFIG=str(config), AUTOCOMPILE_MAX_SIZE="1")
    doc = json.loads(result.stdout)
    assert result.returncode == 1
    assert f"{config}:2: unknown setting 'max_sise'" in doc["problems"]
    assert doc["file_system"] and doc["free_bytes"] > 0 and doc["max_size_bytes"] == 1
    import_extra(cache_dir, project)
    over = cli_json("doctor", cache_dir=cache_dir, AUTOCOMPILE_MAX_SIZE="1")
    assert any("over its cap" in w for w in over["warnings"])


# bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, code, message",
    [
        (("frobnicate",), 2, "invalid choice"),
        (("stats", "--frob"), 2, "unrecognized arguments"),
        (("prune", "--max-size", "12Q"), 2, "not a size: '12Q'"),
        (("prune", "--older-than", "soon"), 2, "not an age: 'soon'"),
        (("prune", "--older-than=-3d"), 2, "not an age"),
        (("explain", "no_such_module_xyz.sub"), 2, "no module named"),
        (("explain", "not a name"), 2, "not a module name"),
        (("warm", "no_such_package_xyz"), 2, "no such file, directory or package"),
        (("export", "out.zip", "no_such_package_xyz"), 1, "no cached entries for no_such_package_xyz"),
        (("verify", "--sample", "0"), 2, "not a positive whole number"),
        (("export", "/nonexistent-dir/out.zip"), 1, "No such file or directory"),
        (("import", "/nonexistent-dir"), 2, "no such archive"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(cache_dir: Path, project: Path, args: tuple[str, ...], code: int, message: str) -> None:
    import_extra(cache_dir, project)
    assert_one_line_error(run_cli(*args, cache_dir=cache_dir), code, message)


def test_unusable_cache_directory_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    for args in (("list",), ("import", str(blocker)), ("clear", "--yes"), ("warm", str(blocker))):
        result = run_cli(*args, cache_dir=blocker / "cache")
        assert_one_line_error(result, 1, str(blocker))
    untrusted = tmp_path / "shared"
    untrusted.mkdir()
    untrusted.chmod(0o777)
    assert_one_line_error(run_cli("prune", cache_dir=untrusted), 1, "writable by group or others")
    assert stat.S_IMODE(untrusted.stat().st_mode) == 0o777


def test_command_line_settings_override_config_and_environment(tmp_path: Path, cache_dir: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('max_size = "1G"\n')
    chosen = tmp_path / "chosen"
    result = run_cli(
        "--cache-dir", str(chosen), "--max-size", "2G", "--config", str(config), "config", "--json",
        cache_dir=cache_dir, AUTOCOMPILE_MAX_SIZE="3G",
    )
    settings = json.loads(result.stdout)["settings"]
    assert settings["cache_dir"] == {"value": str(chosen), "origin": "command line --cache-dir"}
    assert settings["max_size"] == {"value": 2 * 1024**3, "origin": "command line --max-size"}
    bad = run_cli("--max-size", "12Q", "stats", cache_dir=cache_dir)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "12Q" in bad.stderr
