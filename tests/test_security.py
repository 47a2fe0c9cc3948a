"""Security: nothing another user plants in or around the cache is run; the import falls back to stock.

tests/test_store.py covers the directory checks (owner, group/world-writable
directory or parent) and reading through a symlink or another user's file at
the store level. Here the same threats through real imports, and the ones it
does not cover: a symlink planted at an index path, another user's entries
inside a trusted cache, symlinks planted at temporary paths, a cache
directory reached through another user's symlink.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import run_python, settle, write_tree
from reliability import NO_PYC, cache_files
from autocompile import _keys, _store

#: Where the directory check lives (it moved from ``_store`` to ``_location``).
describe_untrusted = getattr(_store, "describe_untrusted", None) or __import__("autocompile._location", fromlist=["x"]).describe_untrusted
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files to another user")

EVIL = "import sys; sys.stdout.write('PWNED '); VALUE = 'evil'\n"


@pytest.fixture
def victim(tmp_path: Path, cache_dir: Path) -> dict[str, Path]:
    """A settled module, imported once so that its object and index entries exist."""
    write_tree(tmp_path, {"victim.py": "VALUE = 'good'\n"})
    settle()
    run_python("import victim", cache_dir, cwd=tmp_path, **NO_PYC)
    source = tmp_path / "victim.py"
    context = _keys.code_context(0)
    store = _store.Store(str(cache_dir))
    paths = {
        "object": Path(store.object_path(_keys.content_key(context, source.read_bytes()))),
        "index": Path(store.index_path(_keys.stat_key(context, str(source), source.stat()))),
    }
    assert paths["object"].is_file() and paths["index"].is_file()
    return paths


def evil_entry(like: Path) -> bytes:
    """A well-formed entry (right key, valid checksum) whose code is the attacker's."""
    key = _store.unpack(like.read_bytes()).key
    return _store.pack(_store.KIND_CODE, key, __import__("marshal").dumps(compile(EVIL, "victim.py", "exec")), {"name": "victim"})


