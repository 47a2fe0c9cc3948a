"""``autocompile optimize --suggest``: which installed packages can lose their docstrings or asserts.

A static scan: every ``.py`` file of each installed top-level package is read
and, where a cheap text filter says it could matter, parsed with ``ast``;
nothing of the scanned packages is imported or run. A package is suggested
for a transformation only when none of the rules below finds anything in it;
every finding is reported with file and line.

``strip-docstrings`` is unsafe in a package when any of its modules, test
modules included (the profile applies to them too, and the package's test
suite must still pass under it), does one of:

* reads ``__doc__``: ``x.__doc__`` or the name ``__doc__`` in a load (this
  covers ``ArgumentParser(description=__doc__)`` and ``docopt(__doc__)``),
  ``getattr(x, "__doc__", ...)``, a subscript ``[...]["__doc__"]``, or an
  augmented assignment ``x.__doc__ += ...`` (which fails once the docstring
  is ``None``). Whose docstring is read cannot be decided statically, so any
  read counts. The one read that is let through is a plain copy,
  ``a.__doc__ = b.__doc__``: it copies ``None`` as faithfully as a string;
* calls ``getdoc`` (``inspect.getdoc``, ``pydoc.getdoc``), or ``cleandoc``
  on anything but a string literal;
* calls ``help(...)``, or imports ``pydoc`` or ``doctest``;
* imports, or lists as an unconditional ``Requires-Dist`` (requirements only
  wanted by an extra are ignored), a framework that builds behaviour from
  docstrings (:data:`DOCSTRING_FRAMEWORKS`); a framework is itself excluded.
  Only direct dependencies count.

Sphinx's autodoc reads docstrings at documentation build time, which is a run
of the program like any other: ``sphinx`` and its extensions are in
:data:`DOCSTRING_FRAMEWORKS`, and a documentation build of a profiled package
must run with ``AUTOCOMPILE_PROFILES=`` (empty: the environment overrides the
config file). Interactive ``help()`` on a stripped package shows no text;
that is the point of the profile, not a reason to leave a package out.

``strip-asserts`` is unsafe in a package when:

* any module other than a test module catches ``AssertionError`` by name
  (``except AssertionError``, also in a tuple): a failing assert is then
  expected, i.e. part of the control flow, and the assert that raises may be
  in any function the ``try`` calls, so the whole package is left out;
* an ``assert`` has a side effect that stripping would remove: an
  assignment expression (``:=``), ``await`` or ``yield`` in its test or
  message. Calls are assumed free of needed side effects, as ``-O`` assumes;
* it ships test modules (``test_*.py``, ``*_test.py``, ``conftest.py``,
  ``tests.py``, anything under a ``tests``, ``test`` or ``testing``
  directory) that contain ``assert`` statements: those asserts *are* the
  tests, and stripping them would make the suite pass vacuously.

Files that do not parse are skipped (the hook compiles them as stock does,
which is to fail), and counted.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

DOCSTRINGS, ASSERTS = "strip-docstrings", "strip-asserts"

#: Distributions (normalized names) whose behaviour is built from docstrings,
#: with the import names that give them away when a package vendors or
#: imports them without declaring the dependency.
DOCSTRING_FRAMEWORKS: dict[str, tuple[str, ...]] = {
    "click": ("click",),  # help text of commands from the callback's docstring
    "typer": ("typer",),
    "docopt": ("docopt",),  # the usage message *is* the module docstring
    "docopt-ng": ("docopt",),
    "ply": ("ply",),  # grammar rules and token regexes are docstrings
    "fire": ("fire",),
    "invoke": ("invoke",),  # task help
    "plac": ("plac",),
    "argh": ("argh",),
    "clize": ("clize",),
    "defopt": ("defopt",),
    "fastapi": ("fastapi",),  # OpenAPI descriptions from endpoint docstrings
    "graphene": ("graphene",),  # GraphQL descriptions
    "strawberry-graphql": ("strawberry",),
    "pydantic": ("pydantic",),  # JSON schema descriptions from model docstrings
    "sphinx": ("sphinx",),  # autodoc, napoleon: documentation builds read docstrings
    "numpydoc": ("numpydoc",),
}
_FRAMEWORK_IMPORTS = {name: dist for dist, names in DOCSTRING_FRAMEWORKS.items() for name in names}

_TEST_DIRS = frozenset({"tests", "test", "testing"})
#: Text that must occur in a file for any docstring rule to fire in it.
_DOC_HINTS = re.compile(rb"__doc__|getdoc|cleandoc|help|pydoc|doctest|" + b"|".join(re.escape(n.encode()) for n in _FRAMEWORK_IMPORTS))


class UnknownPackage(Exception):
    """A package named on the command line is not installed."""


@dataclass
class Finding:
    transform: str
    what: str
    path: str  # relative to the directory holding the package
    line: int

    def __str__(self) -> str:
        return f"{self.what} ({self.path}:{self.line})" if self.path else self.what


@dataclass
class Package:
    name: str  # the top-level import name
    path: str  # the package directory or the module file
    distribution: str | None = None
    requires: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    unparsable: int = 0

    def unsafe(self, transform: str) -> list[Finding]:
        return [f for f in self.findings if f.transform == transform]

    @property
    def profile(self) -> str:
        return "+".join(t for t in (ASSERTS, DOCSTRINGS) if not self.unsafe(t))


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# Finding the packages ------------------------------------------------------


def discover(site_dirs: Iterable[str]) -> dict[str, Package]:
    """Top-level pure-Python packages and modules of ``site_dirs``, by import name.

    From the installed distributions (``top_level.txt``, else the first path
    component of the files in ``RECORD``), then whatever else sits in the
    directories as a package (a directory with ``__init__.py``) or a module.
    """
    import importlib.metadata

    site_dirs = [d for d in site_dirs if os.path.isdir(d)]
    packages: dict[str, Package] = {}
    for dist in importlib.metadata.distributions(path=site_dirs):
        dist_name = dist.metadata["Name"] or ""
        for name in _top_level_names(dist):
            where = _locate(dist.locate_file(""), name)
            if where and name not in packages:
                packages[name] = Package(name, where, dist_name, _unconditional(dist.requires or []))
    for directory in site_dirs:
        for entry in sorted(os.listdir(directory)):
            name = entry[:-3] if entry.endswith(".py") else entry
            if name.isidentifier() and name not in packages:
                where = _locate(directory, name)
                if where and (where.endswith(".py") or os.path.isfile(os.path.join(where, "__init__.py"))):
                    packages[name] = Package(name, where)
    return packages


def _top_level_names(dist) -> list[str]:  # type: ignore[no-untyped-def]
    text = dist.read_text("top_level.txt")
    if text:
        names = [line.strip().replace("/", ".").split(".")[0] for line in text.splitlines()]
    else:
        names = []
        for file in dist.files or ():
            parts = file.parts
            if parts and not parts[0].endswith((".dist-info", ".egg-info", ".data", ".pth")) and parts[0] != "..":
                names.append(parts[0][:-3] if len(parts) == 1 and parts[0].endswith(".py") else parts[0])
    return sorted({name for name in names if name.isidentifier() and name != "__pycache__"})


def _locate(directory, name: str) -> str | None:  # type: ignore[no-untyped-def]
    base = os.path.join(str(directory), name)
    if os.path.isdir(base) and any(_sources(base)):
        return base
    if os.path.isfile(base + ".py"):
        return base + ".py"
    return None


def _unconditional(requirements: list[str]) -> list[str]:
    """Names of the requirements not wanted only by an extra (``; extra == "cli"``)."""
    names = []
    for requirement in requirements:
        spec, _sep, marker = requirement.partition(";")
        if "extra" in marker:
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
        if match:
            names.append(normalize(match.group(1)))
    return names


def _sources(path: str) -> Iterator[str]:
    if os.path.isfile(path):
        yield path
        return
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for filename in sorted(filenames):
            if filename.endswith(".py"):
                yield os.path.join(dirpath, filename)


def is_test_module(relative: str) -> bool:
    parts = relative.replace(os.sep, "/").split("/")
    filename = parts[-1]
    return (
        any(part in _TEST_DIRS for part in parts[:-1])
        or filename.startswith("test_")
        or filename.endswith("_test.py")
        or filename in ("conftest.py", "tests.py")
    )


# Scanning --------------------------------------------------------------------


def scan(package: Package) -> Package:
    """Fill ``package.findings`` (no import of the package: its sources are parsed)."""
    if package.name == "autocompile":
        package.findings += [Finding(t, "autocompile itself: its own modules are never profiled", "", 0) for t in (DOCSTRINGS, ASSERTS)]
        return package
    dist = normalize(package.distribution or package.name)
    if dist in DOCSTRING_FRAMEWORKS or package.name in _FRAMEWORK_IMPORTS:
        package.findings.append(Finding(DOCSTRINGS, "is a framework that builds behaviour from docstrings", "", 0))
    for requirement in package.requires:
        if requirement in DOCSTRING_FRAMEWORKS:
            package.findings.append(Finding(DOCSTRINGS, f"depends on {requirement} (Requires-Dist)", "", 0))
    root = os.path.dirname(package.path)
    for path in _sources(package.path):
        package.files += 1
        relative = os.path.relpath(path, root)
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError:
            package.unparsable += 1
            continue
        test = is_test_module(relative)
        wants_docs = _DOC_HINTS.search(data) is not None
        wants_asserts = b"assert" in data or b"AssertionError" in data
        if not (wants_docs or wants_asserts):
            continue
        try:
            tree = ast.parse(data, filename=path)
        except (SyntaxError, ValueError):
            package.unparsable += 1
            continue
        _Visitor(package, relative, test, package.name).visit(tree)
    return package


class _Visitor(ast.NodeVisitor):
    def __init__(self, package: Package, relative: str, test: bool, own_name: str) -> None:
        self.package = package
        self.relative = relative
        self.test = test
        self.own_name = own_name
        self.copies: set[int] = set()  # ids of ``b.__doc__`` nodes that are only copied to another __doc__

    def found(self, transform: str, what: str, node: ast.AST) -> None:
        self.package.findings.append(Finding(transform, what, self.relative, getattr(node, "lineno", 0)))

    # docstrings

    def visit_Assign(self, node: ast.Assign) -> None:
        if _is_doc(node.value) and all(_is_doc(target) for target in node.targets):
            self.copies.add(id(node.value))
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if _is_doc(node.target):
            self.found(DOCSTRINGS, "modifies __doc__ in place (fails when it is None)", node)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr == "__doc__" and isinstance(node.ctx, ast.Load) and id(node) not in self.copies:
            self.found(DOCSTRINGS, "reads __doc__", node)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "__doc__" and isinstance(node.ctx, ast.Load) and id(node) not in self.copies:
            self.found(DOCSTRINGS, "reads __doc__", node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        key = node.slice
        if isinstance(key, ast.Constant) and key.value == "__doc__" and isinstance(node.ctx, ast.Load):
            self.found(DOCSTRINGS, 'reads ["__doc__"]', node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = _called(node.func)
        if name == "getattr" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value == "__doc__":
            self.found(DOCSTRINGS, 'getattr(..., "__doc__")', node)
        elif name == "getdoc":
            self.found(DOCSTRINGS, "calls getdoc()", node)
        elif name == "cleandoc" and not (node.args and isinstance(node.args[0], ast.Constant)):
            self.found(DOCSTRINGS, "calls cleandoc() on a computed string", node)
        elif name == "help" and isinstance(node.func, ast.Name):
            self.found(DOCSTRINGS, "calls help()", node)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._imported(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._imported(node.module, node)

    def _imported(self, module: str, node: ast.AST) -> None:
        top = module.split(".")[0]
        if top in ("pydoc", "doctest"):
            self.found(DOCSTRINGS, f"imports {top}", node)
        elif top in _FRAMEWORK_IMPORTS and top != self.own_name:
            self.found(DOCSTRINGS, f"imports {top}, which builds behaviour from docstrings", node)

    # asserts

    def visit_Try(self, node: ast.Try) -> None:
        if not self.test and any(_catches_assertion_error(handler.type) for handler in node.handlers):
            self.found(ASSERTS, "catches AssertionError (asserts as control flow)", node)
        self.generic_visit(node)

    visit_TryStar = visit_Try

    def visit_Assert(self, node: ast.Assert) -> None:
        if self.test:
            self.found(ASSERTS, "ships tests whose checks are asserts", node)
        for child in ast.walk(node):
            if isinstance(child, (ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)):
                self.found(ASSERTS, f"assert with a side effect ({type(child).__name__})", node)
                break
        self.generic_visit(node)


def _is_doc(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "__doc__") or (isinstance(node, ast.Name) and node.id == "__doc__")


def _called(func: ast.AST) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _catches_assertion_error(kind: ast.AST | None) -> bool:
    if kind is None:
        return False
    if isinstance(kind, ast.Tuple):
        return any(_catches_assertion_error(element) for element in kind.elts)
    return _called(kind) == "AssertionError"


# The suggestion ---------------------------------------------------------------


def suggest(site_dirs: Iterable[str], names: Iterable[str] = ()) -> tuple[list[dict[str, str]], list[dict[str, str]], list[Package]]:
    """``(suggested, excluded, packages)`` for the named packages (import or distribution names), or all."""
    packages = discover(site_dirs)
    wanted = list(names)
    if wanted:
        selected = []
        for name in wanted:
            matches = [p for p in packages.values() if p.name == name or (p.distribution and normalize(p.distribution) == normalize(name))]
            if not matches:
                raise UnknownPackage(f"no installed package named {name!r}")
            selected += [p for p in matches if p not in selected]
    else:
        selected = [packages[name] for name in sorted(packages)]
    suggested, excluded = [], []
    for package in selected:
        scan(package)
        if package.profile:
            suggested.append({"package": package.name, "profile": package.profile})
        for transform in (DOCSTRINGS, ASSERTS):
            findings = package.unsafe(transform)
            if findings:
                more = f" and {len(findings) - 1} more" if len(findings) > 1 else ""
                excluded.append({"package": package.name, "reason": f"{transform}: {findings[0]}{more}"})
    return suggested, excluded, selected


# --apply: the config file's [profiles] table ----------------------------------


def _toml() -> object:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    return tomllib


def _toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, for the characters that need one)."""
    import json

    return json.dumps(text, ensure_ascii=False)


