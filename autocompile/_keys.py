"""Cache keys: what an object is, and where the stat index looks for it.

A *content key* names compiled output: a cryptographic hash of the source bytes
and of every input that changes what the compiler produces. Identical files share
one object wherever they live. A *stat key* names what is known about one source
path at one moment (its ``stat``), so that an unchanged file is found without
being read or hashed.
"""

import os
import sys

import _frozen_importlib_external as _bootstrap_external
import _imp


MAGIC_NUMBER: bytes = _bootstrap_external.MAGIC_NUMBER

#: Bumped whenever the object format or what goes into a key changes.
FORMAT_VERSION = 3
KEY_BYTES = 32


def code_context(optimize: int, profile: str = "") -> bytes:
    """Everything besides the source that changes compiled bytecode."""
    parts = (
        b"autocompile-code",
        str(FORMAT_VERSION).encode(),
        (sys.implementation.cache_tag or "").encode(),
        MAGIC_NUMBER,
        str(optimize).encode(),
        profile.encode(),
    )
    return b"\0".join(parts)


_hashers: dict[bytes, object] = {}


def _digest(context: bytes, data: bytes) -> str:
    """BLAKE2b-256 of ``context`` (length-prefixed) and ``data``; the context's state is kept."""
    prototype = _hashers.get(context)
    if prototype is None:
        try:  # _blake2 itself: hashlib would load OpenSSL, a few ms at start-up
            from _blake2 import blake2b
        except ImportError:  # pragma: no cover - interpreters built without _blake2
            from hashlib import blake2b
        prototype = blake2b(len(context).to_bytes(4, "little") + context, digest_size=KEY_BYTES, person=b"autocompile")
        _hashers[context] = prototype
    hasher = prototype.copy()  # type: ignore[attr-defined]
    hasher.update(data)
    return hasher.hexdigest()


def context_id(context: bytes) -> bytes:
    """Eight bytes naming a context, kept in every object's header.

    SipHash, built in: telling contexts apart needs no cryptographic hash, and
    this keeps ``_blake2`` out of processes that import nothing.
    """
    return _imp.source_hash(_bootstrap_external._RAW_MAGIC_NUMBER, context)


def content_key(context: bytes, source: bytes) -> str:
    """The content address of ``source`` compiled under ``context``."""
    return _digest(context, source)


#: Two SipHash keys: a stat key is 128 bits made of two 64-bit SipHash-1-3 digests.
_STAT_SEEDS = (0x6175746F636F6D70, 0x696C652D73746174)


def stat_key(context: bytes, path: str, st: os.stat_result) -> str:
    """The index key of ``path`` as it is now.

    ``st_ctime_ns`` changes on every write, rename and ``touch -r``, so an edit
    that keeps the size and restores the modification time still changes the key.
    SipHash (built in) rather than BLAKE2b: only accidental collisions matter for
    a name of a ``stat`` result, and a warm process then never loads ``_blake2``.
    """
    fingerprint = f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}"
    data = len(context).to_bytes(4, "little") + context + fingerprint.encode("utf-8", "surrogateescape")
    return (_imp.source_hash(_STAT_SEEDS[0], data) + _imp.source_hash(_STAT_SEEDS[1], data)).hex()


def source_hash(source: bytes) -> bytes:
    """``importlib.util.source_hash`` (SipHash): validates stock hash-based pycs only."""
    return _imp.source_hash(_bootstrap_external._RAW_MAGIC_NUMBER, source)
