"""The remote tier: share compiled code across machines through an HTTP cache server.

Speaks the plain HTTP protocol of Bazel remote caches (``GET``/``PUT``/``HEAD``
of ``<base>/cas/<sha256>`` and ``<base>/ac/<sha256>``), so nginx with WebDAV,
bazel-remote (with ``--disable_http_ac_validation``), Buildbarn or any artifact
store that accepts ``PUT`` will do.

Addressing. A reader knows only the content key of what it wants (BLAKE2b of
the source and the compile context, see ``_keys``); the server's CAS is
addressed by the sha256 of the stored blob. Two entries per object:

``ac/<sha256(b"autocompile-ac-v1\\0" + namespace + content key)>``
    a 77-byte *pointer*: ``b"ACRP" 0x01 | content key (32) | sha256 of the blob (32) | blob size (8)``.
    The namespace is derived from the team key (``HMAC(key, "namespace")[:16]``),
    or is ``b"unsigned"``: teams with different keys never overwrite each other.
``cas/<sha256(blob)>``
    the *envelope*: ``b"ACRS" 0x01 flags | HMAC-SHA256 (32) | object file``, where
    the object file is exactly the local ``objects/a/<key>`` file (its header holds
    the content key) and the HMAC covers ``"autocompile-object-v1\\0" + object file``,
    hence the content key: a server cannot swap entries.

A reader never trusts the server: the pointer must name the content key asked
for, the blob must hash to the pointer's digest and address, the HMAC must
verify (or, without a key, ``remote_trust = "unsigned"`` must be set), and
``_store.unpack(object, key)`` must pass with the expected key before a byte is
unmarshalled. Anything else is discarded and counted (``remote_rejected``).

Read-through (``fetch_for_import``) runs inside an import: it is bounded by
``remote_budget_ms`` end to end (every socket operation's timeout is what is left
of the budget), never raises, and sits behind a circuit breaker shared by the
processes of one cache directory (a small ``remote-breaker`` file holding a
"skip until" time). This module imports nothing heavy until it talks to a server.
"""

import os
from time import monotonic, time

from . import _config, _keys, _log, _stats, _store

OFF, READ, READ_WRITE = "off", "read", "read-write"
MODES = (OFF, READ, READ_WRITE)
SIGNED, UNSIGNED = "signed", "unsigned"
TRUSTS = (SIGNED, UNSIGNED)
DEFAULT_BUDGET_MS = 5.0
#: Timeout of every socket operation of the batch commands and ``doctor``.
BATCH_TIMEOUT = 30.0
#: How long read-through stops asking after a failure, a slow answer or a rejected object.
COOLDOWN_SECONDS = 60.0
REJECTED_COOLDOWN_SECONDS = 600.0

POINTER_MAGIC = b"ACRP\x01"
POINTER_SIZE = len(POINTER_MAGIC) + 32 + 32 + 8
ENVELOPE_MAGIC = b"ACRS\x01"
ENVELOPE_HEADER = len(ENVELOPE_MAGIC) + 1 + 32
FLAG_SIGNED = 1
_AC_DOMAIN = b"autocompile-ac-v1\0"
_SIGN_DOMAIN = b"autocompile-object-v1\0"
_PACK_DOMAIN = b"autocompile-pack-v1\0"
_PACK_LIST_DOMAIN = b"autocompile-pack-list-v1\0"
PACK_MAGIC = b"ACPK\x01"
PACK_LIST_MAGIC = b"ACPL\x02"
#: A pack holds at most this many bytes of objects (a push makes as many as it needs) ...
PACK_BYTES = 32 * 1024 * 1024
#: ... and the server's pack list names the newest packs, up to this many.
MAX_PACKS = 32
#: Blobs larger than this are refused without being read (a hostile server cannot fill memory).
MAX_BLOB = 64 * 1024 * 1024

BREAKER_FILE = "remote-breaker"
QUEUE_FILE = "remote-queue"

HIT, MISS, ERROR, REJECTED = "remote_hit", "remote_miss", "remote_error", "remote_rejected"
BYTES, TIME_NS = "remote_bytes", "remote_ns"


class RemoteError(Exception):
    """The server could not be used: unreachable, too slow, an unexpected status."""


class Rejected(Exception):
    """The server answered with something that must not be used."""


def _reveal(value: object) -> str:
    """The text of a setting that may be a :class:`_config.Secret` (a token, a key, a URL with a password)."""
    if isinstance(value, _config.Secret):
        return value.reveal()
    return value if isinstance(value, str) else ""


# Configuration ------------------------------------------------------------------


