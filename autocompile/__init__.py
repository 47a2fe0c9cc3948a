"""autocompile: serve every pure-Python module from one shared cache of compiled code.

Installed, it works by itself through ``autocompile.pth``. ``install()`` and
``uninstall()`` are for programs that start without ``site``.
"""

__version__ = "0.1.0"
__all__ = ["__version__", "install", "uninstall"]


def install() -> bool:
    """Install the import hook in this process; return whether it is active (idempotent)."""
    from ._install import install

    return install()


def uninstall() -> bool:
    """Put the standard ``PathFinder`` back; return whether the hook was active."""
    from ._install import uninstall

    return uninstall()
