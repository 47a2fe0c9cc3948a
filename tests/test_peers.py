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