class Config:
    """The remote tier's effective settings, checked; ``problems`` says what is wrong."""

    def __init__(self, settings: object) -> None:
        get = _getter(settings)
        self.url = _reveal(get("remote_url", "")).strip()
        self.mode = str(get("remote_mode", OFF) or OFF).strip().lower()
        self.trust = str(get("remote_trust", SIGNED) or SIGNED).strip().lower()
        key = _reveal(get("remote_key", ""))
        self.key = key.encode("utf-8") if key else None
        self.token = _reveal(get("remote_token", ""))
        budget = get("remote_budget_ms", DEFAULT_BUDGET_MS)
        self.budget = (float(budget) if isinstance(budget, (int, float)) else DEFAULT_BUDGET_MS) / 1000.0
        self.problems: list[str] = []
        self.scheme = self.host = self.base = ""
        self.port: int | None = None
        self.auth: str | None = None
        if self.mode not in MODES:
            self.problems.append(f"remote_mode must be one of {', '.join(MODES)}, not {self.mode!r}")
            self.mode = OFF
        if self.trust not in TRUSTS:
            self.problems.append(f"remote_trust must be {SIGNED!r} or {UNSIGNED!r}, not {self.trust!r}")
            self.trust = SIGNED
        if self.mode == OFF:
            return
        if not self.url:
            self.problems.append("remote_mode is set but remote_url is not")
        else:
            self._parse_url()
        if self.key is None and self.trust != UNSIGNED:
            self.problems.append(
                'no remote_key: set the team key (AUTOCOMPILE_REMOTE_KEY), or remote_trust = "unsigned" '
                "to accept unsigned objects from this server (read-only)"
            )
        if self.key is None and self.mode == READ_WRITE:
            self.problems.append("remote_mode = read-write needs remote_key: without a key the remote tier is read-only")

    def _parse_url(self) -> None:
        from urllib.parse import unquote, urlsplit

        try:
            parts = urlsplit(self.url)
            port = parts.port
        except ValueError as exc:
            self.problems.append(f"remote_url is not a URL: {exc}")
            return
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.problems.append(f"remote_url must be an http:// or https:// URL, not {self.display_url()!r}")
            return
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, port
        self.base = parts.path.rstrip("/")
        user, password = parts.username, parts.password
        if self.token:
            self.auth = f"Bearer {self.token}"
        elif user is not None:
            import base64

            pair = f"{unquote(user)}:{unquote(password or '')}".encode()
            self.auth = "Basic " + base64.b64encode(pair).decode("ascii")

    def display_url(self) -> str:
        """The URL without credentials, for messages."""
        scheme, sep, rest = self.url.partition("://")
        host, slash, path = rest.partition("/")
        return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}"

    @property
    def usable(self) -> bool:
        return self.mode != OFF and not self.problems and bool(self.host)

    @property
    def readable(self) -> bool:
        return self.usable

    @property
    def writable(self) -> bool:
        return self.usable and self.mode == READ_WRITE and self.key is not None

    @property
    def read_through(self) -> bool:
        return self.usable and self.budget > 0


def _getter(settings: object):  # type: ignore[no-untyped-def]
    if isinstance(settings, dict):
        return settings.get

    def get(name: str, default: object) -> object:
        try:
            return settings[name]  # type: ignore[index]
        except KeyError:
            return default

    return get


# Addresses, pointers, envelopes -----------------------------------------------------


def _namespace(secret: bytes | None) -> bytes:
    if secret is None:
        return b"unsigned"
    import hmac

    return hmac.new(secret, b"autocompile namespace", "sha256").digest()[:16]


def ac_digest(config: Config, key: str) -> str:
    """The action-cache address of a content key: computable by any reader, no server trusted."""
    import hashlib

    return hashlib.sha256(_AC_DOMAIN + _namespace(config.key) + bytes.fromhex(key)).hexdigest()


def _mac(secret: bytes, data: "bytes | memoryview", domain: bytes = _SIGN_DOMAIN) -> bytes:
    import hmac

    mac = hmac.new(secret, domain, "sha256")
    mac.update(data)  # not ``domain + data``: a pack is megabytes
    return mac.digest()


def seal(config: Config, data: bytes, domain: bytes = _SIGN_DOMAIN) -> bytes:
    """The envelope of an object file (or, by ``domain``, a pack or pack list): signed with the team key, or marked unsigned."""
    if config.key is None:
        return ENVELOPE_MAGIC + b"\0" + bytes(32) + data
    return ENVELOPE_MAGIC + bytes((FLAG_SIGNED,)) + _mac(config.key, data, domain) + data


