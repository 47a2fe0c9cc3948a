"""Optimization profiles: per-package transformations, kept apart in the cache by key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autocompile import _profiles
from conftest import run_python, write_tree

PACKAGES = {
    "lean/__init__.py": '"""lean package"""\n',
    "lean/core.py": '"""core doc"""\ndef f():\n    "f doc"\n    assert False, "asserts run"\n    return 1\n',
    "lean/sub/__init__.py": "",
    "lean/sub/deep.py": '"""deep doc"""\nclass K:\n    """K doc"""\n',
    "readsdocs.py": '"""usage: readsdocs [--help]"""\nUSAGE = __doc__\n',
}
PROBE = """
import json, lean.core, lean.sub.deep, readsdocs
try:
    value = lean.core.f()
except AssertionError:
    value = "assert"
print(json.dumps([lean.core.__doc__, lean.core.f.__doc__, value, lean.sub.deep.K.__doc__, readsdocs.USAGE]))
"""


def probe(tmp_path: Path, cache_dir: Path, profiles: str | None, *args: str) -> list:
    env = {} if profiles is None else {"AUTOCOMPILE_PROFILES": profiles}
    return json.loads(run_python(PROBE, cache_dir, cwd=tmp_path, args=args, **env).stdout)


def test_profiles_apply_per_package_and_never_leak(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path, PACKAGES)
    stock = probe(tmp_path, cache_dir, None)
    assert stock == ["core doc", "f doc", "assert", "K doc", "usage: readsdocs [--help]"]
    rules = "lean=strip-docstrings;lean.core=strip-docstrings+strip-asserts"
    for _ in range(2):  # compiled, then from the cache
        assert probe(tmp_path, cache_dir, rules) == [None, None, 1, None, "usage: readsdocs [--help]"]
    assert probe(tmp_path, cache_dir, None) == stock, "code compiled under a profile must not be served without it"
    assert probe(tmp_path, cache_dir, "lean.sub.*=strip-docstrings") == ["core doc", "f doc", "assert", None, stock[4]]


def test_interpreter_optimize_level_still_applies_on_top(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path, PACKAGES)
    assert probe(tmp_path, cache_dir, "lean=strip-asserts", "-OO")[:3] == [None, None, 1]


def test_syntax_errors_under_a_profile_are_stock(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path, {"broken_prof.py": "x = 1\ndef broken(:\n    pass\n"})
    stock = run_python("import broken_prof", None, hook=False, cwd=tmp_path, check=False)
    ours = run_python("import broken_prof", cache_dir, cwd=tmp_path, check=False, AUTOCOMPILE_PROFILES="broken_prof=strip-docstrings")
    assert (ours.returncode, ours.stderr) == (stock.returncode, stock.stderr)


def test_bad_rules_are_skipped_and_reported(tmp_path: Path, cache_dir: Path) -> None:
    problems: list[str] = []
    rules = _profiles.parse("a=strip-docstrings;b=turbo;=strip-asserts;c", "environment", problems)
    assert [(r.pattern, r.profile) for r in rules] == [("a", "strip-docstrings")]
    assert len(problems) == 3 and "unknown profile 'turbo'" in problems[0]
    write_tree(tmp_path, PACKAGES)
    assert probe(tmp_path, cache_dir, "lean=turbo;lean.core=strip-asserts")[:3] == ["core doc", "f doc", 1]


@pytest.mark.parametrize(
    ("name", "path", "expected"),
    [
        ("pkg.mod", "/x/pkg/mod.py", "exact"),
        ("pkg.other", "/x/pkg/other.py", "glob"),
        ("pkg", "/x/pkg/__init__.py", "top"),
        ("elsewhere.mod", "/x/vendored/mod.py", "path"),
        ("unmatched", "/x/unmatched.py", None),
    ],
)
def test_most_specific_rule_wins(name: str, path: str, expected: str | None) -> None:
    problems: list[str] = []
    text = "pkg=strip-asserts;pkg.*=strip-docstrings;pkg.mod=strip-asserts+strip-docstrings;*/vendored/*=strip-asserts"
    rules = _profiles.Rules(_profiles.parse(text, "test", problems))
    rule = rules.match(name, path)
    kinds = {"pkg.mod": "exact", "pkg.*": "glob", "pkg": "top", "*/vendored/*": "path"}
    assert (kinds[rule.pattern] if rule else None) == expected


def test_explain_names_the_profile_and_its_rule(tmp_path: Path, cache_dir: Path) -> None:
    from conftest import cli_json

    write_tree(tmp_path, PACKAGES)
    document = cli_json(
        "explain", "lean.core", cache_dir=cache_dir, PYTHONPATH=f"{tmp_path}:{Path(__file__).resolve().parent.parent}",
        AUTOCOMPILE_PROFILES="lean=strip-docstrings;lean.core=strip-asserts",
    )
    assert document["profile"] == "strip-asserts"
    assert document["profile_rule"] == "lean.core=strip-asserts (environment AUTOCOMPILE_PROFILES)"


def test_doctor_reports_bad_rules(tmp_path: Path, cache_dir: Path) -> None:
    from conftest import cli_json

    doctor = cli_json("doctor", cache_dir=cache_dir, AUTOCOMPILE_PROFILES="lean=turbo")
    assert any("unknown profile 'turbo'" in problem for problem in doctor["problems"])


def test_doctor_warns_about_rules_that_match_nothing(cache_dir: Path) -> None:
    from conftest import cli_json

    doctor = cli_json("doctor", cache_dir=cache_dir, AUTOCOMPILE_PROFILES="jsno=strip-docstrings;json=strip-asserts")
    assert [w for w in doctor["warnings"] if "matches no installed module" in w] == [
        "environment AUTOCOMPILE_PROFILES: profile rule 'jsno' matches no installed module"
    ]
