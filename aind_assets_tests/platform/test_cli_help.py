"""Every ``aind-assets`` command and option explains itself in ``--help``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from aind_assets.cli import build_parser

PROJECT = Path(__file__).resolve().parents[2]


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:  # argparse keeps its subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_every_option_of_every_command_has_help_text() -> None:
    missing = []
    commands = list(_commands(build_parser()))
    assert len(commands) > 15  # dev, demo seed, docdb serve, partitions, results, hbcd, release
    for path, parser in commands:
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not (action.help or "").strip():
                name = "/".join(action.option_strings) or action.dest
                missing.append(f"aind-assets {' '.join(path)}: {name}")
    assert not missing, "options without help text:\n" + "\n".join(missing)


def test_dev_help_names_host_port_and_docdb_port() -> None:
    """The real ``--help`` output, as a user runs it."""
    out = subprocess.run(
        [sys.executable, "-m", "aind_assets.cli", "dev", "--help"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    out = " ".join(out.split())  # argparse wraps lines at the terminal width
    assert "address the Dagster UI listens on" in out
    assert "--port PORT port of the Dagster UI (default: 3000)" in out
    assert "--docdb-port" in out and "port of the embedded DocDB" in out
    assert "Ctrl-C stops all of it" in out
