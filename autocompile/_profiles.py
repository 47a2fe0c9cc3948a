"""Optimization profiles: per-package compile-time transformations.

CPython's ``-O``/``-OO`` apply to a whole process; a profile applies to the
modules its rule matches. A profile is part of the cache key, so code compiled
under one profile is never served under another. Rules come from the config
file's ``[profiles]`` table and from ``AUTOCOMPILE_PROFILES``
(``"sympy=strip-docstrings;docutils.*=strip-docstrings+strip-asserts"``).

Matching runs at start-up for every module, so it is plain string work; the
``ast`` module is imported only when a profiled module is compiled.
"""


NONE = ""
TRANSFORMS = ("strip-asserts", "strip-docstrings")


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

    __slots__ = ("pattern", "profile", "origin", "kind", "literal")

    def __init__(self, pattern: str, profile: str, origin: str) -> None:
        self.pattern = pattern
        self.profile = profile
        self.origin = origin
        self.kind = "path" if "/" in pattern or "\\" in pattern else "glob" if any(c in pattern for c in "*?[") else "name"
        self.literal = len(pattern.split("*")[0].split("?")[0].split("[")[0])

    def specificity(self, fullname: str, path: str, fnmatchcase) -> tuple[int, int, int] | None:  # type: ignore[no-untyped-def]
        """How specifically this rule names the module, or ``None`` if it does not.

        The module's exact name first; then module names and globs by the length
        of their literal part (``pkg.sub`` and ``pkg.sub.*`` beat ``pkg.*``, which
        beats ``pkg``); path globs last.
        """
        if self.kind == "name":
            if fullname == self.pattern:
                return (1, 1, self.literal)
            matched = fullname.startswith(self.pattern + ".")
        else:
            matched = bool(fnmatchcase(path if self.kind == "path" else fullname, self.pattern))
        return (0, int(self.kind != "path"), self.literal) if matched else None

    def __str__(self) -> str:
        return f"{self.pattern}={self.profile or 'none'} ({self.origin})"


class Rules:
    """The profile rules in force; the most specific matching rule wins."""

    def __init__(self, rules: list[Rule]) -> None:
        from fnmatch import fnmatchcase  # imported before the hook is installed: no recursion

        self.rules = rules
        self._fnmatchcase = fnmatchcase

    def match(self, fullname: str, path: str) -> Rule | None:
        best, best_specificity = None, None
        for rule in self.rules:
            specificity = rule.specificity(fullname, path, self._fnmatchcase)
            if specificity is not None and (best_specificity is None or specificity > best_specificity):
                best, best_specificity = rule, specificity
        return best


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


def transform(tree, profile: str):  # type: ignore[no-untyped-def]
    """Apply ``profile`` to a module's AST (``ast`` is imported only now, to compile)."""
    from ._transform import apply

    return apply(tree, profile)