def _rules_of(value: object) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    rules = {}
    for item in str(value or "").replace("\n", ";").split(";"):
        pattern, sep, profile = item.partition("=")
        if sep and pattern.strip():
            rules[pattern.strip()] = profile.strip()
    return rules


_TABLE_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]*?)\s*\]\]?\s*(#.*)?$")


def _without_profiles(text: str) -> str:
    """``text`` less its ``[profiles]`` table and any top-level ``profiles = ...`` line."""
    kept, in_profiles, in_table = [], False, False
    for line in text.splitlines(keepends=True):
        header = _TABLE_HEADER.match(line)
        if header:
            in_table = True
            in_profiles = header.group(1).strip("\"' ") == "profiles" or header.group(1).startswith("profiles.")
        if in_profiles:
            continue
        if not in_table and re.match(r"\s*[\"']?profiles[\"']?\s*=", line):
            continue
        kept.append(line)
    return "".join(kept)


def read_config(path: str) -> tuple[str, dict]:  # type: ignore[type-arg]
    """The config file's text and document (empty if it does not exist); ``ValueError`` if it is not TOML."""
    tomllib = _toml()
    try:
        with open(path, "rb") as file:
            original = file.read().decode("utf-8")
    except FileNotFoundError:
        original = ""
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8, left as it is") from None
    try:
        return original, tomllib.loads(original)  # type: ignore[attr-defined]
    except tomllib.TOMLDecodeError as exc:  # type: ignore[attr-defined]
        raise ValueError(f"{path}: not valid TOML, left as it is: {exc}") from None


def apply(path: str, suggested: list[dict[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    """Merge ``suggested`` into the ``[profiles]`` table of the config file at ``path``.

    Rules of other patterns are kept; a suggested rule replaces a rule of the
    same pattern. The rest of the file is kept as it is (the table is moved to
    the end). The new text is parsed back and compared with what was meant
    before it replaces the file, atomically. Returns ``(before, after)``.
    """
    tomllib = _toml()
    original, document = read_config(path)
    before = _rules_of(document.get("profiles", {}))
    after = {**before, **{item["package"]: item["profile"] for item in suggested}}
    text = _without_profiles(original)
    if text and not text.endswith("\n"):
        text += "\n"
    table = "".join(f"{_toml_string(pattern)} = {_toml_string(profile)}\n" for pattern, profile in sorted(after.items()))
    text += ("\n" if text.strip() else "") + "[profiles]\n" + table
    expected = {**{k: v for k, v in document.items() if k != "profiles"}, "profiles": after}
    if tomllib.loads(text) != expected:  # type: ignore[attr-defined]
        raise ValueError(f"{path}: could not rewrite the [profiles] table safely, left as it is")
    _write_atomically(path, text.encode("utf-8"))
    return before, after


def _write_atomically(path: str, data: bytes) -> None:
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600  # the config may come to hold remote_token
    fd, temporary = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
