"""The AST transformations behind optimization profiles (imported only to compile)."""


import ast


class _Stripper(ast.NodeTransformer):
    """Drops docstrings and/or ``assert`` statements, as ``-OO``/``-O`` would, and nothing else.

    A removed statement becomes ``pass`` where a block would otherwise be
    empty, and line numbers of everything else are untouched, so tracebacks
    and coverage stay right.
    """

    def __init__(self, docstrings: bool, asserts: bool) -> None:
        self.docstrings = docstrings
        self.asserts = asserts

    def _strip_docstring(self, node: ast.AST) -> ast.AST:
        self.generic_visit(node)
        body = node.body  # type: ignore[attr-defined]
        if self.docstrings and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                node.body = body[1:] or [ast.copy_location(ast.Pass(), body[0])]  # type: ignore[attr-defined]
        return node

    visit_Module = visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _strip_docstring

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        return ast.copy_location(ast.Pass(), node) if self.asserts else node


def apply(tree: ast.Module, profile: str) -> ast.Module:
    transforms = profile.split("+")
    stripped = _Stripper("strip-docstrings" in transforms, "strip-asserts" in transforms).visit(tree)
    return ast.fix_missing_locations(stripped)