def _unseal(config: Config, blob: bytes, domain: bytes) -> memoryview:
    """What an envelope holds (a view: a pack is megabytes), once its signature (or the reader's
    trust in unsigned data) allows; raise :class:`Rejected`."""
    if len(blob) < ENVELOPE_HEADER or blob[: len(ENVELOPE_MAGIC)] != ENVELOPE_MAGIC:
        raise Rejected("not an autocompile envelope")
    flags = blob[len(ENVELOPE_MAGIC)]
    mac = blob[len(ENVELOPE_MAGIC) + 1 : ENVELOPE_HEADER]
    data = memoryview(blob)[ENVELOPE_HEADER:]
    if config.key is not None:
        import hmac

        if flags != FLAG_SIGNED:
            raise Rejected("unsigned object, and a key is required")
        if not hmac.compare_digest(mac, _mac(config.key, data, domain)):
            raise Rejected("signature does not verify")
    elif config.trust != UNSIGNED:
        raise Rejected("no key to verify with, and unsigned objects are not trusted")
    return data


def open_envelope(config: Config, blob: bytes, key: str) -> tuple[bytes, _store.Entry]:
    """Check an envelope completely: ``(the object file inside, its entry)``; raise :class:`Rejected`."""
    data = bytes(_unseal(config, blob, _SIGN_DOMAIN))
    return data, check_object(data, key)


def check_object(data: bytes, key: str) -> _store.Entry:
    """The object file ``data`` of ``key`` once it is whole and holds code; raise :class:`Rejected`."""
    try:
        entry = _store.unpack(data, key)
    except _store.CorruptEntry as exc:
        raise Rejected(f"bad object: {exc}") from None
    if entry.kind != _store.KIND_CODE:
        raise Rejected("not a code object")
    return entry


def pack(objects: "list[tuple[str, bytes]]") -> bytes:
    """Object files in one blob: a table (key, length) and the files, in key order."""
    objects = sorted(objects)
    table = b"".join(bytes.fromhex(key) + len(data).to_bytes(8, "little") for key, data in objects)
    return PACK_MAGIC + len(objects).to_bytes(4, "little") + table + b"".join(data for _key, data in objects)


def unpack_pack(data: bytes) -> "dict[str, memoryview]":
    """The object files of a pack by key (each still to be checked); raise :class:`Rejected`."""
    start = len(PACK_MAGIC) + 4
    if data[: len(PACK_MAGIC)] != PACK_MAGIC or len(data) < start:
        raise Rejected("not an autocompile pack")
    count = int.from_bytes(data[len(PACK_MAGIC) : start], "little")
    offset = start + 40 * count
    view, objects = memoryview(data), {}
    for n in range(count):
        row = data[start + 40 * n : start + 40 * (n + 1)]
        length = int.from_bytes(row[32:], "little")
        if len(row) != 40 or offset + length > len(data):
            raise Rejected("truncated pack")
        objects[row[:32].hex()] = view[offset : offset + length]
        offset += length
    if offset != len(data):
        raise Rejected("trailing bytes in pack")
    return objects


def encode_pack_list(packs: "list[tuple[str, dict[str, int]]]") -> bytes:
    """The pack list's body: per pack, its digest and its objects' keys with the sizes of their
    sources (a pull reads only sources of those sizes, and fetches only packs it needs)."""
    return PACK_LIST_MAGIC + b"".join(
        bytes.fromhex(digest)
        + len(objects).to_bytes(4, "little")
        + b"".join(bytes.fromhex(key) + size.to_bytes(8, "little") for key, size in sorted(objects.items()))
        for digest, objects in packs
    )


def decode_pack_list(data: bytes) -> "list[tuple[str, dict[str, int]]]":
    """The packs of a pack list's body, newest first, as ``(digest, {key: source size})``; raise :class:`Rejected`."""
    if data[: len(PACK_LIST_MAGIC)] != PACK_LIST_MAGIC:
        raise Rejected("not an autocompile pack list")
    packs, offset = [], len(PACK_LIST_MAGIC)
    while offset < len(data):
        count = int.from_bytes(data[offset + 32 : offset + 36], "little")
        end = offset + 36 + 40 * count
        if end > len(data):
            raise Rejected("truncated pack list")
        rows = range(offset + 36, end, 40)
        packs.append((data[offset : offset + 32].hex(), {data[n : n + 32].hex(): int.from_bytes(data[n + 32 : n + 40], "little") for n in rows}))
        offset = end
    return packs


def _pack_list_address(config: Config) -> str:
    """Where the list of a team's newest packs is: like ``ac_digest``, computable by any reader."""
    import hashlib

    return "ac/" + hashlib.sha256(_PACK_LIST_DOMAIN + _namespace(config.key)).hexdigest()


