"""Optimization profiles: per-package compile-time transformations.

CPython's ``-O``/``-OO`` apply to a whole process; a profile applies to the
modules its rule matches. A profile is part of the cache key, so code compiled
under one profile is never served under another. Rules come from the config
file's ``[profiles]`` table and from ``AUTOCOMPILE_PROFILES``
(``"sympy=strip-docstrings;docutils.*=strip-docstrings+strip-asserts"``).

Matching runs at start-up for every module, so it is plain string work; the
``ast`` module is imported only when a profiled module is compiled.
"""


from _frozen_importlib import _call_with_frames_removed

NONE = ""
TRANSFORMS = ("strip-asserts", "strip-docstrings")
_AST_ONLY = 0x400  # ast.PyCF_ONLY_AST, without importing ast


def canonical(name: str) -> str:
    """``"strip-docstrings+strip-asserts"`` -> ``"strip-asserts+strip-docstrings"``; ``"none"`` -> ``""``.

    Raises ``ValueError`` for an unknown transformation.
    """
    parts = {part.strip() for part in name.split("+") if part.strip()}
    parts.discard("none")
    unknown = parts.difference(TRANSFORMS)
    if unknown:
        raise ValueError(f"unknown profile {', '.join(sorted(unknown))!r} (known: none, {', '.join(TRANSFORMS)})")
    return "+".join(sorted(parts))


class Rule:
    """``pattern = profile``: a module name, a module glob (``pkg.*``) or a path glob (``*/pkg/*``)."""

    __slots__ = ("pattern", "profile", "origin", "kind", "specificity")

    def __init__(self, pattern: str, profile: str, origin: str) -> None:
        self.pattern = pattern
        self.profile = profile
        self.origin = origin
        self.kind = "path" if "/" in pattern or "\\" in pattern else "glob" if any(c in pattern for c in "*?[") else "name"
        literal = pattern.split("*")[0].split("?")[0].split("[")[0]
        # Exact names beat module globs, which beat path globs; longer literal parts beat shorter.
        self.specificity = ({"name": 2, "glob": 1, "path": 0}[self.kind], len(literal))

    def matches(self, fullname: str, path: str, fnmatchcase) -> bool:  # type: ignore[no-untyped-def]
        if self.kind == "name":
            return fullname == self.pattern or fullname.startswith(self.pattern + ".")
        return bool(fnmatchcase(path if self.kind == "path" else fullname, self.pattern))

    def __str__(self) -> str:
        return f"{self.pattern}={self.profile or 'none'} ({self.origin})"


class Rules:
    """The profile rules in force; the most specific matching rule wins."""

    def __init__(self, rules: list[Rule]) -> None:
        from fnmatch import fnmatchcase  # imported before the hook is installed: no recursion

        self.rules = sorted(rules, key=lambda rule: rule.specificity, reverse=True)
        self._fnmatchcase = fnmatchcase

    def match(self, fullname: str, path: str) -> Rule | None:
        for rule in self.rules:
            if rule.matches(fullname, path, self._fnmatchcase):
                return rule
        return None


def parse(text: str, origin: str, problems: list[str]) -> list[Rule]:
    """Rules from ``"pattern=profile;pattern=profile"``; bad rules go to ``problems`` and are skipped."""
    rules = []
    for item in text.replace("\n", ";").split(";"):
        if not item.strip():
            continue
        pattern, sep, profile = item.partition("=")
        try:
            if not sep or not pattern.strip():
                raise ValueError(f"malformed rule {item.strip()!r} (expected pattern=profile)")
            rules.append(Rule(pattern.strip(), canonical(profile), origin))
        except ValueError as exc:
            problems.append(f"{origin}: {exc}")
    return rules


def compile_source(source: bytes, path: str, profile: str, optimize: int):  # type: ignore[no-untyped-def]
    """Compile ``source`` as stock would, with the profile's transformations applied.

    Parsing goes through importlib's ``_call_with_frames_removed`` and the
    built-in ``compile``, so a ``SyntaxError`` reads and traces back exactly as
    stock.
    """
    tree = _call_with_frames_removed(compile, source, path, "exec", _AST_ONLY, True, optimize)
    from ._transform import apply

    return _call_with_frames_removed(compile, apply(tree, profile), path, "exec", 0, True, optimize)
