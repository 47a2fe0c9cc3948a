"""The remote tier against a real nginx (WebDAV ``PUT``) on a loopback port, and a faulty proxy.

Skipped as a whole when nginx cannot be started (``.ci/run`` installs it on Debian).
Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import http.client
import http.server
import json
import marshal
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from autocompile import _config, _loader, _remote, _store

from conftest import child_env, run_python, settle, write_tree

KEY = "team-key-for-tests"
MODULES = {f"rpkg/m{i}.py": f"VALUE = {i} * 7\ndef f():\n    return {i!r}\n" for i in range(12)}
MODULES["rpkg/__init__.py"] = "NAME = 'rpkg'\n"
IMPORT_ALL = "import rpkg\n" + "".join(f"import rpkg.m{i}\n" for i in range(12))
CHECK_ALL = IMPORT_ALL + "assert [getattr(rpkg, f'm{i}').VALUE for i in range(12)] == [i * 7 for i in range(12)]\nprint('OK')\n"



# A real nginx ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    binary = _nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    prefix = tmp_path_factory.mktemp("nginx")
    (prefix / "root").mkdir()
    (prefix / "body").mkdir()
    port = _free_port()
    (prefix / "nginx.conf").write_text(
        f"""
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/root;
        location / {{
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw;
            client_max_body_size 64m;
        }}
    }}
}}
"""
    )
    process = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.skip(f"nginx did not start: {process.stderr.read().decode(errors='replace')[-500:]}")  # type: ignore[union-attr]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        pytest.skip("nginx did not listen in time")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("PUT", "/probe/x", body=b"x")
    status = connection.getresponse().status
    connection.close()
    if status not in (200, 201, 204):
        process.kill()
        pytest.skip(f"this nginx does not take PUT (HTTP {status}): no WebDAV module")
    yield {"port": port, "root": prefix / "root"}
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()


_bases = iter(range(1_000_000))


@pytest.fixture
def base(nginx) -> str:  # type: ignore[no-untyped-def]
    """A fresh, empty namespace on the server for each test."""
    return f"http://127.0.0.1:{nginx['port']}/t{next(_bases)}-{os.getpid()}"


# A faulty proxy in front of it ---------------------------------------------------------------


class FaultyProxy:
    """Forwards to nginx; ``mode`` is pass, slow, error (500s), tamper (a flipped byte in CAS bodies) or drip."""

    def __init__(self, upstream_port: int) -> None:
        self.mode = "pass"
        self.delay = 3.0
        self.requests = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                proxy.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.mode == "slow":
                    time.sleep(proxy.delay)
                if proxy.mode == "error":
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=10)
                upstream.request(self.command, self.path, body=body if self.command == "PUT" else None)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                if proxy.mode == "tamper" and self.command == "GET" and "/cas/" in self.path and data:
                    data = data[:-1] + bytes((data[-1] ^ 1,))
                self.send_response(response.status)
                self.send_header("Content-Length", str(len(data) if self.command != "HEAD" else response.getheader("Content-Length") or 0))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if proxy.mode == "drip":
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        time.sleep(0.02)
                else:
                    self.wfile.write(data)

            do_GET = do_PUT = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(nginx):  # type: ignore[no-untyped-def]
    faulty = FaultyProxy(nginx["port"])
    yield faulty
    faulty.close()


# Helpers --------------------------------------------------------------------------------------


def remote_env(url: str, **extra: str | None) -> dict[str, str]:
    env = {"AUTOCOMPILE_REMOTE_URL": url, "AUTOCOMPILE_REMOTE_MODE": "read-write", "AUTOCOMPILE_REMOTE_KEY": KEY}
    env.update(extra)
    return {name: value for name, value in env.items() if value is not None}


def config_of(url: str, **extra: str | None) -> _remote.Config:
    """The remote tier's configuration a process with ``remote_env(url, **extra)`` would have."""
    return _remote.Config(_config.load({**remote_env(url, **extra), "AUTOCOMPILE_CONFIG": os.devnull + ".missing"}))


