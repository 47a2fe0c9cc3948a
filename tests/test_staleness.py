"""Stale code: random edit sequences, then imports and reloads; the code that runs is the source on disk.

A hypothesis state machine edits three module files (same-size in-place edits
with the modification time restored, atomic replaces, truncating rewrites,
moves between paths, hard links), sometimes waits for sources to settle so the
stat index is used, and checks both a fresh process and a long-lived process
that reloads: each module's ``VALUE`` must be the one in its file at that
moment. ``tests/stress/staleness.py`` runs many more sequences.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from conftest import HOOK_PRELUDE, SETTLE_SECONDS, child_env
from reliability import NO_PYC, invalid_entries

MODULES = 3
values = st.integers(0, 999_999)
slots = st.integers(0, MODULES - 1)

RELOADER = r"""
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
modules = [importlib.import_module(f"stale_{n}") for n in range(int(sys.argv[2]))]
for line in sys.stdin:
    modules = [importlib.reload(m) for m in modules]
    print(json.dumps([m.VALUE for m in modules]), flush=True)
"""
CHECK = "import json, stale_0, stale_1, stale_2; print(json.dumps([stale_0.VALUE, stale_1.VALUE, stale_2.VALUE]))"


def text(value: int) -> str:
    return f"VALUE = {1_000_000 + value}\n"  # every version has the same size


class EditsAndImports(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="autocompile-stale-"))
        self.src = self.root / "src"
        self.src.mkdir()
        self.cache = self.root / "cache"
        for n in range(MODULES):
            self.path(n).write_text(text(n))
        self.env = child_env(self.cache, **NO_PYC)
        self.reloader = subprocess.Popen(
            [sys.executable, "-c", HOOK_PRELUDE + RELOADER, str(self.src), str(MODULES)],
            env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.checks = 0

    def path(self, n: int) -> Path:
        return self.src / f"stale_{n}.py"

    def on_disk(self) -> list[int]:
        return [int(self.path(n).read_text().split("=")[1]) for n in range(MODULES)]

    @rule(n=slots, value=values)
    def same_size_edit_restoring_mtime(self, n: int, value: int) -> None:
        before = self.path(n).stat()
        with open(self.path(n), "r+") as file:
            file.write(text(value))
        os.utime(self.path(n), ns=(before.st_atime_ns, before.st_mtime_ns))

    @rule(n=slots, value=values)
    def atomic_replace(self, n: int, value: int) -> None:
        temporary = self.src / "edit.tmp"
        temporary.write_text(text(value))
        os.replace(temporary, self.path(n))

    @rule(n=slots, value=values)
    def truncating_rewrite(self, n: int, value: int) -> None:
        self.path(n).write_text(text(value))

    @rule(source=slots, to=slots, value=values)
    def move_between_paths(self, source: int, to: int, value: int) -> None:
        if source != to:
            os.replace(self.path(source), self.path(to))
            self.path(source).write_text(text(value))

    @rule(source=slots, to=slots)
    def hard_link(self, source: int, to: int) -> None:
        if source != to:
            self.path(to).unlink()
            os.link(self.path(source), self.path(to))

    @rule(n=slots, value=values)
    def edit_through_a_hard_link(self, n: int, value: int) -> None:
        before = self.path(n).stat()  # if linked, the other name changes too
        with open(self.path(n), "r+") as file:
            file.write(text(value))
        os.utime(self.path(n), ns=(before.st_atime_ns, before.st_mtime_ns))

    @precondition(lambda self: self.checks < 40)
    @rule()
    def settle(self) -> None:
        """Let the sources age past the settle time, so the next imports index them and then hit."""
        time.sleep(SETTLE_SECONDS)

    @rule()
    def import_in_a_fresh_process(self) -> None:
        expected = self.on_disk()
        result = subprocess.run([sys.executable, "-c", HOOK_PRELUDE + CHECK], cwd=self.src, env=self.env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert json.loads(result.stdout) == expected, "a fresh process ran stale code"
        self.checks += 1

    @rule()
    def reload_in_a_running_process(self) -> None:
        expected = self.on_disk()
        assert self.reloader.stdin and self.reloader.stdout
        self.reloader.stdin.write("reload\n")
        self.reloader.stdin.flush()
        line = self.reloader.stdout.readline()
        assert line, self.reloader.stderr.read() if self.reloader.stderr else ""
        assert json.loads(line) == expected, "a reload ran stale code"
        self.checks += 1

    @invariant()
    def cache_is_sound(self) -> None:
        assert invalid_entries(self.cache) == []

    def teardown(self) -> None:
        self.reloader.kill()
        self.reloader.communicate()
        subprocess.run(["rm", "-rf", str(self.root)], check=False)


EditsAndImports.TestCase.settings = settings(
    max_examples=5, stateful_step_count=14, deadline=None, suppress_health_check=list(HealthCheck)
)
test_edits_and_imports_never_run_stale_code = EditsAndImports.TestCase
