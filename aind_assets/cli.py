"""``aind-assets``: run the platform, seed demo data, and the flows' own commands.

Each flow adds its subcommands through a ``register(subparsers)`` function listed in
``COMMAND_GROUPS``, so this module stays the one entry point without knowing their details.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
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
    from aind_assets.progress import StepPrinter
    from aind_assets.servers import embedded_docdb

    _apply_docdb_port(args)
    settings = Settings.from_env()
    progress = StepPrinter()
    with embedded_docdb(settings, needed=settings.embedded and not args.no_embedded):
        docdb, store = settings.docdb(), settings.object_store()
        docdb.ping()
        if args.if_empty and is_seeded(settings, docdb, store):
            print("demo data already present; nothing to do")
            return 0
        report = seed_demo(
            settings,
            docdb,
            store,
            n_assets=args.assets,
            n_subjects=args.subjects,
            progress=progress,
        )
    print(
        f"seeded {report.records} data-asset records with {report.nwb_files} NWB files, "
        f"{report.bids_files} identified BIDS files and the identifier map"
    )
    return 0


def _apply_docdb_port(args: argparse.Namespace) -> None:
    """``--docdb-port`` wins over ``AIND_EMBEDDED_DOCDB_PORT``, for this process and its children
    (the Dagster processes read the port from the environment)."""
    if getattr(args, "docdb_port", None):
        os.environ["AIND_EMBEDDED_DOCDB_PORT"] = str(args.docdb_port)


def _cmd_dev(args: argparse.Namespace) -> int:
    """Start the platform on this machine: embedded DocDB, demo data, ``dg dev`` (UI, daemon)."""
    from aind_assets.demo.seed import is_seeded, seed_demo
    from aind_assets.instance_home import dagster_home
    from aind_assets.progress import StepPrinter
    from aind_assets.servers import embedded_docdb
    from aind_assets.shutdown import Supervisor

    _apply_docdb_port(args)
    settings = Settings.from_env()
    progress = StepPrinter()
    dg_bin = Path(sys.executable).parent / "dg"
    if not dg_bin.exists():
        raise FileNotFoundError(f"{dg_bin} is missing (dagster-dg-cli): run scripts/install")
    home = dagster_home(settings.data_dir)
    supervisor = Supervisor()
    with (
        only_instance(home, args.host, args.port),
        embedded_docdb(settings, settings.embedded) as docdb_server,
    ):
        if docdb_server is not None and docdb_server.proc is not None:
            supervisor.add("embedded DocDB", docdb_server.proc)
        docdb, store = settings.docdb(), settings.object_store()
        docdb.ping()
        if not args.no_seed and not is_seeded(settings, docdb, store):
            report = seed_demo(settings, docdb, store, progress=progress)
            print(f"seeded demo data: {report.records} data assets, {report.bids_files} BIDS files")
        # closed now: a client left open would try to end its sessions on the stopped DocDB at
        # exit and delay the end of Ctrl-C by seconds
        docdb.close()
        env = {**os.environ, "DAGSTER_HOME": str(home), "AIND_DATA_DIR": str(settings.data_dir)}
        # The workspace file names the code location and its module; run from DAGSTER_HOME (the
        # code servers run on this interpreter), not from the project folder, whose dagster.yaml
        # (the profile copied into DAGSTER_HOME above) Dagster would warn it does not use.
        cmd = [
            str(dg_bin),
            "dev",
            "--workspace",
            str(PROJECT_DIR / "workspace.yaml"),
            "--host",
            args.host,
            "--port",
            str(args.port),
        ]
        progress("starting dg dev (Dagster webserver, daemon, code server)")
        print(
            f"Dagster UI on http://{args.host}:{args.port} (DAGSTER_HOME={home}); Ctrl-C stops all",
            flush=True,
        )
        # its own session: a terminal's Ctrl-C reaches only this process, which stops the rest
        proc = subprocess.Popen(cmd, env=env, cwd=home, start_new_session=True)
        supervisor.add("Dagster (dg dev: webserver, daemon, code servers)", proc)
        code = supervisor.run_until_signal(proc)
    return code


@contextlib.contextmanager
def only_instance(home: Path, host: str, port: int) -> Iterator[None]:
    """Refuse to start a second platform on one Dagster home or one port.

    Two ``dg dev`` on one home run two daemons that launch every sensor's runs twice and
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


def _cmd_docdb_serve(args: argparse.Namespace) -> int:
    from aind_assets.servers import main as serve

    _apply_docdb_port(args)
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
        "dev",
        help="start the embedded DocDB, seed demo data if empty, and dg dev (UI and daemon)",
        description="Start the platform on this machine: the embedded DocDB, demo data on first "
        "start, and `dg dev` (Dagster webserver, daemon, code server). Ctrl-C stops all of it "
        "within a few seconds and says what it stopped.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the Dagster UI listens on (default: 127.0.0.1; 0.0.0.0: every interface)",
    )
    p.add_argument("--port", type=int, default=3000, help="port of the Dagster UI (default: 3000)")
    p.add_argument(
        "--docdb-port",
        type=int,
        default=None,
        help="port of the embedded DocDB (default: $AIND_EMBEDDED_DOCDB_PORT, else 27027)",
    )
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
    p.add_argument(
        "--docdb-port",
        type=int,
        default=None,
        help="port of the embedded DocDB (default: $AIND_EMBEDDED_DOCDB_PORT, else 27027)",
    )
    p.set_defaults(func=_cmd_demo_seed)

    docdb = sub.add_parser("docdb", help="the embedded DocDB").add_subparsers(
        dest="docdb_command", required=True
    )
    p = docdb.add_parser("serve", help="serve the embedded DocDB in the foreground")
    p.add_argument(
        "--docdb-port",
        type=int,
        default=None,
        help="port to serve on (default: $AIND_EMBEDDED_DOCDB_PORT, else 27027)",
    )
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