def remote_cli(*args: str, cache_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``autocompile pull|push``."""
    return subprocess.run(
        [sys.executable, "-m", "autocompile", *args], env=child_env(cache_dir, **env), capture_output=True, text=True, timeout=300
    )


def remote_json(*args: str, cache_dir: Path, **env: str) -> dict:
    result = remote_cli(*args, "--json", cache_dir=cache_dir, **env)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def outcomes(stderr: str) -> dict[str, int]:
    """``AUTOCOMPILE_LOG=debug`` lines of the test package, counted by outcome (``compiled``, ``hit``, ``remote hit`` ...)."""
    counts: dict[str, int] = {}
    for line in stderr.splitlines():
        if line.startswith("autocompile: rpkg") and ": " in line[13:]:
            outcome = line[13:].split(": ", 1)[1].split(" (")[0].split(";")[0]
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def import_all(tree: Path, cache: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    code = "import time\n_t = time.perf_counter()\n" + CHECK_ALL + "print('ELAPSED', time.perf_counter() - _t)\n"
    result = run_python(code, cache, cwd=tree, AUTOCOMPILE_LOG="debug", **env)
    assert "OK" in result.stdout, result.stderr
    elapsed = float(result.stdout.split("ELAPSED")[1])
    return result, elapsed


@pytest.fixture
def machines(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Two machines' worth: the same sources at two paths, two empty cache directories."""
    first = write_tree(tmp_path / "a" / "venv" / "site", MODULES)
    second = write_tree(tmp_path / "b" / "other-venv" / "lib", MODULES)
    settle()
    return first, tmp_path / "cache-a", second, tmp_path / "cache-b"


def publish(tree: Path, cache: Path, url: str) -> dict:
    """Machine A: compile by importing, then push."""
    run_python(CHECK_ALL, cache, cwd=tree)
    return remote_json("push", str(tree / "rpkg"), cache_dir=cache, **remote_env(url))


# Tests: the two-machine round trip -----------------------------------------------------------


def test_push_then_pull_into_an_empty_cache_serves_imports_with_zero_compiles(machines, base):  # type: ignore[no-untyped-def]
    tree_a, cache_a, tree_b, cache_b = machines
    pushed = publish(tree_a, cache_a, base)
    assert (pushed["pushed"], pushed["failed"]) == (13, 0), pushed
    again = remote_json("push", str(tree_a / "rpkg"), cache_dir=cache_a, **remote_env(base))
    assert (again["pushed"], again["present"]) == (0, 13)
    everything = remote_json("push", "--all", cache_dir=cache_a, **remote_env(base))
    assert (everything["pushed"], everything["present"]) == (0, 13), everything

    pulled = remote_json("pull", str(tree_b / "rpkg"), cache_dir=cache_b, **remote_env(base, AUTOCOMPILE_REMOTE_MODE="read"))
    assert (pulled["fetched"], pulled["missing"], pulled["failed"], pulled["rejected"]) == (13, 0, 0, 0), pulled
    result, _ = import_all(tree_b, cache_b)  # remote tier off: all local now
    assert outcomes(result.stderr) == {"hit": 13}, result.stderr

    repeat = remote_json("pull", str(tree_b / "rpkg"), cache_dir=cache_b, **remote_env(base, AUTOCOMPILE_REMOTE_MODE="read"))
    assert (repeat["fetched"], repeat["present"]) == (0, 13)


def test_pull_takes_a_push_from_its_packs_in_a_few_requests(machines, base, proxy):  # type: ignore[no-untyped-def]
    """A push publishes its objects as a signed pack: a pull reads the pack list and the pack (two
    requests, not two per object), does not ask for modules no one pushed (``--each`` does), and
    fetches no pack that lacks what it wants."""
    tree_a, cache_a, tree_b, cache_b = machines
    url = base.replace(str(base.split("/")[2]), f"127.0.0.1:{proxy.port}")
    assert publish(tree_a, cache_a, url)["packs"] == 1
    (tree_b / "rpkg" / "unused.py").write_text("NEVER_IMPORTED = True\n")
    settle()
    before = proxy.requests
    pulled = remote_json("pull", str(tree_b / "rpkg"), cache_dir=cache_b, **remote_env(url, AUTOCOMPILE_REMOTE_MODE="read"))
    assert (pulled["fetched"], pulled["missing"], pulled["rejected"]) == (13, 1, 0), pulled
    assert proxy.requests - before == 2
    result, _ = import_all(tree_b, cache_b)
    assert outcomes(result.stderr) == {"hit": 13}, result.stderr
    before = proxy.requests
    each = remote_json("pull", "--each", str(tree_b / "rpkg"), cache_dir=cache_b, **remote_env(url, AUTOCOMPILE_REMOTE_MODE="read"))
    assert (each["present"], each["missing"]) == (13, 1) and proxy.requests - before == 2  # the list, the one object: no pack holds it
    # A third path whose objects are all in the local cache already (not yet indexed there): the list only.
    tree_c = write_tree(tree_b.parent.parent / "c" / "site", MODULES)
    settle()
    before = proxy.requests
    local = remote_json("pull", str(tree_c / "rpkg"), cache_dir=cache_b, **remote_env(url, AUTOCOMPILE_REMOTE_MODE="read"))
    assert (local["present"], local["fetched"]) == (13, 0) and proxy.requests - before == 1, local


def test_a_pack_that_fails_its_checks_is_skipped_whole(machines, base):  # type: ignore[no-untyped-def]
    """A pack replaced on the server (its digest no longer matches) is not used: every object is
    then fetched on its own and checked as always."""
    tree_a, cache_a, tree_b, cache_b = machines
    publish(tree_a, cache_a, base)
    client = _remote.Client(config_of(base))
    ((digest, _objects),) = client.pack_list()
    client.put(f"cas/{digest}", _remote.seal(config_of(base), _remote.pack([]), b"autocompile-pack-v1\0"))
    client.close()
    pulled = remote_json("pull", str(tree_b / "rpkg"), cache_dir=cache_b, **remote_env(base, AUTOCOMPILE_REMOTE_MODE="read"))
    assert (pulled["fetched"], pulled["rejected"], pulled["missing"]) == (13, 0, 0), pulled


def test_a_bad_object_in_a_good_pack_is_rejected_alone(machines, base):  # type: ignore[no-untyped-def]
    """A pack signed with the team key can still hold a damaged object: the pull checks each
    object before writing it, rejects that one, and keeps the others."""
    tree_a, cache_a, tree_b, cache_b = machines
    publish(tree_a, cache_a, base)
    client = _remote.Client(config_of(base))
    ((digest, _objects),) = client.pack_list()
    objects = sorted((key, bytes(data)) for key, data in client.fetch_pack(digest).items())
    bad_key, bad = objects[0]
    objects[0] = (bad_key, bad[:-1] + bytes([bad[-1] ^ 1]))
    assert client.publish_packs(objects) == 1
    client.close()
    result = remote_cli("pull", "--json", str(tree_b / "rpkg"), cache_dir=cache_b, **remote_env(base, AUTOCOMPILE_REMOTE_MODE="read"))
    pulled = json.loads(result.stdout)
    assert result.returncode == 1 and (pulled["fetched"], pulled["rejected"]) == (12, 1), pulled
    assert [failure["key"] for failure in pulled["failures"]] == [bad_key]
    imported, _ = import_all(tree_b, cache_b)
    assert outcomes(imported.stderr) == {"hit": 12, "compiled": 1}, imported.stderr


def test_pull_reports_what_the_server_lacks(machines, base):  # type: ignore[no-untyped-def]
    _tree_a, _cache_a, tree_b, cache_b = machines
    pulled = remote_json("pull", str(tree_b / "rpkg"), cache_dir=cache_b, **remote_env(base))
    assert (pulled["fetched"], pulled["missing"]) == (0, 13)


def test_read_through_serves_a_miss_within_the_budget(machines, base):  # type: ignore[no-untyped-def]
    tree_a, cache_a, tree_b, cache_b = machines
    publish(tree_a, cache_a, base)
    result, _ = import_all(tree_b, cache_b, **remote_env(base, AUTOCOMPILE_REMOTE_MODE="read", AUTOCOMPILE_REMOTE_BUDGET_MS="2000"))
    seen = outcomes(result.stderr)
    assert seen.get("remote hit") == 13 and "compiled" not in seen, result.stderr
    # Fetched objects are now local: the next start is all hits, without the network.
    result, _ = import_all(tree_b, cache_b)
    assert outcomes(result.stderr) == {"hit": 13}


def test_read_through_loads_its_modules_outside_the_budget(machines, base):  # type: ignore[no-untyped-def]
    """The budget bounds waiting on the server: a process's first miss, which also loads the HTTP
    client, ``hashlib`` and ``hmac``, is still served (it was not while ``http.client`` was that client)."""
    tree_a, cache_a, tree_b, cache_b = machines
    publish(tree_a, cache_a, base)
    env = remote_env(base, AUTOCOMPILE_REMOTE_MODE="read", AUTOCOMPILE_REMOTE_BUDGET_MS="50")
    result = run_python("import rpkg.m0\nprint('OK')\n", cache_b, cwd=tree_b, AUTOCOMPILE_LOG="debug", **env)
    seen = outcomes(result.stderr)
    assert seen.get("remote hit") == 2 and "compiled" not in seen, result.stderr

def test_read_write_queues_misses_and_push_queue_drains_them(machines, base):  # type: ignore[no-untyped-def]
    tree_a, cache_a, tree_b, cache_b = machines
    result, _ = import_all(tree_a, cache_a, **remote_env(base, AUTOCOMPILE_REMOTE_BUDGET_MS="2000"))
    assert outcomes(result.stderr).get("compiled") == 13
    assert len((cache_a / _remote.QUEUE_FILE).read_text().split()) == 13
    drained = remote_json("push", "--queue", cache_dir=cache_a, **remote_env(base))
    assert drained["pushed"] == 13 and not (cache_a / _remote.QUEUE_FILE).exists()
    pulled = remote_json("pull", str(tree_b / "rpkg"), cache_dir=cache_b, **remote_env(base))
    assert pulled["fetched"] == 13


# Tests: the network failing in every way ------------------------------------------------------


@pytest.mark.parametrize("mode", ["down", "slow", "error", "drip"])
def test_a_failing_server_costs_at_most_the_budget_once(machines, base, proxy, mode):  # type: ignore[no-untyped-def]
    tree_a, cache_a, tree_b, cache_b = machines
    url = base.replace(str(base.split("/")[2]), f"127.0.0.1:{proxy.port}")
    publish(tree_a, cache_a, url)
    if mode == "down":
        url = f"http://127.0.0.1:{_free_port()}/nothing"
    proxy.mode = mode
    result, elapsed = import_all(tree_b, cache_b, **remote_env(url, AUTOCOMPILE_REMOTE_MODE="read", AUTOCOMPILE_REMOTE_BUDGET_MS="100"))
    seen = outcomes(result.stderr)
    assert seen.get("remote error") == 1 and seen.get("compiled") == 13, result.stderr  # then the breaker is open
    assert elapsed < 1.5, elapsed  # one budget (100 ms) plus 13 compiles, not 13 x 3 s
    assert float((cache_b / _remote.BREAKER_FILE).read_text()) > time.time()
    # Another process sees the open breaker and does not ask at all.
    requests = proxy.requests
    shutil.rmtree(cache_b / "objects")
    shutil.rmtree(cache_b / "index")
    result, _ = import_all(tree_b, cache_b, **remote_env(url, AUTOCOMPILE_REMOTE_MODE="read", AUTOCOMPILE_REMOTE_BUDGET_MS="100"))
    assert "remote error" not in outcomes(result.stderr) and proxy.requests == requests


def test_tampered_bodies_are_rejected_and_never_run(machines, base, proxy):  # type: ignore[no-untyped-def]
    tree_a, cache_a, tree_b, cache_b = machines
    url = base.replace(str(base.split("/")[2]), f"127.0.0.1:{proxy.port}")
    publish(tree_a, cache_a, url)
    proxy.mode = "tamper"
    pulled = remote_json("pull", str(tree_b / "rpkg"), cache_dir=cache_b, **remote_env(url))
    assert (pulled["fetched"], pulled["rejected"]) == (0, 13), pulled
    result, _ = import_all(tree_b, cache_b, **remote_env(url, AUTOCOMPILE_REMOTE_BUDGET_MS="2000"))
    seen = outcomes(result.stderr)
    assert seen.get("remote rejected") == 1 and seen.get("compiled") == 13, result.stderr


def _forge(url: str, tree: Path, signing_key: bytes | None, marker: Path) -> None:
    """A writer without the team key plants code for rpkg.m3 at the address readers look up."""
    cache = _loader.CodeCache(_store.Store(str(tree / "unused"), writable=False), sys.flags.optimize)
    path = tree / "rpkg" / "m3.py"
    key = cache.content_key(path.read_bytes())
    evil = compile(f"open({str(marker)!r}, 'w').write('pwned')\nVALUE = -1\n", str(path), "exec")
    data = _store.pack(_store.KIND_CODE, key, marshal.dumps(evil), {"name": "rpkg.m3"})
    reader = config_of(url)  # the readers' address: the strongest attacker knows it
    writer = config_of(url, AUTOCOMPILE_REMOTE_KEY=None)
    writer.key = signing_key
    blob = _remote.seal(writer, data)
    import hashlib

    digest = hashlib.sha256(blob).hexdigest()
    client = _remote.Client(reader)
    client.put(f"cas/{digest}", blob)
    client.put(f"ac/{_remote.ac_digest(reader, key)}", _remote.pointer(key, digest, len(blob)))
    client.close()


@pytest.mark.parametrize("signing_key", [b"not-the-team-key", None], ids=["wrong-key", "unsigned"])
def test_forged_objects_are_rejected_and_never_run(machines, base, signing_key, tmp_path):  # type: ignore[no-untyped-def]
    _tree_a, _cache_a, tree_b, cache_b = machines
    marker = tmp_path / "pwned"
    _forge(base, tree_b, signing_key, marker)
    pulled = remote_json("pull", str(tree_b / "rpkg"), cache_dir=cache_b, **remote_env(base))
    assert (pulled["rejected"], pulled["missing"], pulled["fetched"]) == (1, 12, 0), pulled
    result, _ = import_all(tree_b, cache_b, **remote_env(base, AUTOCOMPILE_REMOTE_BUDGET_MS="2000"))
    assert outcomes(result.stderr).get("remote rejected") == 1
    assert not marker.exists()


def test_unsigned_objects_need_explicit_trust(machines, base, tmp_path):  # type: ignore[no-untyped-def]
    _tree_a, _cache_a, tree_b, cache_b = machines
    unsigned = remote_env(base, AUTOCOMPILE_REMOTE_MODE="read", AUTOCOMPILE_REMOTE_KEY=None)
    # Without a key and without remote_trust = "unsigned", the tier is off: nothing is asked.
    result = remote_cli("pull", str(tree_b / "rpkg"), cache_dir=cache_b, **unsigned)
    assert result.returncode == 1 and "remote_trust" in result.stderr
    # Push never works without a key.
    result = remote_cli("push", "--all", cache_dir=cache_b, **remote_env(base, AUTOCOMPILE_REMOTE_KEY=None, AUTOCOMPILE_REMOTE_TRUST="unsigned"))
    assert result.returncode == 1 and "read-only" in result.stderr


def test_unsigned_trust_reads_unsigned_objects(machines, base, tmp_path):  # type: ignore[no-untyped-def]
    _tree_a, _cache_a, tree_b, cache_b = machines
    unsigned = remote_env(base, AUTOCOMPILE_REMOTE_MODE="read", AUTOCOMPILE_REMOTE_KEY=None, AUTOCOMPILE_REMOTE_TRUST="unsigned")
    config = config_of(base, AUTOCOMPILE_REMOTE_MODE="read", AUTOCOMPILE_REMOTE_KEY=None, AUTOCOMPILE_REMOTE_TRUST="unsigned")
    cache = _loader.CodeCache(_store.Store(str(tmp_path / "x"), writable=False), sys.flags.optimize)
    source = (tree_b / "rpkg" / "m1.py").read_bytes()
    key = cache.content_key(source)
    data = _store.pack(_store.KIND_CODE, key, marshal.dumps(compile(source, "m1.py", "exec")), {})
    client = _remote.Client(config)
    writer = config
    blob = _remote.seal(writer, data)
    import hashlib

    digest = hashlib.sha256(blob).hexdigest()
    client.put(f"cas/{digest}", blob)
    client.put(f"ac/{_remote.ac_digest(config, key)}", _remote.pointer(key, digest, len(blob)))
    client.close()
    pulled = remote_json("pull", str(tree_b / "rpkg"), cache_dir=cache_b, **unsigned)
    assert (pulled["fetched"], pulled["missing"]) == (1, 12)
    # The same unsigned object is rejected by a reader that has a key.
    keyed = remote_json("pull", str(tree_b / "rpkg"), cache_dir=tmp_path / "keyed", **remote_env(base, AUTOCOMPILE_REMOTE_MODE="read"))
    assert keyed["fetched"] == 0 and keyed["missing"] == 13  # another namespace: it is not even found


# Tests: no server needed ----------------------------------------------------------------------


def test_envelope_checks() -> None:
    config = config_of("http://127.0.0.1:9/x")
    key = "ab" * 32
    data = _store.pack(_store.KIND_CODE, key, marshal.dumps(compile("X = 1", "m", "exec")), {})
    blob = _remote.seal(config, data)
    assert _remote.open_envelope(config, blob, key)[1].key == key
    with pytest.raises(_remote.Rejected, match="key does not match"):
        _remote.open_envelope(config, blob, "cd" * 32)
    flipped = blob[:-1] + bytes((blob[-1] ^ 1,))
    with pytest.raises(_remote.Rejected, match="signature"):
        _remote.open_envelope(config, flipped, key)
    other = config_of("http://127.0.0.1:9/x", AUTOCOMPILE_REMOTE_KEY="other")
    with pytest.raises(_remote.Rejected, match="signature"):
        _remote.open_envelope(other, blob, key)
    assert _remote.ac_digest(config, key) != _remote.ac_digest(other, key)
    with pytest.raises(_remote.Rejected, match="another content key"):
        _remote.read_pointer(_remote.pointer(key, "00" * 32, 10), "cd" * 32)


def test_pack_checks() -> None:
    config = config_of("http://127.0.0.1:9/x")
    objects = [(f"{n:02x}" * 32, _store.pack(_store.KIND_CODE, f"{n:02x}" * 32, marshal.dumps(compile(f"X = {n}", "m", "exec")), {})) for n in range(3)]
    packed = _remote.pack(objects)
    assert {key: bytes(data) for key, data in _remote.unpack_pack(packed).items()} == dict(objects)
    for damaged in (packed[:-1], packed + b"x", b"ACPK\x02" + packed[5:], packed[:9]):
        with pytest.raises(_remote.Rejected):
            _remote.unpack_pack(damaged)
    # Domain separation: an object's envelope is no pack list, and a pack's envelope no object.
    sealed = _remote.seal(config, packed, b"autocompile-pack-v1\0")
    with pytest.raises(_remote.Rejected, match="signature"):
        _remote.open_envelope(config, sealed, objects[0][0])
    assert _remote._unseal(config, sealed, b"autocompile-pack-v1\0") == packed


def test_pack_list_carries_keys_and_source_sizes() -> None:
    """A pull reads only the sources whose size a listed pack has, and fetches only the packs that
    hold a key it wants: the list must give both back exactly."""
    packs = [("ab" * 32, {"01" * 32: 0, "02" * 32: 7, "03" * 32: 2**40}), ("cd" * 32, {})]
    body = _remote.encode_pack_list(packs)
    assert _remote.decode_pack_list(body) == packs
    assert _remote.decode_pack_list(_remote.PACK_LIST_MAGIC) == []
    for damaged in (body[:-1], b"ACPL\x01" + body[5:], body[:40]):
        with pytest.raises(_remote.Rejected):
            _remote.decode_pack_list(damaged)


# Tests: the HTTP client against a scripted server ----------------------------------------------


class ScriptedServer:
    """A raw HTTP server on a loopback port: each request gets the next scripted answer, sent as
    is; ``None`` closes the connection instead (a kept-alive connection the server dropped)."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            connection, _ = self.sock.accept()
            self.connections += 1
            with connection, connection.makefile("rb") as reader:
                while self.answers:
                    head = b""
                    while (line := reader.readline()) not in (b"\r\n", b""):
                        head += line
                    if not head:
                        break
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
                    self.requests.append(head + b"\r\n" + reader.read(length))
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    connection.sendall(answer)
                    if answer.startswith(b"HTTP/1.0") or b"Connection: close" in answer:
                        break
        self.sock.close()


def test_http_client_reads_every_framing_and_reuses_its_connection() -> None:
    body = os.urandom(100_000)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:1], body[1:70_000], body[70_000:]))
    server = ScriptedServer([
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\nX-Trailer: yes\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",  # HEAD: a length, no body
        None,  # dropped: the client asks again on a new connection
        b"HTTP/1.0 200 OK\r\n\r\nuntil the end",  # no length: the body ends with the connection
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ])
    client = _remote.Client(config_of(f"http://127.0.0.1:{server.port}/base", AUTOCOMPILE_REMOTE_TOKEN="tok"))
    assert client.request("GET", "a") == (200, b"hello")
    assert client.request("GET", "b") == (200, body)
    assert client.request("GET", "c") == (404, b"not found")
    assert client.request("HEAD", "d") == (200, b"")
    assert client.request("GET", "e") == (200, b"until the end")
    assert client.request("PUT", "f", body=b"data") == (201, b"")
    assert server.connections == 3
    first = server.requests[0].decode()
    assert first.startswith("GET /base/a HTTP/1.1\r\n") and f"Host: 127.0.0.1:{server.port}\r\n" in first
    assert "Authorization: Bearer tok\r\n" in first
    assert server.requests[4] == server.requests[5]  # the dropped request, asked again
    assert server.requests[6].endswith(b"Content-Length: 4\r\n\r\ndata")


@pytest.mark.parametrize(
    "answer, error",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (_remote.MAX_BLOB + 1), _remote.Rejected),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", _remote.RemoteError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nshort", _remote.RemoteError),
        (b"SSH-2.0-OpenSSH\r\n\r\n", _remote.RemoteError),
    ],
    ids=["too large", "bad chunk", "cut short", "not http"],
)
def test_http_client_refuses_bad_answers(answer: bytes, error: type) -> None:
    server = ScriptedServer([answer])
    client = _remote.Client(config_of(f"http://127.0.0.1:{server.port}/base"), timeout=5)
    with pytest.raises(error):
        client.request("GET", "x")
    assert client._connection is None  # closed: never reused after a bad answer


def test_http_client_sends_no_header_with_a_line_break() -> None:
    server = ScriptedServer([b"HTTP/1.1 204 No Content\r\n\r\n"])
    client = _remote.Client(config_of(f"http://127.0.0.1:{server.port}/base", AUTOCOMPILE_REMOTE_TOKEN="tok\r\nX-Injected: 1"))
    with pytest.raises(_remote.RemoteError, match="line break"):
        client.request("GET", "x")
    assert server.requests == []


def test_http_client_speaks_https_and_verifies_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = b"over tls: " + self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://localhost:{server.server_address[1]}/base"
    try:
        with pytest.raises(_remote.RemoteError, match="CERTIFICATE_VERIFY_FAILED"):
            _remote.Client(config_of(url), timeout=5).request("GET", "x")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        client = _remote.Client(config_of(url), timeout=5)
        assert client.request("GET", "x") == (200, b"over tls: /base/x")
        assert client.request("GET", "y") == (200, b"over tls: /base/y")  # the same connection, kept alive
        client.close()
    finally:
        server.shutdown()
        server.server_close()


def test_settings_and_secrets_are_never_shown(tmp_path: Path) -> None:
    env = remote_env("http://user:hunter2@127.0.0.1:9/base", AUTOCOMPILE_REMOTE_TOKEN="tok-SECRET", AUTOCOMPILE_REMOTE_KEY="key-SECRET")
    result = subprocess.run(
        [sys.executable, "-m", "autocompile", "config", "--json"], env=child_env(tmp_path / "c", **env), capture_output=True, text=True
    )
    for secret in ("hunter2", "tok-SECRET", "key-SECRET"):
        assert secret not in result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["settings"]["remote_mode"]["value"] == "read-write" and not document["problems"]
    settings = _config.load({**env, "AUTOCOMPILE_CONFIG": os.devnull + ".missing", "AUTOCOMPILE_REMOTE_BUDGET_MS": "7"})
    assert settings["remote_budget_ms"] == 7.0
    config = _remote.Config(settings)
    assert config.auth == "Bearer tok-SECRET" and config.key == b"key-SECRET" and config.display_url() == "http://127.0.0.1:9/base"
    bad = _config.load({"AUTOCOMPILE_CONFIG": os.devnull + ".missing", "AUTOCOMPILE_REMOTE_MODE": "sometimes"})
    assert bad.problems and bad["remote_mode"] == "off"


def test_the_hook_does_not_import_the_remote_client_without_a_miss(machines, base):  # type: ignore[no-untyped-def]
    tree_a, cache_a, _tree_b, _cache_b = machines
    run_python(CHECK_ALL, cache_a, cwd=tree_a)
    settle()
    run_python(CHECK_ALL, cache_a, cwd=tree_a)
    code = CHECK_ALL + "import sys\nprint(sorted(m for m in ('http.client', 'ssl', 'hashlib', 'autocompile._remote') if m in sys.modules))\n"
    result = run_python(code, cache_a, cwd=tree_a, **remote_env(base, AUTOCOMPILE_REMOTE_MODE="read"))
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
