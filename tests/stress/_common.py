"""Argument parsing and paths shared by the stress scripts (run from anywhere: ``python tests/stress/NAME.py``)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(TESTS), str(TESTS.parent)]


def arguments(description: str, rounds: int, **extra: tuple[type, object, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds, help=f"default {rounds}")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    for name, (kind, default, text) in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=f"{text} (default {default})")
    return parser.parse_args()


def scratch(keep: bool) -> Path:
    path = Path(tempfile.mkdtemp(prefix="autocompile-stress-"))
    print(f"scratch directory: {path}{' (kept)' if keep else ''}", flush=True)
    return path
