"""Shared fixtures: real subprocesses, real cache directories, real wheels and venvs.

Nothing here depends on the developer's environment: every child process gets
an environment built from scratch by :func:`child_env`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: Sources must be older than this before the stat index takes them (see ``_loader.SETTLE_NS``).
SETTLE_SECONDS = 2.1

#: Prepended to code run by :func:`run_python`: the hook, as ``site`` would install it.
HOOK_PRELUDE = "import autocompile; autocompile.install()\n"


def child_env(cache_dir: Path | str | None, **extra: str) -> dict[str, str]:
    """A clean environment for a child interpreter: no inherited AUTOCOMPILE_*/PYTHON* settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AUTOCOMPILE_", "PYTHON")) and key not in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME")
    }
    env["PYTHONPATH"] = str(REPO)
    env["AUTOCOMPILE_CONFIG"] = os.devnull + ".missing"
    if cache_dir is not None:
        env["AUTOCOMPILE_CACHE_DIR"] = str(cache_dir)
    env.update(extra)
    return env


def run_python(
    code: str,
    cache_dir: Path | str | None,
    *,
    hook: bool = True,
    args: tuple[str, ...] = (),
    cwd: Path | str | None = None,
    python: str = sys.executable,
    check: bool = True,
    **extra_env: str,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter, with the hook installed first unless ``hook`` is false.

    The prelude is there either way (disabled by ``AUTOCOMPILE_DISABLE``), so line
    numbers in ``<string>`` tracebacks match between stock and hooked runs.
    """
    source = HOOK_PRELUDE + textwrap.dedent(code)
    env = child_env(cache_dir, **extra_env)
    if not hook:
        env["AUTOCOMPILE_DISABLE"] = "1"
    result = subprocess.run(
        [python, *args, "-c", source], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(f"child failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def run_cli(*args: str, cache_dir: Path | str, python: str = sys.executable, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "autocompile", *args],
        env=child_env(cache_dir, **extra_env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def cli_json(*args: str, cache_dir: Path | str, **extra_env: str) -> dict:
    result = run_cli(*args, "--json", cache_dir=cache_dir, **extra_env)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    """Create files under ``root`` (text is dedented)."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content))
    return root


def settle() -> None:
    """Let freshly written sources age past the stat index's settle time."""
    time.sleep(SETTLE_SECONDS)


@pytest.fixture
def tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Mount small tmpfs file systems (needs root and mount rights; skips otherwise)."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "256k", read_only: bool = False) -> Path:
        point = tmp_path / name
        point.mkdir()
        options = f"size={size},mode=0700" + (",ro" if read_only else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount tmpfs here: {result.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    path = tmp_path / "cache"
    return path


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once per session the way pip builds it."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)],
        check=True,
        env=child_env(None),
    )
    (built,) = out.glob("autocompile-*.whl")
    return built


def make_venv(path: Path, *packages: str) -> Path:
    """A real venv with ``packages`` installed by pip; returns its python."""
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    python = path / "bin" / "python"
    if packages:
        env = child_env(None)
        env.pop("PYTHONPATH")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *packages], check=True, env=env)
    return python


@pytest.fixture(scope="session")
def installed_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh venv with the built wheel installed for real; returns its python."""
    return make_venv(tmp_path_factory.mktemp("venv") / "env", str(wheel))


def venv_env(cache_dir: Path | str, **extra: str) -> dict[str, str]:
    """The environment for a venv's interpreter: the installed package, not the checkout."""
    env = child_env(cache_dir, **extra)
    env.pop("PYTHONPATH")
    return env