def import_victim(tmp_path: Path, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    return run_python("import victim; print(victim.VALUE)", cache_dir, cwd=tmp_path, **NO_PYC)


@pytest.mark.parametrize("area", ["index", "object", "both"])
def test_symlink_planted_at_an_entry_path_is_not_followed(tmp_path: Path, cache_dir: Path, victim: dict[str, Path], area: str) -> None:
    attacker_file = tmp_path / "attacker-entry"
    attacker_file.write_bytes(evil_entry(victim["object"]))
    original = attacker_file.read_bytes()
    for name in ("index", "object") if area == "both" else (area,):
        victim[name].unlink()
        victim[name].symlink_to(attacker_file)
    if area == "object":  # make the import go to the object: no index entry
        victim["index"].unlink()
    result = import_victim(tmp_path, cache_dir)
    assert result.stdout.strip() == "good" and "PWNED" not in result.stdout and result.stderr == ""
    assert attacker_file.read_bytes() == original, "a write went through the planted link"
    for name in ("index", "object") if area != "object" else ("index", "object"):
        assert not victim[name].is_symlink()
        _store.unpack(victim[name].read_bytes())


@needs_root
@pytest.mark.parametrize("area", ["index", "object", "both"])
def test_entries_owned_by_another_user_inside_a_trusted_cache_are_refused(tmp_path: Path, cache_dir: Path, victim: dict[str, Path], area: str) -> None:
    data = evil_entry(victim["object"])
    for name in ("index", "object") if area == "both" else (area,):
        victim[name].unlink()
        victim[name].write_bytes(data)
        os.chown(victim[name], NOBODY, NOBODY)
    if area == "object":
        victim["index"].unlink()
    result = import_victim(tmp_path, cache_dir)
    assert result.stdout.strip() == "good" and "PWNED" not in result.stdout and result.stderr == ""
    result = import_victim(tmp_path, cache_dir)  # and the planted files have been replaced by ours
    assert result.stdout.strip() == "good"
    for name in ("index", "object"):
        if victim[name].exists():
            assert victim[name].stat().st_uid == os.geteuid()


def test_symlinks_planted_at_temporary_paths_cannot_redirect_a_write(tmp_path: Path, cache_dir: Path) -> None:
    """Temporaries have random names and are opened with O_CREAT|O_EXCL|O_NOFOLLOW: a link planted
    at any name is never written through, even if the name were guessed (forced here)."""
    assert _store._OPEN_NEW & os.O_EXCL and _store._OPEN_NEW & os.O_NOFOLLOW
    target = tmp_path / "precious"
    target.write_bytes(b"precious")
    names = [_store._temporary_name(str(tmp_path / "objects" / "ab" / ("ab" * 32))) for _ in range(50)]
    assert len(set(names)) == 50, "temporary names are not random"
    write_tree(tmp_path, {f"tmpvictim_{n}.py": f"VALUE = {n}\n" for n in range(20)})
    settle()
    for shard in [f"{n:02x}" for n in range(256)]:  # a planted link in every shard, at a fixed name
        for area in ("objects", "index"):
            (cache_dir / area / shard).mkdir(parents=True, exist_ok=True)
            (cache_dir / area / shard / ".tmp-000000000000-planted").symlink_to(target)
    os.chmod(cache_dir, 0o700)
    # Force every temporary name to a planted link: the write must fail, the import must not.
    forced = """
        import autocompile._store as s
        s._temporary_name = lambda path: path.rpartition("/")[0] + "/.tmp-000000000000-planted"
        """
    code = textwrap.dedent(forced) + "import importlib\nprint(sum(importlib.import_module(f'tmpvictim_{n}').VALUE for n in range(10)))\n"
    result = run_python(code, cache_dir, cwd=tmp_path, **NO_PYC)
    assert result.stdout.strip() == "45" and result.stderr == ""
    assert target.read_bytes() == b"precious"
    # With the real random names the writes succeed beside the planted links.
    code = "import importlib\nprint(sum(importlib.import_module(f'tmpvictim_{n}').VALUE for n in range(20)))\n"
    assert run_python(code, cache_dir, cwd=tmp_path, **NO_PYC).stdout.strip() == "190"
    assert target.read_bytes() == b"precious"
    assert len([p for p in cache_files(cache_dir) if not _store.is_temporary(p.name)]) >= 20


def test_group_writable_cache_directory_gives_stock_imports_and_one_warning(tmp_path: Path, cache_dir: Path) -> None:
    cache_dir.mkdir(mode=0o700)
    os.chmod(cache_dir, 0o770)
    write_tree(tmp_path, {"gw_mod.py": "VALUE = 1\n"})
    result = run_python("import gw_mod, json; print(gw_mod.VALUE, type(gw_mod.__loader__.get_code).__name__)", cache_dir, cwd=tmp_path, **NO_PYC)
    assert result.stdout.split() == ["1", "method"]
    assert result.stderr.count("\n") == 1 and "writable by group or others" in result.stderr
    assert os.listdir(cache_dir) == []


@needs_root
def test_parent_owned_by_another_user_gives_stock_imports(tmp_path: Path) -> None:
    parent = tmp_path / "theirs"
    (parent / "cache").mkdir(parents=True, mode=0o700)
    os.chown(parent, NOBODY, NOBODY)
    write_tree(tmp_path, {"po_mod.py": "VALUE = 1\n"})
    result = run_python("import po_mod; print(po_mod.VALUE)", parent / "cache", cwd=tmp_path, **NO_PYC)
    assert result.stdout.strip() == "1" and "owned by uid 65534" in result.stderr
    assert os.listdir(parent / "cache") == []


@needs_root
def test_cache_directory_reached_through_another_users_symlink_is_refused(tmp_path: Path) -> None:
    """A cache path that is a symlink owned by another user (in a sticky, world-writable directory
    such as /tmp) could be repointed by that user after the check: refused."""
    real = tmp_path / "real-cache"
    real.mkdir(mode=0o700)
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    link = sticky / "cache"
    link.symlink_to(real)
    os.lchown(link, NOBODY, NOBODY)
    assert describe_untrusted(str(link)) is not None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to build a root-owned tier and run as another user")
def test_read_only_shared_tier_owned_by_root_serves_other_users(tmp_path: Path) -> None:
    """An image-wide cache built by root, not writable by others, is read by every user."""
    import shutil
    import subprocess
    import tempfile

    from conftest import REPO, child_env, run_cli, settle

    try:
        usable = subprocess.run([sys.executable, "-c", "pass"], capture_output=True, preexec_fn=lambda: os.setuid(NOBODY)).returncode == 0
    except OSError:
        usable = False
    if not usable:
        pytest.skip("this interpreter cannot be run by another user here")
    shared = Path(tempfile.mkdtemp(prefix="actier-", dir="/tmp"))
    try:
        os.chmod(shared, 0o755)
        source = shared / "src"
        source.mkdir(mode=0o755)
        (source / "tiered.py").write_text("VALUE = 'from the tier'\n")
        tier = shared / "tier"
        settle()
        assert run_cli("warm", str(source), cache_dir=tier).returncode == 0
        for path in [tier, *tier.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        env = child_env(tier, AUTOCOMPILE_LOG="debug", HOME=str(shared))
        env["PYTHONPATH"] = f"{REPO}:{source}"
        result = subprocess.run(
            [sys.executable, "-c", "import autocompile; autocompile.install(); import tiered; print(tiered.VALUE)"],
            env=env, capture_output=True, text=True, cwd=shared, preexec_fn=lambda: os.setuid(NOBODY),
        )
        assert result.stdout.strip() == "from the tier", result.stderr
        assert "tiered: hit" in result.stderr
    finally:
        shutil.rmtree(shared)
