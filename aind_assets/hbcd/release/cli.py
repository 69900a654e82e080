"""``aind-assets release ...``: register and inspect HBCD release specs.

``register SPEC.yaml`` validates the spec, stores it under ``<io root>/hbcd/release_specs/`` and
adds the ``hbcd_releases`` partition to the Dagster instance of ``DAGSTER_HOME`` (the
``hbcd_release_specs`` sensor would add it too, on its next tick). ``list`` shows the registered
specs and which releases are complete. ``check SPEC.yaml`` only validates.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from aind_assets.settings import Settings

PARTITIONS = "hbcd_releases"


def _load(path: str):
    from aind_assets.hbcd.release.spec import load_release_spec

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"release spec {path} does not exist")
    return load_release_spec(p.read_text(encoding="utf-8"), str(p))


def _dagster_home(settings: Settings) -> Path:
    from aind_assets.instance_home import dagster_home

    return dagster_home(settings.data_dir)


def add_release_partition(release: str, home: Path) -> bool:
    """Add ``release`` to the ``hbcd_releases`` partitions of the instance at ``home``;
    ``False`` if it was already there."""
    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            if instance.has_dynamic_partition(PARTITIONS, release):
                return False
            instance.add_dynamic_partitions(PARTITIONS, [release])
            return True
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous


def _cmd_register(args: argparse.Namespace) -> int:
    from aind_assets.hbcd.release.resources import build_release_resource
    from aind_assets.hbcd.release.specs import write_spec
    from aind_assets.progress import StepPrinter

    progress = StepPrinter()
    settings = Settings.from_env()
    spec = _load(args.spec)
    progress(f"release register: storing spec {spec.release}")
    res = build_release_resource(settings, for_dagster=False)
    res.object_store.ensure_root(res.specs_root)
    url = write_spec(res.object_store, res.specs_root, res.staging_root, spec, force=args.force)
    print(f"release spec {spec.release} registered at {url}")
    if args.no_partition:
        return 0
    home = _dagster_home(settings)
    progress(f"release register: adding partition {spec.release} in {home}")
    added = add_release_partition(spec.release, home)
    state = "added to" if added else "already in"
    print(f"partition {spec.release} {state} {PARTITIONS} (DAGSTER_HOME={home})")
    print(f"stage it: dg launch --job hbcd_release --partition {spec.release} (or from the UI)")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    spec = _load(args.spec)
    print(f"release spec {args.spec} is valid (release {spec.release})")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from aind_assets.hbcd.release.resources import build_release_resource
    from aind_assets.hbcd.release.specs import complete_releases, list_specs
    from aind_assets.progress import StepPrinter

    progress = StepPrinter()
    res = build_release_resource(Settings.from_env(), for_dagster=False)
    progress(f"release list: reading specs under {res.specs_root}")
    specs, errors = list_specs(res.object_store, res.specs_root)
    progress(f"release list: reading completion markers under {res.staging_root}")
    complete = complete_releases(res.object_store, res.staging_root)
    if not specs and not errors:
        print(f"no release spec registered under {res.specs_root}")
    for name in sorted(specs):
        marker = complete.get(name)
        state = (
            f"complete {marker['completed_at']} ({marker['counts']['files']} files, "
            f"{marker['counts']['sessions']} sessions)"
            if marker
            else "not complete"
        )
        print(f"{name}\t{state}")
    for url, error in sorted(errors.items()):
        print(f"invalid\t{url}: {error}")
    return 1 if errors else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``release register|check|list`` to the ``aind-assets`` parser."""
    release = subparsers.add_parser("release", help="HBCD release specs and partitions")
    sub = release.add_subparsers(dest="release_command", required=True)

    p = sub.add_parser("register", help="validate and store a release spec, and add its partition")
    p.add_argument(
        "spec", help="release spec YAML (see aind_assets/hbcd/release/examples/release.yaml)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the registered spec even if its release is complete",
    )
    p.add_argument(
        "--no-partition",
        action="store_true",
        help="only store the spec (the hbcd_release_specs sensor adds the partition)",
    )
    p.set_defaults(func=_cmd_register)

    p = sub.add_parser("check", help="validate a release spec without registering it")
    p.add_argument("spec", help="release spec YAML to validate")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("list", help="registered release specs and which releases are complete")
    p.set_defaults(func=_cmd_list)
