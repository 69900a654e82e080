"""``aind-assets hbcd ...``: operator commands of the HBCD flow.

* ``hbcd discover [--register]``: scan the identified side, print what the discovery sensor
  would request (counts only; unmapped subject folders are listed in the report on the
  identified side), and with ``--register`` add the ``bids_sessions`` partitions to the Dagster
  instance of ``DAGSTER_HOME`` (the Dagster CLI cannot create dynamic partitions).
* ``hbcd scan [--session KEY]``: run the leak scanner over the de-identified side (every
  session, or one) and print redacted findings; exit code 1 if any.
"""

from __future__ import annotations

import argparse
import os

from aind_assets.hbcd.deid.ledger import discover_sessions, write_discovery_report
from aind_assets.hbcd.deid.scanning import scan_objects, scan_session
from aind_assets.hbcd.identity.scrub import scrubbed_errors
from aind_assets.progress import StepPrinter
from aind_assets.settings import Settings


def _context(settings: Settings):  # noqa: ANN202
    from aind_assets.hbcd.layout import HbcdLayout
    from aind_assets.hbcd.resources import IdentityMapResource

    store = settings.object_store()
    layout = HbcdLayout(settings.hbcd_identified_root, settings.hbcd_deidentified_root)
    idmap = IdentityMapResource(object_store=store, url=settings.hbcd_identity_map).load()
    return store, layout, idmap


def _cmd_discover(args: argparse.Namespace) -> int:
    from aind_assets.hbcd.deid.discovery import plan_requests

    progress = StepPrinter()
    settings = Settings.from_env()
    progress("hbcd discover: loading the identity map")
    store, layout, idmap = _context(settings)
    with scrubbed_errors(idmap, "discovery"):
        progress(f"hbcd discover: listing {layout.identified_root}")
        result = discover_sessions(store, layout, idmap)
        progress("hbcd discover: writing the discovery report")
        write_discovery_report(store, layout, result)
    d = result.discovery
    plan = plan_requests(d, result.ledger, idmap)
    print(
        f"{len(d.sessions)} session(s) of {len(d.subject_digests)} subject(s); "
        f"{len(plan.sessions)} to de-identify; dataset-level files "
        f"{'changed' if plan.dataset else 'unchanged'}; {d.unmapped_subjects} subject folder(s) "
        f"not in the identity map (see {layout.discovery_report})"
    )
    if args.register:
        import dagster as dg

        from aind_assets.hbcd.keys import BIDS_SESSIONS_NAME
        from aind_assets.instance_home import dagster_home

        home = dagster_home(settings.data_dir)
        previous = os.environ.get("DAGSTER_HOME")
        os.environ["DAGSTER_HOME"] = str(home)
        try:
            progress(f"hbcd discover: registering partitions in {home}")
            with dg.DagsterInstance.get() as instance:
                existing = set(instance.get_dynamic_partitions(BIDS_SESSIONS_NAME))
                new = sorted(k for k in d.sessions if k not in existing)
                for i in range(0, len(new), 5000):
                    instance.add_dynamic_partitions(BIDS_SESSIONS_NAME, new[i : i + 5000])
        finally:
            if previous is None:
                os.environ.pop("DAGSTER_HOME", None)
            else:
                os.environ["DAGSTER_HOME"] = previous
        print(f"registered {len(new)} new bids_sessions partition(s) in {home}")
    return 0


def _cmd_scan(args: argparse.Namespace) -> int:
    from aind_assets.hbcd.identity.replace import parse_session_partition_key

    progress = StepPrinter()
    settings = Settings.from_env()
    progress("hbcd scan: loading the identity map")
    store, layout, idmap = _context(settings)
    if args.session:
        progress(f"hbcd scan: scanning session {args.session}")
        parse_session_partition_key(args.session)
        # an audit reads everything: no skipping of objects scanned clean before
        results = [scan_session(store, layout, idmap, args.session, incremental=False)]
    else:
        with scrubbed_errors(idmap, "scan"):
            progress(f"hbcd scan: listing {layout.deidentified_root}")
            infos = store.list_objects(layout.deidentified_root)
            progress(f"hbcd scan: scanning {len(infos)} object(s)")
            results = [scan_objects(store, infos, layout.deidentified_root, idmap)]
    scanned = sum(r.scanned for r in results)
    findings = [f for r in results for f in r.findings]
    for f in findings:
        print(f)
    print(f"{scanned} object(s) scanned, {len(findings)} finding(s)")
    return 1 if findings else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    hbcd = subparsers.add_parser("hbcd", help="HBCD de-identification flow").add_subparsers(
        dest="hbcd_command", required=True
    )
    p = hbcd.add_parser("discover", help="scan the identified side for new or changed sessions")
    p.add_argument("--register", action="store_true", help="add the sessions as Dagster partitions")
    p.set_defaults(func=_cmd_discover)
    p = hbcd.add_parser("scan", help="scan the de-identified side for identifiers")
    p.add_argument("--session", help="one partition key sub-<RC>_ses-<label> (default: all)")
    p.set_defaults(func=_cmd_scan)
