"""Stress check of the Cython tier on code no one here wrote: more-itertools and its own tests.

Downloads the more-itertools sdist (``pip download``), cythonizes the package with
``autocompile cythonize``, then runs the package's own test suite twice in child
interpreters with the hook: extensions loaded, and bytecode only
(``AUTOCOMPILE_DISABLE=1``). Both runs must give the same outcome per test.
Slow (a few minutes on two cores), so not collected by pytest::

    python tests/stress/cython_more_itertools.py [--version 11.2.1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests"))
from conftest import child_env  # noqa: E402

RUNNER = """\
import sys
import autocompile
autocompile.install()
sys.path.insert(0, {root!r})
import more_itertools, more_itertools.more, more_itertools.recipes
sys.stderr.write("loaders: " + ", ".join(f"{{m.__name__}}={{type(m.__loader__).__name__}}" for m in (more_itertools, more_itertools.more, more_itertools.recipes)) + "\\n")
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--junitxml", {xml!r}, {tests!r}]))
"""


def outcomes(xml_path: str) -> dict[str, str]:
    result = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        state = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                state = child.tag
        result[name] = state
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", default="")
    parser.add_argument("--keep", help="work in this directory and keep it")
    options = parser.parse_args()
    work = options.keep or tempfile.mkdtemp(prefix="cy-more-itertools-")
    os.makedirs(work, exist_ok=True)
    spec = f"more-itertools=={options.version}" if options.version else "more-itertools"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", "-d", work, spec], check=True)
    (sdist,) = glob.glob(os.path.join(work, "more_itertools-*.tar.gz"))
    with tarfile.open(sdist) as archive:
        archive.extractall(work)
    root = sdist[: -len(".tar.gz")]
    cache = os.path.join(work, "cache")
    time.sleep(2.1)  # let the extracted sources settle (see _loader.SETTLE_NS)
    started = time.perf_counter()
    build = subprocess.run(
        [sys.executable, "-m", "autocompile._cython", os.path.join(root, "more_itertools"), "--json"],
        env=child_env(cache), capture_output=True, text=True,
    )
    print(f"cythonize: exit {build.returncode} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    document = json.loads(build.stdout)
    print(json.dumps({k: document[k] for k in ("built", "reused", "failed", "failures", "notes")}, indent=1))
    runs = {}
    for label, extra in (("extensions", {}), ("bytecode", {"AUTOCOMPILE_DISABLE": "1"})):
        xml = os.path.join(work, f"{label}.xml")
        code = RUNNER.format(root=root, xml=xml, tests=os.path.join(root, "tests"))
        started = time.perf_counter()
        run = subprocess.run([sys.executable, "-c", code], env=child_env(cache, **extra), cwd=root, capture_output=True, text=True)
        loaders = [line for line in run.stderr.splitlines() if line.startswith("loaders:")]
        tail = run.stdout.strip().splitlines()[-1:] 
        print(f"{label}: exit {run.returncode}, {tail}, {loaders}, {time.perf_counter() - started:.1f} s")
        runs[label] = outcomes(xml)
    differ = {name: (runs["extensions"].get(name), runs["bytecode"].get(name)) for name in set(runs["extensions"]) | set(runs["bytecode"]) if runs["extensions"].get(name) != runs["bytecode"].get(name)}
    print(f"tests: {len(runs['bytecode'])}; differing outcomes: {len(differ)}")
    for name, pair in sorted(differ.items()):
        print(f"  {name}: extensions={pair[0]} bytecode={pair[1]}")
    return 1 if differ or document["built"] + document["reused"] == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
