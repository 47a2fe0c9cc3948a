"""``autocompile optimize --suggest``: the static scan, on made-up packages and on real ones from PyPI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autocompile import _suggest
from conftest import make_venv, run_cli, run_python, write_tree

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

# One package per rule, and one that breaks none.
SITE = {
    "clean/__init__.py": '"""Clean."""\ndef f(x):\n    """f."""\n    assert x\n    wrapper.__doc__ = f.__doc__\n    return x\n',
    "clean/tests/__init__.py": "",
    "clean/tests/helpers.py": '"""No assert statement in the shipped tests."""\n',
    "attrdoc/__init__.py": "def usage(f):\n    return f.__doc__.strip()\n",
    "namedoc.py": '"""usage: namedoc"""\nimport argparse\nPARSER = argparse.ArgumentParser(description=__doc__)\n',
    "getattrdoc.py": 'def d(o):\n    return getattr(o, "__doc__", "")\n',
    "augdoc.py": "def f():\n    'f'\nf.__doc__ += ' more'\n",
    "getdocpkg.py": "import inspect\ndef d(o):\n    return inspect.getdoc(o)\n",
    "helppkg.py": "def show(o):\n    help(o)\n",
    "doctestpkg.py": "import doctest\n",
    "clickuser.py": "import click\n",
    "catches.py": "def f(v):\n    try:\n        assert v is not None\n    except AssertionError:\n        return 0\n    return v\n",
    "walrus.py": "def f(items):\n    assert (n := len(items))\n    return n\n",
    "shipstests/__init__.py": "",
    "shipstests/tests/test_it.py": "def test_it():\n    assert 1 + 1 == 2\n",
    "broken.py": "def broken(:\n",
}


def scan(tmp_path: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    write_tree(tmp_path, SITE)
    suggested, excluded, _ = _suggest.suggest([str(tmp_path)])
    reasons: dict[str, list[str]] = {}
    for item in excluded:
        reasons.setdefault(item["package"], []).append(item["reason"])
    return {s["package"]: s["profile"] for s in suggested}, reasons


def test_each_rule_leaves_its_package_out(tmp_path: Path) -> None:
    suggested, reasons = scan(tmp_path)
    both = "strip-asserts+strip-docstrings"
    assert suggested == {
        "clean": both,
        "broken": both,  # does not parse: skipped, the hook compiles it as stock does
        **{name: "strip-asserts" for name in ("attrdoc", "namedoc", "getattrdoc", "augdoc", "getdocpkg", "helppkg", "doctestpkg", "clickuser")},
        **{name: "strip-docstrings" for name in ("catches", "walrus", "shipstests")},
    }
    expected = {
        "attrdoc": "reads __doc__ (attrdoc/__init__.py:2)",
        "namedoc": "reads __doc__ (namedoc.py:3)",
        "getattrdoc": 'getattr(..., "__doc__") (getattrdoc.py:2)',
        "augdoc": "modifies __doc__ in place",
        "getdocpkg": "calls getdoc() (getdocpkg.py:3)",
        "helppkg": "calls help() (helppkg.py:2)",
        "doctestpkg": "imports doctest (doctestpkg.py:1)",
        "clickuser": "imports click, which builds behaviour from docstrings",
        "catches": "catches AssertionError (asserts as control flow) (catches.py:2)",
        "walrus": "assert with a side effect (NamedExpr) (walrus.py:2)",
        "shipstests": "ships tests whose checks are asserts (shipstests/tests/test_it.py:2)",
    }
    for package, reason in expected.items():
        assert len(reasons[package]) == 1 and reason in reasons[package][0], (package, reasons[package])
    assert "clean" not in reasons and "broken" not in reasons


def test_test_modules_are_recognised() -> None:
    assert _suggest.is_test_module("pkg/tests/util.py")
    assert _suggest.is_test_module("pkg/test_x.py") and _suggest.is_test_module("pkg/x_test.py")
    assert _suggest.is_test_module("pkg/conftest.py")
    assert not _suggest.is_test_module("pkg/testing_utils.py") and not _suggest.is_test_module("pkg/contest.py")


# Real packages from PyPI ---------------------------------------------------------

REAL = ("click", "docopt", "ply", "idna", "packaging", "six")


@pytest.fixture(scope="module")
def real_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        # The checkout runs there through PYTHONPATH, so its own dependencies are installed too.
        return make_venv(tmp_path_factory.mktemp("suggest") / "env", *REAL, "platformdirs", "filelock", "tomli; python_version < '3.11'")
    except subprocess.CalledProcessError as exc:  # no package index reachable
        pytest.skip(f"cannot install {', '.join(REAL)}: {exc}")


def optimize(python: Path, cache_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("optimize", *args, cache_dir=cache_dir, python=str(python), **env)


def test_real_packages(real_venv: Path, cache_dir: Path) -> None:
    result = optimize(real_venv, cache_dir, "--suggest", "--json", *REAL)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    suggested = {s["package"]: s["profile"] for s in document["suggested"]}
    reasons = {(e["package"], e["reason"].partition(":")[0]) for e in document["excluded"]}
    # Known docstring readers are left out: click builds help from callbacks' docstrings,
    # docopt parses the caller's __doc__, PLY's grammar rules are docstrings.
    for reader in ("click", "docopt", "ply"):
        assert "strip-docstrings" not in suggested.get(reader, ""), reader
        assert (reader, "strip-docstrings") in reasons
    # Known safe ones are suggested.
    assert suggested["idna"] == "strip-asserts+strip-docstrings"
    assert suggested["six"] == "strip-asserts+strip-docstrings"
    # packaging catches AssertionError around an assert in _manylinux: docstrings only.
    assert suggested["packaging"] == "strip-docstrings"
    assert ("packaging", "strip-asserts") in reasons


def test_apply_writes_the_config_and_the_profile_applies(real_venv: Path, cache_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir()
    config.write_text('# mine\nmax_size = "2G"\nexclude = ["foo.*"]\n\n[profiles]\n"mine.*" = "strip-asserts"\nidna = "none"\n')
    env = {"AUTOCOMPILE_CONFIG": str(config)}
    result = optimize(real_venv, cache_dir, "--suggest", "--apply", "--json", "idna", "six", "click", **env)
    assert result.returncode == 0, result.stderr
    applied = json.loads(result.stdout)["applied"]
    assert applied["changed"] == ["click", "idna", "six"]
    document = tomllib.loads(config.read_text())
    assert document["max_size"] == "2G" and document["exclude"] == ["foo.*"]  # other settings kept
    assert document["profiles"] == {
        "mine.*": "strip-asserts",  # kept
        "idna": "strip-asserts+strip-docstrings",  # replaced
        "six": "strip-asserts+strip-docstrings",
        "click": "strip-asserts",
    }
    assert config.read_text().startswith("# mine\n")
    explain = run_cli("explain", "idna.core", "--json", cache_dir=cache_dir, python=str(real_venv), **env)
    assert explain.returncode == 0, explain.stderr
    shown = json.loads(explain.stdout)
    assert shown["profile"] == "strip-asserts+strip-docstrings"
    assert shown["profile_rule"] == f"idna=strip-asserts+strip-docstrings (config file {config})"
    probe = "import idna, click; print(idna.core.__doc__, idna.encode('ドメイン.テスト').decode(), bool(click.Command.__doc__))"
    out = run_python(probe, cache_dir, python=str(real_venv), **env).stdout.split()
    assert out == ["None", "xn--eckwd4c7c.xn--zckzah", "True"]
    # Idempotent: a second --apply changes nothing.
    again = optimize(real_venv, cache_dir, "--suggest", "--apply", "--json", "idna", "six", "click", **env)
    assert json.loads(again.stdout)["applied"]["changed"] == []


def test_apply_creates_the_file(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path / "site", {"tidy/__init__.py": '"""tidy"""\n'})
    config = tmp_path / "new" / "dir" / "config.toml"
    before, after = _suggest.apply(str(config), [{"package": "tidy", "profile": "strip-docstrings"}])
    assert (before, after) == ({}, {"tidy": "strip-docstrings"})
    assert tomllib.loads(config.read_text()) == {"profiles": {"tidy": "strip-docstrings"}}
    assert config.stat().st_mode & 0o777 == 0o600
    # a top-level string form is turned into the table
    config.write_text('log = "off"\nprofiles = "a.*=strip-asserts"\n')
    _suggest.apply(str(config), [{"package": "tidy", "profile": "strip-docstrings"}])
    assert tomllib.loads(config.read_text()) == {"log": "off", "profiles": {"a.*": "strip-asserts", "tidy": "strip-docstrings"}}


def test_bad_input(tmp_path: Path, cache_dir: Path) -> None:
    unknown = run_cli("optimize", "--suggest", "no_such_package_xyz", cache_dir=cache_dir)
    assert unknown.returncode == 2
    assert unknown.stderr == "autocompile: error: no installed package named 'no_such_package_xyz'\n"
    bare = run_cli("optimize", cache_dir=cache_dir)
    assert bare.returncode == 2 and len(bare.stderr.splitlines()) == 1
    bad_name = run_cli("optimize", "--suggest", "../etc", cache_dir=cache_dir)
    assert bad_name.returncode == 2 and len(bad_name.stderr.splitlines()) == 1
    config = tmp_path / "config.toml"
    config.write_text("this is = = not toml\n")
    broken = run_cli("optimize", "--suggest", "--apply", "pip", cache_dir=cache_dir, AUTOCOMPILE_CONFIG=str(config))
    assert broken.returncode == 1 and len(broken.stderr.splitlines()) == 1 and "not valid TOML" in broken.stderr
    assert config.read_text() == "this is = = not toml\n"


def test_autocompile_itself_is_never_profiled(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path, {"lean_self.py": '"""doc"""\n'})
    rules = "autocompile=strip-asserts+strip-docstrings;*=strip-docstrings"
    out = run_python("import lean_self; print(lean_self.__doc__)", cache_dir, cwd=tmp_path, AUTOCOMPILE_PROFILES=rules)
    assert out.stdout == "None\n" and out.stderr == ""
    assert [e["reason"] for e in _suggest.suggest([str(Path(_suggest.__file__).parent.parent)], ["autocompile"])[1]] == [
        "strip-docstrings: autocompile itself: its own modules are never profiled",
        "strip-asserts: autocompile itself: its own modules are never profiled",
    ]
