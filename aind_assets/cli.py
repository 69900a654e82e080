"""``aind-assets``: run the platform, seed demo data, and the flows' own commands.

Each flow adds its subcommands through a ``register(subparsers)`` function listed in
``COMMAND_GROUPS``, so this module stays the one entry point without knowing their details.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from aind_assets.settings import Settings

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _command_groups() -> list[Callable[[argparse._SubParsersAction], None]]:
    groups = []
    for module in (
        "aind_assets.analysis.cli",
        "aind_assets.hbcd.cli",
        "aind_assets.hbcd.release.cli",
    ):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        groups.append(mod.register)
    return groups


def _cmd_settings(args: argparse.Namespace) -> int:
    print(json.dumps(Settings.from_env().describe(), indent=2))
    return 0


def _cmd_demo_seed(args: argparse.Namespace) -> int:
    from aind_assets.demo.seed import is_seeded, seed_demo
    from aind_assets.servers import embedded_docdb

    settings = Settings.from_env()
    with embedded_docdb(settings, needed=settings.embedded and not args.no_embedded):
        docdb, store = settings.docdb(), settings.object_store()
        docdb.ping()
        if args.if_empty and is_seeded(settings, docdb, store):
            print("demo data already present; nothing to do")
            return 0
        report = seed_demo(settings, docdb, store, n_assets=args.assets, n_subjects=args.subjects)
    print(
        f"seeded {report.records} data-asset records with {report.nwb_files} NWB files, "
        f"{report.bids_files} identified BIDS files and the identifier map"
    )
    return 0


def _cmd_dev(args: argparse.Namespace) -> int:
    """Start the platform on this machine: embedded DocDB, demo data, Dagster UI and daemon."""
    from aind_assets.demo.seed import is_seeded, seed_demo
    from aind_assets.servers import embedded_docdb

    settings = Settings.from_env()
    home = Path(os.environ.get("DAGSTER_HOME") or settings.data_dir / "dagster_home").absolute()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")
    with only_instance(home, args.host, args.port), embedded_docdb(settings, settings.embedded):
        docdb, store = settings.docdb(), settings.object_store()
        docdb.ping()
        if not args.no_seed and not is_seeded(settings, docdb, store):
            report = seed_demo(settings, docdb, store)
            print(f"seeded demo data: {report.records} data assets, {report.bids_files} BIDS files")
        env = {**os.environ, "DAGSTER_HOME": str(home), "AIND_DATA_DIR": str(settings.data_dir)}
        cmd = [
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-h",
            args.host,
            "-p",
            str(args.port),
            "-w",
            str(PROJECT_DIR / "workspace.yaml"),
        ]
        print(
            f"Dagster UI on http://{args.host}:{args.port} (DAGSTER_HOME={home}); Ctrl-C stops all"
        )
        proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_DIR, start_new_session=True)
        code = _supervise(proc)
    return code


@contextlib.contextmanager
def only_instance(home: Path, host: str, port: int) -> Iterator[None]:
    """Refuse to start a second platform on one Dagster home or one port.

    Two ``dagster dev`` on one home run two daemons that launch every sensor's runs twice and
    seed the demo data twice; the lock (held until this process exits) makes that impossible.
    """
    import fcntl

    from aind_assets.servers import port_open

    lock = (home / ".aind-assets-dev.lock").open("w")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(
                f"aind-assets dev is already running with DAGSTER_HOME={home}; "
                "stop it first (Ctrl-C in its terminal) or set another DAGSTER_HOME"
            ) from None
        if port_open(port, "127.0.0.1" if host in ("0.0.0.0", "") else host):
            raise SystemExit(
                f"port {port} on {host} is already in use; stop what listens there or pass --port"
            )
        yield
    finally:
        lock.close()


def _supervise(proc: subprocess.Popen, grace: float = 20.0) -> int:
    """Wait for ``dagster dev``; on Ctrl-C or SIGTERM stop its whole process group.

    ``dagster dev`` runs in its own session (it ignores signals otherwise), so the group gets
    SIGINT, as a terminal's Ctrl-C would send, and SIGKILL if it is still there after ``grace``.
    """
    stopping: list[float] = []

    def request_stop(*_: object) -> None:
        if not stopping:
            stopping.append(time.monotonic())
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        while proc.poll() is None:
            if stopping and time.monotonic() - stopping[0] > grace:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.2)
    finally:
        request_stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (code servers)
    return proc.returncode


def _cmd_docdb_serve(args: argparse.Namespace) -> int:
    from aind_assets.servers import main as serve

    settings = Settings.from_env()
    serve(
        [
            "mongo",
            "--path",
            str(settings.embedded_docdb_path),
            "--port",
            str(settings.embedded_docdb_port),
        ]
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aind-assets", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("settings", help="print the resolved settings (no secrets)")
    p.set_defaults(func=_cmd_settings)

    p = sub.add_parser(
        "dev", help="start DocDB (embedded), seed demo data if empty, and dagster dev"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--no-seed", action="store_true", help="do not seed demo data")
    p.set_defaults(func=_cmd_dev)

    demo = sub.add_parser("demo", help="demo data").add_subparsers(
        dest="demo_command", required=True
    )
    p = demo.add_parser(
        "seed", help="write demo data assets, NWB files and an identified BIDS tree"
    )
    p.add_argument("--if-empty", action="store_true", help="do nothing when demo data is present")
    p.add_argument("--assets", type=int, default=24, help="number of data-asset records")
    p.add_argument("--subjects", type=int, default=5, help="number of BIDS subjects")
    p.add_argument(
        "--no-embedded",
        action="store_true",
        help="never start the embedded DocDB (use one running)",
    )
    p.set_defaults(func=_cmd_demo_seed)

    docdb = sub.add_parser("docdb", help="the embedded DocDB").add_subparsers(
        dest="docdb_command", required=True
    )
    p = docdb.add_parser("serve", help="serve the embedded DocDB in the foreground")
    p.set_defaults(func=_cmd_docdb_serve)

    for register in _command_groups():
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as e:  # one clear line for the operator, the traceback with --debug
        if os.environ.get("AIND_ASSETS_DEBUG"):
            raise
        print(f"aind-assets: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
