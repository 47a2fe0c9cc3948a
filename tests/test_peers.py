"""Peers' suites: CPython's own import tests pass and fail alike with and without the hook."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from conftest import run_python

CPYTHON_IMPORT_TESTS = ("test_importlib", "test_import", "test_pkgutil")


def regrtest_outcomes(tmp_path: Path, cache_dir: Path, hook: bool) -> tuple[int, dict[str, str]]:
    """Run CPython's regression tests in one process; return (tests run, failure text by test)."""
    report = tmp_path / f"junit-{hook}.xml"
    code = f"""
        import sys, runpy
        from autocompile._loader import is_served
        import json
        assert is_served(json.__spec__.loader) is {hook}, "hook state is not what the test asked for"
        sys.argv = ["regrtest", "--junit-xml", {str(report)!r}, *{CPYTHON_IMPORT_TESTS!r}]
        runpy.run_module("test", run_name="__main__", alter_sys=True)
        """
    result = run_python(code, cache_dir, hook=hook, cwd=tmp_path, check=False)
    if not report.exists():
        pytest.skip(f"CPython's test package is not available here: {result.stderr[-300:]}")
    tree = ElementTree.parse(report)
    cases = list(tree.iter("testcase"))
    failing = {}
    for case in cases:
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            failing[str(case.get("name"))] = f"{problem.get('message')}\n{problem.text}"
    return len(cases), failing


def test_cpython_import_tests_match_stock(tmp_path: Path, cache_dir: Path) -> None:
    """The only differences allowed are tests that expect an import to write a ``.pyc``.

    autocompile never writes ``__pycache__`` (README, "Peers' suites"); every
    other test must pass and fail exactly as it does on the stock interpreter.
    """
    stock_run, stock_failing = regrtest_outcomes(tmp_path, cache_dir, hook=False)
    ours_run, ours_failing = regrtest_outcomes(tmp_path, cache_dir, hook=True)
    assert stock_run > 1000
    assert ours_run == stock_run
    assert set(stock_failing) <= set(ours_failing)
    unexplained = {name: text for name, text in ours_failing.items() if name not in stock_failing and "pyc" not in text}
    assert unexplained == {}


# Third-party suites -------------------------------------------------------------

#: Widely used pure-Python packages with many modules whose sdists ship their tests:
#: (requirement, test directory inside the unpacked sdist, extra pytest arguments).
THIRD_PARTY = {
    "toolz": ("toolz==1.0.0", "toolz/tests", ()),
    "attrs": ("attrs==24.2.0", "tests", ("--hypothesis-seed=0", "-p", "no:randomly")),
}


@pytest.fixture(scope="module")
def peers_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> tuple[Path, Path]:
    """A venv with the built wheel, pytest, hypothesis and the packages; their sdists unpacked beside it."""
    import subprocess
    import tarfile

    from conftest import make_venv, venv_env

    root = tmp_path_factory.mktemp("peers")
    try:
        python = make_venv(root / "env", str(wheel), "pytest", "hypothesis", *(spec for spec, _, _ in THIRD_PARTY.values()))
        env = venv_env(root / "unused")
        subprocess.run(
            [str(python), "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps", "-d", str(root / "sdists"),
             *(spec for spec, _, _ in THIRD_PARTY.values())],
            check=True, env=env,
        )
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot install the peer packages from PyPI here: {exc}")
    # The "data" filter where the interpreter has it (3.12+, and back-ported to 3.10.12 and 3.11.4): it
    # refuses links and paths out of the target, and 3.14 makes it the default.
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    for archive in (root / "sdists").glob("*.tar.gz"):
        with tarfile.open(archive) as tar:
            tar.extractall(root / "sdists", **safe)
    # No stock .pyc anywhere: every module of the packages under test is compiled or served from the cache.
    for cache in (root / "env").rglob("__pycache__"):
        subprocess.run(["rm", "-rf", str(cache)], check=True)
    return python, root / "sdists"


def pytest_outcomes(python: Path, tree: Path, tests: str, args: tuple[str, ...], cache_dir: Path, hook: bool, report: Path) -> dict[str, str]:
    import subprocess

    from conftest import venv_env

    env = venv_env(cache_dir, PYTHONDONTWRITEBYTECODE="1")
    if not hook:
        env["AUTOCOMPILE_DISABLE"] = "1"
    check = subprocess.run(
        [str(python), "-c", "import sys; from autocompile import _install; print(_install.active_finder() is not None)"],
        env=env, capture_output=True, text=True, cwd=tree,
    )
    assert check.stdout.strip() == str(hook), check.stderr
    subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junit-xml", str(report), *args, tests],
        env=env, cwd=tree, capture_output=True, text=True, timeout=900,
    )
    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcomes[name] = next((tag for tag in ("failure", "error", "skipped") if case.find(tag) is not None), "passed")
    return outcomes


@pytest.mark.slow
@pytest.mark.parametrize("package", sorted(THIRD_PARTY))
def test_third_party_suites_match_stock(peers_venv: tuple[Path, Path], tmp_path: Path, package: str) -> None:
    python, sdists = peers_venv
    spec, tests, args = THIRD_PARTY[package]
    (tree,) = [p for p in sdists.iterdir() if p.is_dir() and p.name == spec.replace("==", "-")]
    cache_dir = tmp_path / "cache"
    stock = pytest_outcomes(python, tree, tests, args, cache_dir, False, tmp_path / "stock.xml")
    cold = pytest_outcomes(python, tree, tests, args, cache_dir, True, tmp_path / "cold.xml")
    assert len(stock) > 100
    assert cold == stock
    if package == "toolz":  # the warm run (every module a hit) costs a third suite run; one package is enough
        assert pytest_outcomes(python, tree, tests, args, cache_dir, True, tmp_path / "warm.xml") == stock
