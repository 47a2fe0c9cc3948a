"""End to end: the real wheel, installed by pip into real venvs, used by real processes."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import make_venv, settle, venv_env, write_tree


def run(python: Path, *args: str, cache_dir: Path, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(python), *args], env=venv_env(cache_dir, **env), cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def debug_outcomes(stderr: str, package: str = "idna") -> list[str]:
    """Outcomes of ``package``'s modules from ``AUTOCOMPILE_LOG=debug`` lines (the standard library's
    modules are served from their own stock ``.pyc``)."""
    outcomes = []
    for line in stderr.splitlines():
        name, _, rest = line.removeprefix("autocompile: ").partition(": ")
        if line.startswith("autocompile: ") and name.partition(".")[0] == package:
            outcomes.append(rest.split(" (")[0])
    return outcomes


def test_wheel_ships_startup_files_in_record(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        record = archive.read(next(n for n in names if n.endswith(".dist-info/RECORD"))).decode()
        pth = archive.read("autocompile.pth").decode()
        start = archive.read("autocompile.start").decode()
    assert "autocompile.pth" in names and "autocompile.start" in names
    assert "\nautocompile.pth," in "\n" + record and "\nautocompile.start," in "\n" + record
    assert pth.count("\n") == 1 and pth.startswith("import ")
    assert start.strip() == "autocompile._bootstrap:boot"


@pytest.fixture(scope="module")
def pkg_venvs(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> tuple[Path, Path]:
    """Two venvs with the hook and the same third-party package (idna) installed without bytecode."""
    root = tmp_path_factory.mktemp("venvs")
    first = make_venv(root / "first", str(wheel), "--no-compile", "idna")
    second = make_venv(root / "second", str(wheel), "--no-compile", "idna")
    settle()
    return first, second


def test_hook_is_active_and_caches_without_pycache(pkg_venvs: tuple[Path, Path], tmp_path: Path) -> None:
    python, second_python = pkg_venvs
    cache = tmp_path / "cache"
    doctor = json.loads(run(python, "-m", "autocompile", "doctor", "--json", cache_dir=cache).stdout)
    assert doctor["active"] is True and doctor["problems"] == [] and doctor["cache_dir"] == str(cache)

    first = run(python, "-c", "import idna; print(idna.encode('ü.example'))", cache_dir=cache, AUTOCOMPILE_LOG="debug", PYTHONDONTWRITEBYTECODE="1")
    assert "compiled" in debug_outcomes(first.stderr)
    again = run(python, "-c", "import idna; print(idna.encode('ü.example'))", cache_dir=cache, AUTOCOMPILE_LOG="debug", PYTHONDONTWRITEBYTECODE="1")
    assert again.stdout == first.stdout
    assert set(debug_outcomes(again.stderr)) == {"hit"}

    other = run(second_python, "-c", "import idna; print(idna.encode('ü.example'))", cache_dir=cache, AUTOCOMPILE_LOG="debug")
    assert other.stdout == first.stdout
    assert "compiled" not in debug_outcomes(other.stderr), "a second venv with the same files must not compile"
    assert not list(site_packages(python).joinpath("idna").glob("__pycache__"))
    stats = json.loads(run(python, "-m", "autocompile", "stats", "--json", cache_dir=cache).stdout)
    assert stats["hits"] > 0 and stats["misses"] > 0 and stats["entries"] > 0 and stats["size_bytes"] > 0


def test_warm_start_loads_nothing_heavy(pkg_venvs: tuple[Path, Path], tmp_path: Path) -> None:
    """A process whose imports are all hits loads the hook's own modules and, besides stock's,
    only ``atexit`` (stats) and ``zlib`` (entry checksums): no hashing module, no compiler."""
    python, _ = pkg_venvs
    cache = tmp_path / "cache"
    code = "import sys, idna; print(' '.join(sorted(sys.modules)))"
    run(python, "-c", code, cache_dir=cache, PYTHONDONTWRITEBYTECODE="1")
    settle()
    run(python, "-c", code, cache_dir=cache, PYTHONDONTWRITEBYTECODE="1")
    warm = run(python, "-c", code, cache_dir=cache, AUTOCOMPILE_LOG="debug", PYTHONDONTWRITEBYTECODE="1")
    assert set(debug_outcomes(warm.stderr)) == {"hit"}
    stock = run(python, "-c", code, cache_dir=cache, AUTOCOMPILE_DISABLE="1", PYTHONDONTWRITEBYTECODE="1")
    extra = set(warm.stdout.split()) - set(stock.stdout.split())
    assert {name for name in extra if name.partition(".")[0] != "autocompile"} <= {"atexit", "zlib"}, extra


def test_metadata_pip_and_tools_still_work(pkg_venvs: tuple[Path, Path], tmp_path: Path) -> None:
    python, _ = pkg_venvs
    listing = run(python, "-m", "pip", "list", "--format", "json", cache_dir=tmp_path / "cache").stdout
    assert {"autocompile", "idna"} <= {d["name"] for d in json.loads(listing)}
    version = run(python, "-c", "import importlib.metadata as m; print(m.version('idna'))", cache_dir=tmp_path / "cache")
    assert version.stdout.strip()
    importtime = run(python, "-X", "importtime", "-c", "import idna", cache_dir=tmp_path / "cache")
    assert "idna" in importtime.stderr


def test_spawn_children_and_python_dash_m(pkg_venvs: tuple[Path, Path], tmp_path: Path) -> None:
    python, _ = pkg_venvs
    write_tree(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/__main__.py": """\
                import multiprocessing, sys
                from app.work import square
                if __name__ == "__main__":
                    with multiprocessing.get_context("spawn").Pool(2) as pool:
                        from autocompile._loader import is_served
                        print(sum(pool.map(square, range(10))), is_served(sys.modules["app.work"].__loader__))
                """,
            "app/work.py": "def square(n):\n    return n * n\n",
        },
    )
    result = run(python, "-m", "app", cache_dir=tmp_path / "cache", cwd=tmp_path)
    assert result.stdout.split() == ["285", "True"]


@pytest.mark.parametrize("flags", [["-S"], ["-I", "-S"]])
def test_without_site_python_is_stock(pkg_venvs: tuple[Path, Path], tmp_path: Path, flags: list[str]) -> None:
    python, _ = pkg_venvs
    result = run(python, *flags, "-c", "import sys; print(sys.modules.get('autocompile'))", cache_dir=tmp_path / "cache")
    assert result.stdout.strip() == "None"


def test_dont_write_bytecode_can_be_honoured(pkg_venvs: tuple[Path, Path], tmp_path: Path) -> None:
    python, _ = pkg_venvs
    cache = tmp_path / "cache"
    run(python, "-B", "-c", "import idna", cache_dir=cache, AUTOCOMPILE_HONOUR_DONT_WRITE_BYTECODE="1")
    assert not list(cache.glob("objects/*/*"))
    run(python, "-B", "-c", "import idna", cache_dir=cache)
    assert list(cache.glob("objects/*/*"))


def test_pytest_rewriting_and_editable_installs(tmp_path: Path, wheel: Path) -> None:
    python = make_venv(tmp_path / "env", str(wheel), "pytest", "setuptools")
    write_tree(
        tmp_path / "proj",
        {
            "pyproject.toml": """\
                [build-system]
                requires = ["setuptools>=64"]
                build-backend = "setuptools.build_meta"
                [project]
                name = "editable-demo"
                version = "1.0"
                """,
            "src/editable_demo/__init__.py": "ANSWER = 42\n",
            "tests/test_demo.py": """\
                import editable_demo
                def test_rewritten():
                    value = editable_demo.ANSWER
                    assert value == 41
                """,
        },
    )
    env = venv_env(tmp_path / "cache")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-e", str(tmp_path / "proj")], check=True, env=env)
    imported = run(python, "-c", "import editable_demo; print(editable_demo.ANSWER)", cache_dir=tmp_path / "cache")
    assert imported.stdout.strip() == "42"
    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "proj" / "tests")],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "assert 42 == 41" in result.stdout, result.stdout  # the assertion was rewritten


def test_uninstall_leaves_the_interpreter_stock(tmp_path: Path, wheel: Path) -> None:
    python = make_venv(tmp_path / "env", str(wheel))
    env = venv_env(tmp_path / "cache")
    subprocess.run([str(python), "-m", "pip", "uninstall", "--yes", "--quiet", "autocompile"], check=True, env=env)
    purelib = site_packages(python)
    assert not (purelib / "autocompile.pth").exists() and not (purelib / "autocompile.start").exists()
    assert not (purelib / "autocompile").exists()
    result = run(
        python, "-c", "import sys, json; from importlib.machinery import PathFinder; print(any(f is PathFinder for f in sys.meta_path), 'autocompile' in sys.modules)",
        cache_dir=tmp_path / "cache",
    )
    assert result.stdout.split() == ["True", "False"]
