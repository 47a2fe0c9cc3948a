"""Import-heavy workload for the autocompile benchmark harness.

Run as a whole process: ``venv/bin/python workload.py [--synthetic PKG]``.

It imports a realistic slice of large pure-Python packages (sympy, Django's
admin, docutils, pygments, networkx, rich, sphinx), does a tiny bit of work
with some of them, writes nothing anywhere, and prints the number of modules
in ``sys.modules`` as its last line so that the harness can check that stock
and autocompile runs imported exactly the same modules.

``--synthetic PKG`` (smoke mode) imports the generated package PKG instead.
"""

import sys

#: Standard-library modules the hook itself may import: entry checksums (zlib), counters at
#: exit (atexit), content hashing on a miss (_blake2), a failed hard link (errno).
HOOK_STDLIB = ("_blake2", "atexit", "errno", "zlib")


def full_workload():
    # --- sympy -----------------------------------------------------------
    import sympy

    x = sympy.Symbol("x")
    assert sympy.expand((x + 1) ** 2) == x**2 + 2 * x + 1

    # --- Django admin (in-memory settings, nothing written) --------------
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="autocompile-benchmark",
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": ":memory:",
            }
        },
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {"context_processors": []},
            }
        ],
        USE_TZ=True,
    )
    django.setup()
    import django.contrib.admin  # noqa: F401
    import django.contrib.admin.sites  # noqa: F401
    import django.contrib.auth.admin  # noqa: F401
    import django.forms  # noqa: F401

    # --- docutils --------------------------------------------------------
    import docutils.core
    import docutils.parsers.rst  # noqa: F401

    # --- pygments --------------------------------------------------------
    import pygments
    import pygments.formatters
    import pygments.lexers
    from pygments.formatters import HtmlFormatter, TerminalFormatter  # noqa: F401
    from pygments.lexers import PythonLexer

    pygments.highlight("x = 1\n", PythonLexer(), HtmlFormatter())

    # --- networkx --------------------------------------------------------
    import networkx

    g = networkx.path_graph(5)
    assert networkx.shortest_path_length(g, 0, 4) == 4

    # --- rich ------------------------------------------------------------
    import rich.console
    import rich.syntax  # noqa: F401
    import rich.table

    rich.table.Table(title="t").add_column("c")

    # --- sphinx ----------------------------------------------------------
    import sphinx.application  # noqa: F401
    import sphinx.directives  # noqa: F401
    import sphinx.util.docutils  # noqa: F401

    # docutils.core used last so that the whole publisher stack is loaded
    docutils.core  # noqa: B018


def synthetic_workload(pkg):
    import importlib

    importlib.import_module(pkg)


def main(argv):
    list_modules = "--list-modules" in argv
    argv = [a for a in argv if a != "--list-modules"]
    if len(argv) >= 2 and argv[0] == "--synthetic":
        synthetic_workload(argv[1])
    else:
        full_workload()
    # diagnostic: how many entries belong to autocompile itself (0 when stock)
    own = [m for m in sys.modules if m == "autocompile" or m.startswith(("autocompile.", "_autocompile"))]
    print("autocompile-modules: %d" % len(own))
    # what the harness compares between runs: the rest, less the few standard-library modules
    # the hook may import itself (whoever imported them in this run)
    print("compared-modules: %d" % sum(1 for m in sys.modules if m not in own and m not in HOOK_STDLIB))
    if list_modules:
        print("modules: " + " ".join(sorted(sys.modules)))
    print(len(sys.modules))


if __name__ == "__main__":
    main(sys.argv[1:])
