"""``aind-assets partitions …`` and ``aind-assets results …`` (registered by aind_assets.cli).

* ``partitions sync`` registers the data-asset partitions of the dispatch specs (optionally
  narrowed by a query) in the Dagster instance of ``$DAGSTER_HOME`` and in the partition map,
  without the sensor — the first step of a command-line backfill;
* ``partitions list`` prints the registered keys in Dagster's order (for ``--partition-range``);
* ``results`` queries analysis results.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from aind_assets.analysis.config import AnalysisSettings
from aind_assets.analysis.queries import parse_query
from aind_assets.settings import Settings

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from aind_assets.servers import ManagedServer

ADD_CHUNK = 1000


def _settings() -> tuple[Settings, AnalysisSettings]:
    return Settings.from_env(), AnalysisSettings.from_env()


def _embedded(settings: Settings) -> AbstractContextManager[ManagedServer | None]:
    from aind_assets.servers import embedded_docdb

    return embedded_docdb(settings, needed=settings.embedded)


def _instance() -> DagsterInstance:
    import dagster as dg

    try:
        return dg.DagsterInstance.get()
    except Exception as exc:  # noqa: BLE001 - one clear line instead of Dagster's traceback
        raise RuntimeError(
            f"cannot open the Dagster instance (set DAGSTER_HOME to the instance's folder): {exc}"
        ) from exc


def _cmd_sync(args: argparse.Namespace) -> int:
    from aind_assets.analysis.config_checks import validate_dispatch_config
    from aind_assets.analysis.discovery import (
        KnownPartitions,
        PartitionMap,
        discover_pages,
        ensure_indexes,
        find_gone,
    )
    from aind_assets.analysis.models import load_dispatch_config
    from aind_assets.analysis.registry import load_analyses
    from aind_assets.progress import StepPrinter

    progress = StepPrinter()
    settings, analysis = _settings()
    registry = load_analyses(
        analysis.analysis_modules, examples_out_of_process=settings.examples_out_of_process
    )
    config = load_dispatch_config(analysis.dispatch_config, known_analyses=registry.names())
    validate_dispatch_config(config, registry, analysis.dispatch_config)
    specs = [config[name] for name in args.spec] if args.spec else list(config)
    extra = parse_query(args.query) if args.query else None
    instance = None if args.dry_run else _instance()
    summary: dict[str, Any] = {"specs": {}, "added": 0, "deleted": 0, "keys": []}
    with _embedded(settings):
        docdb = settings.docdb()
        docdb.ping()
        if not args.dry_run:
            ensure_indexes(docdb, settings.assets_collection)
        pmap = PartitionMap(docdb, analysis.partitions_collection)
        for spec in specs:
            progress(f"partitions sync: {spec.name}: querying DocDB")
            keys: list[str] = []
            new: list[str] = []
            records = 0
            rejected: list[str] = []
            registered = (
                KnownPartitions(
                    functools.partial(instance.has_dynamic_partition, spec.name),
                    functools.partial(instance.get_dynamic_partitions, spec.name),
                )
                if instance is not None
                else None
            )
            for page in discover_pages(
                docdb,
                settings.assets_collection,
                spec,
                None,
                args.page_size or analysis.page_size,
                extra_query=extra,
            ):
                records += page.records
                rejected.extend(page.rejected)
                progress(
                    f"partitions sync: {spec.name}: {records} record(s) read, "
                    f"{len(page.partitions)} partition(s) in this page"
                )
                if instance is not None and registered is not None:
                    exists = registered.check([p.key for p in page.partitions])
                    pmap.record(page.partitions, exists=exists.__getitem__)
                    registered.add(exists)
                    page_new = [k for k, known in exists.items() if not known]
                    for start in range(0, len(page_new), ADD_CHUNK):
                        instance.add_dynamic_partitions(
                            spec.name, page_new[start : start + ADD_CHUNK]
                        )
                    new.extend(page_new)
                keys.extend(p.key for p in page.partitions if p.key not in keys)
            deleted: list[str] = []
            if args.delete_gone and instance is not None:
                progress(f"partitions sync: {spec.name}: looking for partitions gone from DocDB")
                after = None
                while chunks := pmap.chunks(spec.name, after=after):
                    entries = [e for chunk in chunks for e in chunk.get("entries") or []]
                    gone = find_gone(docdb, settings.assets_collection, spec, entries)
                    pmap.remove(spec.name, gone)
                    for key in gone:  # the spec's own partitions lose them
                        if instance.has_dynamic_partition(spec.name, key):
                            instance.delete_dynamic_partition(spec.name, key)
                        deleted.append(key)
                    after = chunks[-1]["_id"]
            summary["specs"][spec.name] = {
                "records": records,
                "partitions": len(keys),
                "added": len(new),
                "deleted": len(deleted),
                "first": keys[0] if keys else None,
                "last": keys[-1] if keys else None,
                "not_registered": rejected,
            }
            for problem in rejected:
                print(f"not registered: {problem}", file=sys.stderr)
            summary["added"] += len(new)
            summary["deleted"] += len(deleted)
            summary["keys"].extend(k for k in keys if k not in summary["keys"])
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    if args.print_keys:
        print("\n".join(summary["keys"]))
        return 0
    verb = "would register" if args.dry_run else "registered"
    for name, s in summary["specs"].items():
        print(
            f"{name}: {s['records']} record(s) -> {s['partitions']} partition(s), {verb} "
            f"{s['added']} new" + (f", deleted {s['deleted']}" if s["deleted"] else "")
        )
    if summary["keys"]:
        print(f"keys: {summary['keys'][0]} ... {summary['keys'][-1]} ({len(summary['keys'])})")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    """Keys of one spec's partitions (a flat list, for ``--partition-range``), or of every
    spec's (``{spec: keys}`` in JSON, ``spec<TAB>key`` lines in text)."""
    from aind_assets.analysis.models import load_dispatch_config

    instance = _instance()
    if args.spec:
        keys = list(instance.get_dynamic_partitions(args.spec))
        print(json.dumps(keys) if args.json else "\n".join(keys))
        if not keys and not args.json:
            print(f"no partitions of dispatch spec {args.spec!r} registered", file=sys.stderr)
        return 0
    _, analysis = _settings()
    config = load_dispatch_config(analysis.dispatch_config)
    by_spec = {s.name: list(instance.get_dynamic_partitions(s.name)) for s in config}
    if args.json:
        print(json.dumps(by_spec))
    else:
        lines = [f"{spec}\t{key}" for spec, keys in by_spec.items() for key in keys]
        print("\n".join(lines) if lines else "no analysis partitions registered")
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    from aind_assets.analysis.results import format_table, parse_parameter, query_results

    settings = Settings.from_env()
    parameters = dict(parse_parameter(p) for p in args.param or [])
    with _embedded(settings):
        docdb = settings.docdb()
        records = query_results(
            docdb,
            settings.results_collection,
            analysis_name=args.analysis,
            code_url=args.code_url,
            code_version=args.version,
            parameter_values=parameters,
            input_asset=args.input_asset,
            latest_only=args.latest_only,
            limit=args.limit,
        )
    if args.json:
        json.dump(records, sys.stdout, indent=2, default=str)
        print()
    else:
        print(format_table(records))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parts = sub.add_parser(
        "partitions", help="data-asset partitions of the analysis flow"
    ).add_subparsers(dest="partitions_command", required=True)

    p = parts.add_parser(
        "sync",
        help="register partitions from DocDB without the sensor (Dagster instance of "
        "$DAGSTER_HOME, partition map in DocDB)",
    )
    p.add_argument("--spec", action="append", help="dispatch spec name (repeatable; default all)")
    p.add_argument(
        "--query",
        help="extra DocDB query (JSON text or file) ANDed with each spec's query",
    )
    p.add_argument("--page-size", type=int, default=0, help="records per DocDB page")
    p.add_argument(
        "--delete-gone",
        action="store_true",
        help="also delete partitions the specs no longer yield",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be registered")
    p.add_argument("--print-keys", action="store_true", help="print the keys, one per line")
    p.add_argument("--json", action="store_true", help="print a JSON summary with the keys")
    p.set_defaults(func=_cmd_sync)

    p = parts.add_parser(
        "list", help="registered partition keys per dispatch spec, in Dagster's order"
    )
    p.add_argument(
        "--spec",
        help="one dispatch spec: print its keys only (one per line, or a JSON list)",
    )
    p.add_argument("--json", action="store_true", help="print the keys as JSON")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("results", help="query analysis results (records of completed jobs)")
    p.add_argument("--analysis", help="analysis name (code name or analysis_name parameter)")
    p.add_argument("--version", help="analysis code version")
    p.add_argument("--code-url", help="analysis code URL")
    p.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="parameter value (JSON or text); repeatable",
    )
    p.add_argument("--input-asset", help="input data asset: its name or s3:// location")
    p.add_argument(
        "--latest-only",
        action="store_true",
        help="as analysis-pipeline-utils' latest_only (the newest matching record)",
    )
    p.add_argument(
        "--limit", type=int, default=0, help="at most this many records (default 0: all)"
    )
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    p.set_defaults(func=_cmd_results)
