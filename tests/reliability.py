"""Shared pieces of the reliability tests (``tests/test_*.py``) and stress scripts (``tests/stress/``).

Nothing here is a test: a workload that imports a large set of real modules and
prints a digest of the code that ran, helpers to start many interpreters at
once, to check every entry of a cache, and to mutate entries.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from conftest import HOOK_PRELUDE, REPO, child_env  # noqa: E402

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from autocompile import _store  # noqa: E402

def _other_pythons() -> list[str]:
    """CPython 3.10+ interpreters found on PATH (``python3.X``) or under pyenv's root."""
    import shutil

    found = []
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    for minor in range(10, 15):
        candidates = sorted(pyenv_root.glob(f"versions/3.{minor}.*/bin/python3.{minor}"))
        path = str(candidates[-1]) if candidates else shutil.which(f"python3.{minor}")
        if path:
            found.append(path)
    return found


#: Interpreters the multi-version tests share one cache between (those present here).
OTHER_PYTHONS = _other_pythons()

#: Child environment with no usable stock ``.pyc`` (as in a container): every module is compiled or
#: served from the cache, and nothing is written to ``__pycache__``.
NO_PYC = {"PYTHONPYCACHEPREFIX": "/nonexistent/autocompile-tests-pycache", "PYTHONDONTWRITEBYTECODE": "1"}

#: Pure-Python standard library modules present in CPython 3.10 to 3.13: the fast workload.
STDLIB_MODULES = """
abc argparse ast asyncio base64 bdb bisect bz2 calendar cmd code codecs codeop collections colorsys
concurrent configparser contextlib contextvars copy copyreg csv ctypes dataclasses datetime decimal
difflib dis email encodings enum filecmp fileinput fnmatch fractions ftplib functools genericpath
getpass gettext glob graphlib gzip hashlib heapq hmac html http imaplib importlib inspect io ipaddress
json keyword linecache locale logging lzma mailbox mimetypes modulefinder multiprocessing netrc ntpath
nturl2path numbers opcode operator optparse os pathlib pickle pickletools pkgutil platform plistlib
poplib posixpath pprint pstats pyclbr queue quopri random re reprlib rlcompleter sched secrets
selectors shelve shlex shutil signal smtplib socket socketserver ssl stat statistics string
stringprep struct subprocess symtable sysconfig tarfile tempfile textwrap threading token tokenize
traceback tracemalloc types typing unittest urllib uuid warnings wave weakref wsgiref xml xmlrpc
zipfile zipimport zoneinfo email.mime.text email.mime.multipart email.parser email.policy
http.client http.server http.cookiejar urllib.request urllib.parse xml.etree.ElementTree
xml.dom.minidom xml.sax.saxutils logging.handlers logging.config concurrent.futures unittest.mock
importlib.metadata importlib.resources multiprocessing.pool ctypes.util wsgiref.simple_server
xmlrpc.client xmlrpc.server encodings.idna json.tool asyncio.subprocess
""".split()

#: Child code: ``LOAD`` (import modules, filling ``failed``), then print one JSON line: the modules
#: loaded from source, a digest of every function's bytecode in them, and a few behavioural checks.
#: Two runs agree only if the same code ran. ``LOAD`` is substituted by :func:`workload_code`.
_WORKLOAD = r"""
import hashlib, importlib, json, sys, types
failed = []
LOAD
modules = sorted(
    name for name, module in list(sys.modules.items())
    if str(getattr(module, "__file__", "") or "").endswith(".py") and not name.startswith("autocompile")
)
digest = hashlib.blake2b(digest_size=16)
for name in modules:
    digest.update(name.encode() + b"\0")
    namespace = vars(sys.modules[name])
    for attribute in sorted(namespace):
        value = namespace[attribute]
        code = value.__code__ if type(value) is types.FunctionType else None
        if code is not None and value.__module__ == name:
            digest.update(attribute.encode() + code.co_code + repr(code.co_names).encode())
import fractions, json as j, textwrap, ipaddress, datetime, decimal, email.parser, urllib.parse
checks = [
    str(fractions.Fraction(3, 6)), j.dumps({"a": [1, 2]}, sort_keys=True), textwrap.dedent("  x\n  y"),
    str(ipaddress.ip_network("10.0.0.0/30").broadcast_address), datetime.date(2024, 2, 29).isoformat(),
    str(decimal.Decimal("1.1") + decimal.Decimal("2.2")), email.parser.Parser().parsestr("Subject: hi\n\nbody")["subject"],
    urllib.parse.urlsplit("http://h/p?q=1").query,
]
served = 0
try:
    from autocompile._loader import is_served
    served = sum(1 for name in modules if is_served(getattr(sys.modules[name], "__loader__", None)))
except ImportError:
    pass
print(json.dumps({"modules": len(modules), "digest": digest.hexdigest(), "checks": checks, "failed": failed, "served": served}))
"""