def pointer(key: str, digest: str, size: int) -> bytes:
    return POINTER_MAGIC + bytes.fromhex(key) + bytes.fromhex(digest) + size.to_bytes(8, "little")


def read_pointer(data: bytes, key: str) -> tuple[str, int]:
    """``(blob digest, blob size)`` from a pointer that must name ``key``; raise :class:`Rejected`."""
    if len(data) != POINTER_SIZE or data[: len(POINTER_MAGIC)] != POINTER_MAGIC:
        raise Rejected("not an autocompile pointer")
    start = len(POINTER_MAGIC)
    if data[start : start + 32].hex() != key:
        raise Rejected("pointer names another content key")
    size = int.from_bytes(data[start + 64 :], "little")
    if size > MAX_BLOB:
        raise Rejected("object too large")
    return data[start + 32 : start + 64].hex(), size


# HTTP -------------------------------------------------------------------------------

#: Limits on an answer's head, as ``http.client`` has them.
_MAX_LINE = 65536
_MAX_HEADERS = 100


def _open_socket(host: str, port: int, timeout: float, tls: bool):  # type: ignore[no-untyped-def]
    """A connected TCP socket (TLS-wrapped for https), with ``TCP_NODELAY`` as requests are written in two parts."""
    import _socket

    if tls:
        import socket
        import ssl

        sock = ssl.create_default_context().wrap_socket(socket.create_connection((host, port), timeout), server_hostname=host)
    else:
        # ``_socket``, not ``socket``: the same sockets without the enums ``socket`` builds at import (10-20 ms).
        error: OSError = OSError(f"{host}: no address")
        name = host.encode("ascii") if host.isascii() else host.encode("idna")  # a str would load the idna codec
        for family, kind, proto, _name, address in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
            sock = _socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(address)
                break
            except OSError as exc:
                sock.close()
                error = exc
        else:
            raise error
    sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    return sock


class _Connection:
    """One HTTP/1.1 connection: a request sent whole, its answer read by length, by chunks or to its end.

    Not ``http.client``: it imports the ``email`` package, 40 ms of every pull's
    start and of a process's first read-through miss. Every send and receive gets
    what is left of the request's deadline (``http.client`` would give each one the
    whole timeout), so a server dripping bytes cannot stretch a request beyond it.
    """

    def __init__(self, config: Config, timeout: float, deadline: float | None) -> None:
        self.timeout, self.deadline = timeout, deadline
        self.buffer = bytearray()
        tls = config.scheme == "https"
        self.sock = _open_socket(config.host, config.port or (443 if tls else 80), self._remaining(), tls)

    def close(self) -> None:
        self.sock.close()

    def _remaining(self) -> float:
        if self.deadline is None:
            return self.timeout
        remaining = self.deadline - monotonic()
        if remaining <= 0:
            raise TimeoutError("time budget spent")
        return min(remaining, self.timeout)

    def exchange(self, method: str, target: str, headers: dict[str, str], body: bytes | None,
                 deadline: float | None) -> tuple[int, bytes, bool]:
        """Send a request and read its answer: ``(status, body, whether the server closes the connection)``."""
        self.deadline = deadline
        lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        try:
            if any("\r" in line or "\n" in line for line in lines):
                raise ValueError("a line break")
            head = "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"
        except ValueError as exc:
            raise RemoteError(f"cannot send {method} {target[:40]}: {exc}") from None
        self._send(head)
        if body:
            self._send(body)
        while True:
            version, status = self._status_line()
            fields = self._headers()
            if status >= 200:  # 1xx answers are interim: the real one follows
                break
        closing = version != b"HTTP/1.1" or fields.get(b"connection", b"").strip().lower() == b"close"
        if method == "HEAD" or status in (204, 304):
            return status, b"", closing
        if fields.get(b"transfer-encoding", b"").strip().lower().endswith(b"chunked"):
            return status, self._chunked(), closing
        length = fields.get(b"content-length")
        if length is None:
            return status, self._to_end(), True
        if not length.strip().isdigit():
            raise RemoteError(f"bad Content-Length: {length[:20]!r}")
        if int(length) > MAX_BLOB:
            raise Rejected("answer too large")
        return status, self._exactly(int(length)), closing

    def _send(self, data: bytes) -> None:
        self.sock.settimeout(self._remaining())
        self.sock.sendall(data)

    def _fill(self) -> bool:
        """Receive more into the buffer; ``False`` at the end of the stream."""
        self.sock.settimeout(self._remaining())
        data = self.sock.recv(_MAX_LINE)
        self.buffer += data
        return bool(data)

    def _line(self) -> bytes:
        """The next line with its end; ``b""`` at the end of the stream."""
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[: end + 1])
                del self.buffer[: end + 1]
                return line
            if len(self.buffer) > _MAX_LINE:
                raise RemoteError("answer line too long")
            if not self._fill():
                line = bytes(self.buffer)
                self.buffer.clear()
                return line

    def _status_line(self) -> tuple[bytes, int]:
        line = self._line()
        if not line:  # a kept-alive connection the server closed: the caller may retry once
            raise ConnectionResetError("the server closed the connection")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
            raise RemoteError(f"not an HTTP answer: {line[:40]!r}")
        return parts[0], int(parts[1])

    def _headers(self) -> dict[bytes, bytes]:
        fields: dict[bytes, bytes] = {}
        for _ in range(_MAX_HEADERS):
            line = self._line()
            if not line.strip():
                return fields
            name, _colon, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        raise RemoteError("too many headers")

    def _exactly(self, size: int) -> bytes:
        body = bytearray(size)
        have = min(size, len(self.buffer))
        body[:have] = self.buffer[:have]
        del self.buffer[:have]
        view = memoryview(body)
        while have < size:
            self.sock.settimeout(self._remaining())
            received = self.sock.recv_into(view[have:])
            if not received:
                raise RemoteError("answer cut short")
            have += received
        return bytes(body)

    def _chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                size = int(self._line().split(b";", 1)[0], 16)
            except ValueError:
                raise RemoteError("bad chunk size") from None
            if size <= 0:
                break
            total += size
            if total > MAX_BLOB:
                raise Rejected("answer too large")
            chunks.append(self._exactly(size))
            self._line()  # the chunk's line end
        while self._line().strip():  # trailer fields, up to the blank line
            pass
        return b"".join(chunks)

    def _to_end(self) -> bytes:
        while self._fill():
            if len(self.buffer) > MAX_BLOB:
                raise Rejected("answer too large")
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


