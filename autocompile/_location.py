"""Where autocompile's cache and config live, and whether the cache can be trusted.

Start-up code (in the runtime bundle): it imports nothing that ``site`` has not
imported already.
"""

import os
import sys

from ._bootstrap import _APP_NAME as APP_NAME
from ._bootstrap import user_cache_dir  # noqa: F401  (where the cache is: needed before anything else)

_CHECK_OWNER = hasattr(os, "geteuid")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def user_config_file() -> str:
    """``platformdirs.user_config_dir("autocompile")/config.toml``, found as cheaply."""
    if sys.platform == "win32":
        import platformdirs

        base = platformdirs.user_config_dir(APP_NAME)
    elif sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~/Library/Application Support"), APP_NAME)
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME", "").strip() or os.path.expanduser("~/.config")
        base = os.path.join(xdg, APP_NAME)
    return os.path.join(base, "config.toml")


def describe_untrusted(root: str) -> str | None:
    """Why ``root`` must not be used as a cache directory, or ``None`` if it may.

    It must be a directory owned by this user (or by root: a read-only shared
    tier) and not writable by group or others, and no directory above it may
    let another user replace it.
    """
    if not _CHECK_OWNER:
        return None
    uid = os.geteuid()
    try:
        st = os.stat(root)
    except OSError as exc:
        return f"cannot use {root}: {exc.strerror}"
    if (st.st_mode & 0o170000) != 0o040000:
        return f"{root} is not a directory"
    if st.st_uid not in (uid, 0):  # root's: a read-only shared tier
        return f"{root} is owned by uid {st.st_uid}, not by this user (uid {uid}) or root"
    if st.st_mode & 0o022:
        return f"{root} is writable by group or others (mode {st.st_mode & 0o777:o})"
    problem = _foreign_link(root, uid)
    if problem:
        return problem
    parent = os.path.dirname(os.path.realpath(root))
    while True:
        try:
            st = os.stat(parent)
        except OSError as exc:
            return f"cannot check {parent}: {exc.strerror}"
        if st.st_uid not in (0, uid):
            return f"{parent} is owned by uid {st.st_uid}, who could replace the cache directory"
        if st.st_mode & 0o022 and not st.st_mode & 0o1000:
            return f"{parent} is writable by group or others without the sticky bit"
        next_parent = os.path.dirname(parent)
        if next_parent == parent:
            return None
        parent = next_parent


def open_root(root: str) -> str | None:
    """Create the cache directory (mode 0700) if needed; return why it is unusable, if it is."""
    try:
        os.makedirs(root, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        return f"cannot create {root}: {exc.strerror or exc}"
    else:
        _tag_cache_dir(root)
    return describe_untrusted(root)


def _tag_cache_dir(root: str) -> None:
    """Mark a new cache directory per the Cache Directory Tagging Specification, so backups skip it."""
    try:
        fd = os.open(os.path.join(root, "CACHEDIR.TAG"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    except OSError:
        return
    with open(fd, "wb") as file:
        file.write(b"Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by autocompile.\n")


def _foreign_link(path: str, uid: int) -> str | None:
    """A symbolic link on the way to ``path`` that another user owns, and so may repoint."""
    current = os.path.abspath(path)
    while True:
        try:
            st = os.lstat(current)
        except OSError:
            st = None
        if st is not None and (st.st_mode & 0o170000) == 0o120000 and st.st_uid not in (0, uid):
            return f"{current} is a symbolic link owned by uid {st.st_uid}, who could repoint it"
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