_IMPORT_NAMES = """
for name in NAMES:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}")
"""

#: The benchmark harness's workload (sympy, Django, docutils, Sphinx, ...): needs a venv with
#: ``benchmarks/requirements.txt`` installed.
_BENCHMARK_WORKLOAD = f"""
sys.path.insert(0, {str(REPO / "benchmarks")!r})
import workload
workload.full_workload()
"""


def workload_code(names: list[str] | None = None, *, benchmark: bool = False) -> str:
    """The child code importing ``names`` (default: ``STDLIB_MODULES``) or the benchmark's workload."""
    load = _BENCHMARK_WORKLOAD if benchmark else _IMPORT_NAMES.replace("NAMES", repr(list(names or STDLIB_MODULES)))
    return _WORKLOAD.replace("LOAD", load)


def spawn(code: str, cache_dir: Path | str | None, *, python: str = sys.executable, hook: bool = True, cwd: Path | str | None = None, **env: str) -> subprocess.Popen[str]:
    """Start a child interpreter running ``code`` after the hook's prelude (as ``run_python``), without waiting."""
    environment = child_env(cache_dir, **env)
    if not hook:
        environment["AUTOCOMPILE_DISABLE"] = "1"
    return subprocess.Popen(
        [python, "-c", HOOK_PRELUDE + code],
        env=environment, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def start_together(commands: list[tuple[str, dict]], cache_dir: Path | str) -> list[tuple[int, str, str]]:
    """Start every child at once (behind a barrier file), wait for all; ``(returncode, stdout, stderr)`` each.

    Each ``(code, options)`` is passed to :func:`spawn`. The children wait for a
    file to appear before importing, so they all hit the empty cache together.
    """
    barrier = Path(str(cache_dir) + ".go")
    if barrier.exists():
        barrier.unlink()
    wait = f"import os, time\nwhile not os.path.exists({str(barrier)!r}):\n    time.sleep(0.002)\n"
    children = [spawn(wait + code, cache_dir, **options) for code, options in commands]
    time.sleep(0.3)
    barrier.touch()
    results = []
    for child in children:
        out, err = child.communicate(timeout=600)
        results.append((child.returncode, out, err))
    barrier.unlink()
    return results


def cache_files(cache_dir: Path | str) -> list[Path]:
    """Every file under ``objects/`` and ``index/`` (temporaries included)."""
    root = Path(cache_dir)
    return [p for area in ("objects", "index") for p in (root / area).glob("*/*")]


def temporaries(cache_dir: Path | str) -> list[Path]:
    return [p for p in cache_files(cache_dir) if _store.is_temporary(p.name)]


def invalid_entries(cache_dir: Path | str) -> list[str]:
    """Every entry that is not a complete, self-consistent object (temporaries are not entries)."""
    problems = []
    for path in cache_files(cache_dir):
        if _store.is_temporary(path.name):
            continue
        try:
            if path.is_symlink() or not path.is_file():
                raise _store.CorruptEntry("not a regular file")
            is_object = path.parent.parent.name == "objects"
            _store.unpack(path.read_bytes(), path.name if is_object else None)
        except (_store.CorruptEntry, OSError) as exc:
            problems.append(f"{path}: {exc}")
    return problems


def verify_cli(cache_dir: Path | str, python: str = sys.executable) -> dict | None:
    """``python -m autocompile verify --all --json`` on the cache, or ``None`` if the command does not exist."""
    result = subprocess.run(
        [python, "-m", "autocompile", "verify", "--all", "--json"],
        env=child_env(cache_dir), capture_output=True, text=True, timeout=600,
    )
    if result.returncode not in (0, 1) or not result.stdout.strip().startswith("{"):
        if "invalid choice" in result.stderr:
            return None
        raise AssertionError(f"verify failed ({result.returncode}): {result.stdout}{result.stderr}")
    return json.loads(result.stdout)


def kill_at_random(child: subprocess.Popen, rng: random.Random, within: float) -> bool:
    """SIGKILL ``child`` after a random delay up to ``within`` seconds; return whether it was still running."""
    time.sleep(rng.uniform(0, within))
    if child.poll() is not None:
        return False
    child.send_signal(signal.SIGKILL)
    child.wait()
    return True


# Corrupting entries ----------------------------------------------------------

MUTATIONS = (
    "truncate", "bit_flip", "zero_length", "wrong_magic", "wrong_version", "foreign_header",
    "garbage", "garbage_payload", "directory", "symlink", "extend",
)


def mutate(path: Path, kind: str, rng: random.Random, foreign: bytes, scratch: Path) -> None:
    """Damage the entry at ``path`` in the way ``kind`` names (``foreign``: another interpreter's entry)."""
    data = path.read_bytes()
    path.unlink()
    if kind == "truncate":
        path.write_bytes(data[: rng.randrange(1, len(data))])
    elif kind == "bit_flip":
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        if damaged == bytearray(data):
            damaged[0] ^= 1
        path.write_bytes(bytes(damaged))
    elif kind == "zero_length":
        path.write_bytes(b"")
    elif kind == "wrong_magic":
        path.write_bytes(b"\x89XYZ" + data[4:])
    elif kind == "wrong_version":
        path.write_bytes(data[:4] + (int.from_bytes(data[4:6], "little") + rng.randint(1, 100)).to_bytes(2, "little") + data[6:])
    elif kind == "foreign_header":
        # A valid header (and checksum) of another interpreter's entry with this entry's body: a mismatch.
        path.write_bytes(foreign[: _store.HEADER_SIZE] + data[_store.HEADER_SIZE :])
    elif kind == "garbage":
        path.write_bytes(rng.randbytes(rng.randint(1, 2 * len(data))))
    elif kind == "garbage_payload":
        path.write_bytes(data[: _store.HEADER_SIZE] + rng.randbytes(len(data) - _store.HEADER_SIZE))
    elif kind == "directory":
        (path / "inside").mkdir(parents=True)
    elif kind == "symlink":
        target = scratch / f"planted-{rng.getrandbits(64):x}"
        target.write_bytes(data)
        path.symlink_to(target)
    elif kind == "extend":
        path.write_bytes(data + rng.randbytes(rng.randint(1, 64)))
    else:
        raise ValueError(kind)


def module_entries(cache_dir: Path | str, marker: bytes) -> list[Path]:
    """The object and index entries whose metadata mention ``marker`` (a module's path)."""
    return [
        p for p in cache_files(cache_dir)
        if not _store.is_temporary(p.name) and p.is_file() and not p.is_symlink() and marker in p.read_bytes()[:4096]
    ]


def summary(title: str, figures: dict[str, object], ok: bool) -> str:
    lines = [f"{title}: {'PASS' if ok else 'FAIL'}"]
    width = max(len(k) for k in figures)
    lines += [f"  {k.ljust(width)}  {v}" for k, v in figures.items()]
    return "\n".join(lines)


# Concurrency -----------------------------------------------------------------

#: Until the loader calls ``_evict.after_write`` itself (as tests/test_evict.py does), children make it
#: do so after each object published. Once the loader does, this does nothing.
def stock_results(pythons: list[str], code: str, **env: str) -> dict[str, dict]:
    """What each interpreter prints for ``code`` without the hook: the reference."""
    results = {}
    for python in pythons:
        child = spawn(code, None, python=python, hook=False, **env)
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err
        results[python] = json.loads(out)
    return results


def concurrent_round(cache_dir: Path, pythons: list[str], expected: dict[str, dict], code: str, **env: str) -> list[str]:
    """One round: a process per entry of ``pythons``, all at once on ``cache_dir``; return what went wrong."""
    results = start_together([(code, {"python": python, **env}) for python in pythons], cache_dir)
    problems = []
    for python, (returncode, out, err) in zip(pythons, results):
        if returncode != 0:
            problems.append(f"{python}: exit {returncode}: {err[-500:]}")
            continue
        got = json.loads(out.strip().splitlines()[-1])
        want = expected[python]
        if (got["digest"], got["checks"], got["modules"], got["failed"]) != (want["digest"], want["checks"], want["modules"], want["failed"]):
            problems.append(f"{python}: wrong modules: {got} != {want}")
        elif got["served"] < got["modules"] // 2:
            problems.append(f"{python}: only {got['served']} of {got['modules']} modules served by the hook")
        if err.strip():
            problems.append(f"{python}: stderr: {err[-500:]}")
    return problems


def relink_leaves_temporary(scratch: Path) -> bool:
    """Whether ``Store.link_index`` leaves its temporary behind when the index entry already links the object.

    ``rename(2)`` does nothing, successfully, when both names are links to one inode, so
    ``os.replace(temporary, path)`` keeps the temporary. A known bug (see the report in
    ``tests/test_concurrency.py``); checks skip those leftovers only while it is present.
    """
    store = _store.Store(str(scratch))
    key = "ab" * 32
    path = store.write_object(key, _store.pack(_store.KIND_CODE, key, b"x", {}))
    store.link_index("cd" * 32, path)
    store.link_index("cd" * 32, path)
    return bool(temporaries(scratch))


def unexpected_temporaries(cache_dir: Path | str, tolerate_relink_bug: bool) -> list[Path]:
    """Temporaries left by writers that finished; with ``tolerate_relink_bug``, index temporaries that are
    valid entries (the relink bug's harmless leftovers: links to an object, evicted since or not) are not counted."""
    found = []
    for path in temporaries(cache_dir):
        if tolerate_relink_bug and path.parent.parent.name == "index":
            try:
                _store.unpack(path.read_bytes())
                continue
            except (OSError, _store.CorruptEntry):
                pass
        found.append(path)
    return found


# Crashes ---------------------------------------------------------------------

def crash_campaign(cache_dir: Path, kills: int, rng: random.Random, expected: dict, parallel: int = 2, within: float = 1.5) -> dict:
    """Kill writers with SIGKILL at random moments while they fill ``cache_dir``; check after every kill.

    Each round drops a random share of the entries first, so that the cache is
    never simply full and there is always writing to interrupt. Returns figures,
    and the problems found (``problems`` empty means nothing was torn or lost).
    """
    figures = {"processes started": 0, "killed": 0, "finished before the kill": 0, "entries checked": 0, "problems": []}
    code = workload_code()
    while figures["killed"] < kills:
        entries = [p for p in cache_files(cache_dir) if not _store.is_temporary(p.name)]
        for path in rng.sample(entries, int(len(entries) * rng.uniform(0.5, 1.0))):
            path.unlink()
        children = [spawn(code, cache_dir, **NO_PYC) for _ in range(parallel)]
        figures["processes started"] += parallel
        deadline = time.monotonic()
        for child in children:
            delay = deadline + rng.uniform(0.05, within) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
                figures["killed"] += 1
            out, err = child.communicate()
            if child.returncode == 0:
                figures["finished before the kill"] += 1
                got = json.loads(out)
                if got["digest"] != expected["digest"] or err:
                    figures["problems"].append(f"a process that was not killed imported wrong code: {got} {err}")
            elif child.returncode != -signal.SIGKILL:
                figures["problems"].append(f"exit {child.returncode}: {err[-500:]}")
        figures["entries checked"] += len(cache_files(cache_dir))
        figures["problems"] += invalid_entries(cache_dir)
    return figures


def age_temporaries(cache_dir: Path | str, seconds: float = 7200) -> int:
    """Make every temporary look ``seconds`` old (``prune`` removes those older than an hour)."""
    found = temporaries(cache_dir)
    when = time.time() - seconds
    for path in found:
        os.utime(path, (when, when), follow_symlinks=False)
    return len(found)


def prune_cli(cache_dir: Path | str) -> dict | None:
    """``python -m autocompile prune --json`` (with the default size cap), or ``None`` if it does not exist."""
    result = subprocess.run(
        [sys.executable, "-m", "autocompile", "prune", "--json"],
        env=child_env(cache_dir), capture_output=True, text=True, timeout=600,
    )
    if "invalid choice" in result.stderr:
        return None
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# Fuzzing corrupt entries -------------------------------------------------------

TARGETS = ("index", "object", "both")


class FuzzBed:
    """Modules with settled sources and a pristine cache of their entries (and another interpreter's),
    restored before every case; ``run`` damages entries, imports in one child and checks the outcome."""

    def __init__(self, root: Path, modules: int, foreign_python: str | None) -> None:
        from autocompile import _keys, _stats
        from conftest import run_python, settle, write_tree

        self.root, self.modules = root, modules
        self.src = root / "src"
        self.pristine = root / "pristine"
        self.work = root / "cache"
        self.scratch = root / "scratch"
        self.scratch.mkdir(parents=True, exist_ok=True)
        names = [self.name(n) for n in range(modules)]
        body = "".join(f"def f{k}(x):\n    return [x * {k} for _ in range(2)]\n" for k in range(20))
        write_tree(self.src, {f"{name}.py": f"VALUE = {n!r}\n{body}" + "#" * n for n, name in enumerate(names)})
        settle()
        self.code_all = "import " + ", ".join(names)
        run_python(self.code_all, self.pristine, cwd=self.src)
        self.foreign: dict[int, bytes] = {}
        if foreign_python and os.path.exists(foreign_python):
            run_python(self.code_all, self.pristine, cwd=self.src, python=foreign_python)
        store = _store.Store(str(self.pristine))
        context = _keys.code_context(0)
        self.paths: dict[int, dict[str, str]] = {}
        for n, name in enumerate(names):
            source = self.src / f"{name}.py"
            self.paths[n] = {
                "object": store.object_path(_keys.content_key(context, source.read_bytes())).replace(str(self.pristine), ""),
                "index": store.index_path(_keys.stat_key(context, str(source), source.stat())).replace(str(self.pristine), ""),
            }
            assert os.path.exists(str(self.pristine) + self.paths[n]["index"]), "the pristine cache has no index entry"
        for path in cache_files(self.pristine):
            entry = _store.unpack(path.read_bytes())
            if entry.meta.get("tag") != _stats._TAG and path.parent.parent.name == "objects":
                self.foreign[int(entry.meta["name"].rpartition("_")[2])] = path.read_bytes()

    @staticmethod
    def name(n: int) -> str:
        return f"fz_{n:04d}"

    def run(self, cases: list[tuple[int, str, str, int]], log: str = "warning") -> list[str]:
        """Apply ``(module, target, mutation, seed)`` cases (one per module), import them all in one child; return problems."""
        from conftest import run_python

        subprocess.run(["rm", "-rf", str(self.work)], check=True)
        subprocess.run(["cp", "-a", str(self.pristine), str(self.work)], check=True)
        chosen = {}
        for module, target, kind, seed in cases:
            chosen[module] = (target, kind)
            rng = random.Random(seed)
            paths = self.paths[module]
            foreign = self.foreign.get(module) or (self.work / paths["object"].lstrip("/")).read_bytes()[:0] or _store.pack(0, "ee" * 32, b"x", {})
            if target == "object":  # make the import read the object: no index entry
                (self.work / paths["index"].lstrip("/")).unlink()
            for area in ("index", "object") if target == "both" else (target,):
                mutate(self.work / paths[area].lstrip("/"), kind, rng, foreign, self.scratch)
        names = [self.name(n) for n in sorted(chosen)]
        code = "import importlib\n" + "".join(f"print({name!r}, importlib.import_module({name!r}).VALUE, importlib.import_module({name!r}).f3(2))\n" for name in names)
        result = run_python(code, self.work, cwd=self.src, check=False, AUTOCOMPILE_LOG=log)
        problems = []
        expected = "".join(f"{name} {int(name[3:])} [6, 6]\n" for name in names)
        if result.returncode != 0 or result.stdout != expected:
            problems.append(f"{chosen}: wrong result: {result.stdout!r} {result.stderr[-800:]!r}")
        if len(result.stderr.splitlines()) > 1:
            problems.append(f"{chosen}: more than one line on stderr: {result.stderr[-800:]!r}")
        for module in chosen:
            for area in ("index", "object"):
                path = self.work / self.paths[module][area].lstrip("/")
                try:
                    if path.is_symlink() or not path.is_file():
                        raise _store.CorruptEntry("not a regular file")
                    _store.unpack(path.read_bytes(), path.name if area == "object" else None)
                except (OSError, _store.CorruptEntry) as exc:
                    if area == "index" or chosen[module][0] != "index":  # an object the import never read may stay damaged
                        problems.append(f"{self.name(module)} {chosen[module]}: {area} entry not replaced: {exc}")
        return problems