class Client:
    """One kept-alive HTTP/1.1 connection to the server (not shared between threads)."""

    def __init__(self, config: Config, timeout: float = BATCH_TIMEOUT) -> None:
        self.config = config
        self.timeout = timeout
        self._connection: _Connection | None = None
        self.bytes = 0

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except OSError:
                pass
            self._connection = None

    def request(self, method: str, path: str, body: bytes | None = None, deadline: float | None = None) -> tuple[int, bytes]:
        """``(status, body)``; one retry on a kept-alive connection the server closed meanwhile."""
        config = self.config
        host = f"[{config.host}]" if ":" in config.host else config.host
        headers = {"Host": f"{host}:{config.port}" if config.port else host, "User-Agent": "autocompile", "Accept-Encoding": "identity"}
        if config.auth:
            headers["Authorization"] = config.auth
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        target = f"{config.base}/{path}"
        for attempt in (0, 1):
            reused = self._connection is not None
            try:
                if self._connection is None:
                    self._connection = _Connection(config, self.timeout, deadline)
                status, data, closing = self._connection.exchange(method, target, headers, body, deadline)
            except (ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if not reused or attempt or (deadline is not None and monotonic() >= deadline):
                    raise RemoteError(f"{method} {path[:16]}...: {exc or type(exc).__name__}") from None
                continue
            except OSError as exc:
                self.close()
                what = "timed out" if isinstance(exc, TimeoutError) or "timed out" in str(exc) else str(exc) or type(exc).__name__
                raise RemoteError(f"{method} {config.display_url()}: {what}") from None
            except BaseException:
                self.close()
                raise
            if closing:
                self.close()
            self.bytes += len(data) + (len(body) if body else 0)
            return status, data
        raise RemoteError("unreachable")  # pragma: no cover

    def get(self, path: str, deadline: float | None = None) -> bytes | None:
        return self._found("GET", path, deadline)

    def head(self, path: str, deadline: float | None = None) -> bool:
        return self._found("HEAD", path, deadline) is not None

    def _found(self, method: str, path: str, deadline: float | None) -> bytes | None:
        """The body for 200, ``None`` for 404; any other status is an error."""
        status, data = self.request(method, path, deadline=deadline)
        if status == 200:
            return data
        if status == 404:
            return None
        raise RemoteError(f"{method} {path[:16]}...: HTTP {status}")

    def put(self, path: str, data: bytes) -> None:
        status, _ = self.request("PUT", path, body=data)
        if status not in (200, 201, 204):
            raise RemoteError(f"PUT {path[:16]}...: HTTP {status}")

    # Objects ------------------------------------------------------------------------

    def fetch(self, key: str, deadline: float | None = None) -> tuple[bytes, _store.Entry] | None:
        """The verified object file of ``key``, or ``None`` when the server has none.

        Raises :class:`RemoteError` (server trouble) or :class:`Rejected` (a bad answer).
        """
        found = self.get(f"ac/{ac_digest(self.config, key)}", deadline)
        if found is None:
            return None
        digest, size = read_pointer(found, key)
        blob = self._get_blob(digest, deadline)
        if blob is None:
            return None
        if len(blob) != size:
            raise Rejected("blob does not match its address")
        return open_envelope(self.config, blob, key)

    def has(self, key: str) -> bool:
        return self.head(f"ac/{ac_digest(self.config, key)}")

    def upload(self, key: str, data: bytes) -> None:
        """Publish an object file: the signed blob first, then the pointer to it."""
        blob = seal(self.config, data)
        digest = self._put_blob(blob)
        self.put(f"ac/{ac_digest(self.config, key)}", pointer(key, digest, len(blob)))

    def _get_blob(self, digest: str, deadline: float | None = None) -> bytes | None:
        """The blob at ``cas/<digest>``, ``None`` if absent; raise :class:`Rejected` if it is not the one addressed."""
        import hashlib

        blob = self.get(f"cas/{digest}", deadline)
        if blob is not None and hashlib.sha256(blob).hexdigest() != digest:
            raise Rejected("blob does not match its address")
        return blob

    def _put_blob(self, blob: bytes) -> str:
        """Store ``blob`` at its content address unless it is there already; return the address's digest."""
        import hashlib

        digest = hashlib.sha256(blob).hexdigest()
        if not self.head(f"cas/{digest}"):
            self.put(f"cas/{digest}", blob)
        return digest

    # Packs: a pull fetches a whole push in a few requests ------------------------------

    def pack_list(self) -> "list[tuple[str, dict[str, int]]]":
        """The newest packs, newest first, as :func:`decode_pack_list` gives them; ``[]`` when none was published."""
        found = self.get(_pack_list_address(self.config))
        if found is None:
            return []
        return decode_pack_list(_unseal(self.config, found, _PACK_LIST_DOMAIN))

    def fetch_pack(self, digest: str) -> "dict[str, memoryview]":
        """The object files of one pack, signature checked (each file still to be checked); raise if absent or bad."""
        blob = self._get_blob(digest)
        if blob is None:
            raise RemoteError(f"pack {digest[:16]}... is listed but gone")
        return unpack_pack(_unseal(self.config, blob, _PACK_DOMAIN))

    def publish_packs(self, objects: "list[tuple[str, bytes]]") -> int:
        """Upload ``objects`` as packs and put them first in the pack list; return how many packs.

        The list is read, changed and written back: two pushes at once may lose
        one's packs from it, which costs later pulls requests, never correctness.
        """
        if not objects:
            return 0
        batches: list[list[tuple[str, bytes]]] = [[]]
        size = 0
        for key, data in sorted(objects):
            if batches[-1] and size + len(data) > PACK_BYTES:
                batches.append([])
                size = 0
            batches[-1].append((key, data))
            size += len(data)
        packs = [
            (self._put_blob(seal(self.config, pack(batch), _PACK_DOMAIN)), {key: _store.source_size(data) for key, data in batch})
            for batch in batches
        ]
        try:
            current = self.pack_list()
        except Rejected:
            current = []  # a damaged list, or one of an older format, is replaced
        digests = {digest for digest, _objects in packs}
        newest = (packs + [listed for listed in current if listed[0] not in digests])[:MAX_PACKS]
        if newest != current:
            self.put(_pack_list_address(self.config), seal(self.config, encode_pack_list(newest), _PACK_LIST_DOMAIN))
        return len(packs)


# Read-through -----------------------------------------------------------------------

_state: dict[str, object] = {}  # per process: "config", "client", "skip_until", "breaker_read"
_lock = None


def _config_of(cache) -> Config | None:  # type: ignore[no-untyped-def]
    settings = getattr(cache, "remote", None)
    if settings is None:
        return None
    config = _state.get("config")
    if config is None or _state.get("settings") is not settings:
        config = Config(settings)
        _state["config"], _state["settings"] = config, settings
        for problem in config.problems:
            _log.warn_once("remote", f"remote tier off: {problem}")
    return config  # type: ignore[return-value]


def _breaker_path(cache) -> str:  # type: ignore[no-untyped-def]
    return os.path.join(cache.store.root, BREAKER_FILE)


def _tripped(cache) -> bool:  # type: ignore[no-untyped-def]
    """Whether read-through is paused, in this process or (read once) by another one."""
    now = time()
    if float(_state.get("skip_until", 0.0)) > now:  # type: ignore[arg-type]
        return True
    if not _state.get("breaker_read"):
        _state["breaker_read"] = True
        try:
            with open(_breaker_path(cache), "rb") as file:
                until = float(file.read(32) or 0)
        except (OSError, ValueError):
            until = 0.0
        if until > now:
            _state["skip_until"] = until
            return True
    return False


def trip(cache, seconds: float, reason: str) -> None:  # type: ignore[no-untyped-def]
    """Stop read-through for ``seconds``, in this process and in the others using this cache."""
    until = time() + seconds
    _state["skip_until"] = until
    _log.debug(f"remote: paused for {seconds:.0f} s ({reason})")
    if cache.store.writable:
        try:
            _store.write_atomic(_breaker_path(cache), f"{until:.3f}".encode())
        except OSError:
            pass


def reset_breaker(root: str) -> None:
    _state.pop("skip_until", None)
    _state.pop("breaker_read", None)
    try:
        os.unlink(os.path.join(root, BREAKER_FILE))
    except OSError:
        pass


def fetch_for_import(cache, key: str, fullname: str):  # type: ignore[no-untyped-def]
    """The code of ``key`` from the remote tier, after a local miss; ``None`` to compile.

    Bounded by ``remote_budget_ms`` from the moment it is called; never raises.
    On success the object is written to the local store, so the loader indexes
    it as if it had been found locally. In read-write mode a miss is queued for
    ``autocompile push --queue`` (one appended line; the importing process never uploads).
    """
    try:
        config = _config_of(cache)
        if config is None or not config.usable:
            return None
        if config.writable and cache.store.writable:
            _queue(cache, key)
        if not config.read_through or _tripped(cache):
            return None
        global _lock
        if _lock is None:
            import threading

            _lock = threading.Lock()
        if not _lock.acquire(blocking=False):  # another thread is asking: do not wait for it
            return None
        try:
            return _fetch_locked(cache, config, key, fullname)
        finally:
            _lock.release()
    except Exception as exc:  # a bug here must never break an import
        _log.debug(f"{fullname}: remote: internal error {exc!r}")
        return None


def _fetch_locked(cache, config: Config, key: str, fullname: str):  # type: ignore[no-untyped-def]
    from time import perf_counter_ns

    started = perf_counter_ns()
    _load_client_modules(config)
    deadline = monotonic() + config.budget
    client = _state.get("client")
    if client is None:
        client = _state["client"] = Client(config, timeout=max(config.budget, 0.001))
    before = client.bytes  # type: ignore[attr-defined]
    try:
        found = client.fetch(key, deadline)  # type: ignore[attr-defined]
    except Rejected as exc:
        _stats.count(REJECTED, fullname)
        _log.warn_once("remote-rejected", f"remote: discarded an object from {config.display_url()} ({exc})")
        _log.debug(f"{fullname}: remote rejected ({exc})")
        client.close()  # type: ignore[attr-defined]
        trip(cache, REJECTED_COOLDOWN_SECONDS, f"rejected: {exc}")
        return None
    except RemoteError as exc:
        _stats.count(ERROR, fullname)
        _log.debug(f"{fullname}: remote error ({exc})")
        trip(cache, COOLDOWN_SECONDS, str(exc))
        return None
    finally:
        elapsed = perf_counter_ns() - started
        _stats.count(TIME_NS, fullname, elapsed)
        _stats.count(BYTES, fullname, client.bytes - before)  # type: ignore[attr-defined]
    if found is None:
        _stats.count(MISS, fullname)
        _log.debugging() and _log.debug(f"{fullname}: remote miss ({elapsed / 1e6:.1f} ms)")
        return None
    data, entry = found
    code = _unmarshal(entry.payload)
    if code is None:
        _stats.count(REJECTED, fullname)
        return None
    if cache.store.writable:
        try:
            cache.store.write_object(key, data)
        except OSError:
            pass
    _stats.count(HIT, fullname)
    _log.debugging() and _log.debug(f"{fullname}: remote hit ({elapsed / 1e6:.1f} ms, {len(data)} bytes)")
    return code


def _load_client_modules(config: Config) -> None:
    """Import what a request needs before its deadline starts: the budget bounds waiting on the
    server, and loading these once per process (a few ms, ``ssl`` tens) would otherwise spend it."""
    import _socket  # noqa: F401
    import hashlib  # noqa: F401
    import hmac  # noqa: F401

    if config.scheme == "https":
        import ssl  # noqa: F401


def _unmarshal(payload: bytes):  # type: ignore[no-untyped-def]
    import marshal

    try:
        code = marshal.loads(payload)
    except (EOFError, ValueError, TypeError):
        return None
    return code if type(code) is type(_unmarshal.__code__) else None


def _queue(cache, key: str) -> None:  # type: ignore[no-untyped-def]
    """Append ``key`` to the push queue: one ``O_APPEND`` write, atomic for a line this short."""
    try:
        fd = os.open(os.path.join(cache.store.root, QUEUE_FILE), os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError:
        return
    try:
        os.write(fd, f"{key}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def take_queue(root: str) -> list[str]:
    """Take the queued keys (the file is renamed away first, so appends are never lost)."""
    path = os.path.join(root, QUEUE_FILE)
    taken = f"{path}.{os.getpid()}-{os.urandom(4).hex()}"
    try:
        os.rename(path, taken)
    except FileNotFoundError:
        return []
    try:
        with open(taken, "rb") as file:
            lines = file.read().decode("ascii", "replace").split()
    finally:
        os.unlink(taken)
    keys = dict.fromkeys(line for line in lines if len(line) == 2 * _keys.KEY_BYTES and _is_hex(line))
    return list(keys)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def explain(settings: object, cache, key: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """``(verdict, reason)`` for ``explain``: would a local miss of ``key`` be served remotely?

    Asks the server (``HEAD``/``GET`` with the batch timeout) without writing anything.
    """
    config = Config(settings)
    if config.mode == OFF:
        return "off", "remote tier off (remote_mode = off)"
    if config.problems:
        return "misconfigured", "; ".join(config.problems)
    if not config.read_through:
        return "batch only", "read-through off (remote_budget_ms = 0): only `autocompile pull` fetches"
    try:
        until = float(open(os.path.join(cache.store.root, BREAKER_FILE), "rb").read(32) or 0)
    except (OSError, ValueError):
        until = 0.0
    if until > time():
        return "paused", f"read-through paused for {until - time():.0f} s more after a failure (circuit breaker)"
    client = Client(config, timeout=BATCH_TIMEOUT)
    try:
        found = client.fetch(key)
    except Rejected as exc:
        return "rejected", f"the server's object would be discarded: {exc}"
    except RemoteError as exc:
        return "error", f"the server cannot be used: {exc}"
    finally:
        client.close()
    if found is None:
        return "remote miss", f"{config.display_url()} has no verified object for it: it would be compiled"
    return "remote hit", f"a verified object on {config.display_url()} would be fetched (budget {config.budget * 1000:g} ms)"


# doctor -------------------------------------------------------------------------------


def check_remote(settings: object) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """``(rows, warnings, problems)`` for ``doctor``: URL, credentials, trust, round-trip time."""
    config = Config(settings)
    if config.mode == OFF and not config.problems:
        return [("remote tier", "off")], [], []
    rows = [
        ("remote tier", f"{config.mode} {config.display_url() or '-'}"),
        ("remote credentials", "bearer token" if config.token else "basic auth" if config.auth else "none"),
        ("remote signing", "team key (HMAC-SHA256)" if config.key else f"none (trust {config.trust})"),
        ("read-through", f"{config.budget * 1000:g} ms budget per import" if config.read_through else "off"),
    ]
    warnings: list[str] = []
    problems = list(config.problems)
    if config.key is None and config.trust == UNSIGNED:
        warnings.append(
            'remote_trust = "unsigned": code from the server is run without a signature; anyone who can '
            "write to the server can run code on this machine"
        )
    if config.scheme == "http" and config.auth and config.host not in ("localhost", "127.0.0.1", "::1"):
        warnings.append("credentials are sent over plain http")
    if not config.usable:
        return rows, warnings, problems
    client = Client(config, timeout=5.0)
    try:
        started = monotonic()
        status, _ = client.request("HEAD", f"ac/{'0' * 64}")
        rtt = monotonic() - started
        started = monotonic()
        client.request("HEAD", f"ac/{'0' * 64}")
        rtt = min(rtt, monotonic() - started)
    except (RemoteError, Rejected) as exc:
        problems.append(f"remote server: {exc}")
        return rows, warnings, problems
    finally:
        client.close()
    rows.append(("remote round trip", f"{rtt * 1000:.1f} ms (HTTP {status})"))
    if status in (401, 403):
        problems.append(f"remote server refuses the credentials (HTTP {status})")
    elif status not in (200, 404):
        problems.append(f"remote server answers HTTP {status}")
    elif config.read_through and 2 * rtt > config.budget:
        warnings.append(
            f"two round trips ({2 * rtt * 1000:.1f} ms) exceed remote_budget_ms ({config.budget * 1000:g}): "
            "read-through will rarely succeed; raise the budget or use `autocompile pull`"
        )
    return rows, warnings, problems
