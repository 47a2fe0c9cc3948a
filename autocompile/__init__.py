"""autocompile: serve every pure-Python module from one shared cache of compiled code.

Installed, it works by itself through ``autocompile.pth``. ``install()`` and
``uninstall()`` are for programs that start without ``site``.
"""

from ._bootstrap import install, uninstall

__version__ = "0.1.0"
__all__ = ["__version__", "install", "uninstall"]
