"""One IO manager for local and S3 roots that writes every output with its processing record.

Each output ``<root>/<asset key path>/<partition key>/`` is committed by the protocol of
:mod:`aind_assets.io_managers.commit`: a new version folder holds the value (``value.json`` for
pydantic models, dicts and lists, ``value.parquet`` for DataFrames, ``data/`` for files and
folders) and ``processing.json``; the DocDB record follows; the ``CURRENT.json`` pointer, written
last, makes it the output. Readers load only what a pointer names.
"""

import contextlib
import json
import threading
import typing
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pydantic
import pydantic_core
from dagster import (
    ConfigurableIOManagerFactory,
    DagsterEventType,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableRecord,
    TableSchema,
    UPathIOManager,
)
from dagster._core.storage.upath_io_manager import escape_dotdot_segments, escape_leading_slash
from pydantic import Field
from upath import UPath

from aind_assets import lineage
from aind_assets.io_managers import commit
from aind_assets.io_managers.commit import RECORD_FILE, Checkpoint, IncompleteOutputError
from aind_assets.partition_metadata import add_partition_metadata
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import browse_url

__all__ = ["IncompleteOutputError", "ObjectStoreIOManager", "StoreIOManager"]

VALUE_JSON = "value.json"
VALUE_PARQUET = "value.parquet"
VALUE_DATA = "data"


def _raw(value: Any) -> Any:
    return getattr(value, "value", value)


def _text(value: Any) -> str:
    return "" if value is None else str(getattr(value, "value", value))


def record_table(record: Any, name: str, collection: str, partition: str | None) -> MetadataValue:
    """The key fields of a materialization's DocDB record, as a two-column table (its ``_id``
    is a hash: the fields say what it is)."""
    process = record.data_processes[0]
    code = process.code
    rows = [
        ("DocDB record", f"{collection} / {name}"),
        ("process", f"{_text(process.stage)} · {_text(process.process_type)}"),
        ("code", f"{code.name} {code.version or ''}".strip()),
        ("partition", partition or "(not partitioned)"),
        ("inputs", str(len(code.input_data or []))),
        ("started", _text(process.start_date_time)),
        ("ended", _text(process.end_date_time)),
        ("output path", _text(process.output_path)),
    ]
    return MetadataValue.table(
        records=[TableRecord({"field": k, "value": v}) for k, v in rows],
        schema=TableSchema(
            columns=[TableColumn("field", "string"), TableColumn("value", "string")]
        ),
    )


#: Partitions of a ranged run's output written at once (their commit is one batch).
PARTITION_WRITERS = 8


@dataclass
class _Prepared:
    """One output's version, written and not yet committed, with what its metadata needs."""

    write: commit.Write
    value: Any
    partition: str | None
    record: Any
    name: str
    started: datetime
    size: int


class StoreIOManager(UPathIOManager):
    """Persists outputs under a UPath root and records their lineage (see module docstring)."""

    def __init__(
        self,
        base_path: UPath,
        docdb: DocDBResource | None,
        records_collection: str,
        checkpoint: Checkpoint | None = None,
        commit_lease_ttl_s: float = 60.0,
        endpoint_url: str | None = None,
    ) -> None:
        super().__init__(base_path=base_path)
        #: the S3 endpoint of links (None: AWS, whose links go to the S3 console)
        self._endpoint_url = endpoint_url
        self._commit_lease_ttl_s = commit_lease_ttl_s
        self._docdb = docdb
        self._records_collection = records_collection
        #: called with the name of each protocol step once done (fault-injection tests)
        self.checkpoint: Checkpoint = checkpoint or (lambda step: None)
        #: (run id, step key), upstream partition key (None: unpartitioned) -> loaded folders
        self._inputs: dict[tuple[tuple[str, str], str | None], list[str]] = {}
        self._lock = threading.Lock()
        self._loading = threading.local()
        #: (run id, step key) -> when the step started (one event-log query per step, not per
        #: partition of a ranged run)
        self._step_started: dict[tuple[str, str], datetime] = {}

    # -- paths --------------------------------------------------------------------------------
    def make_safe_partition_path(self, base_path: UPath, partition: str) -> UPath:
        return base_path / escape_dotdot_segments(escape_leading_slash(partition))

    @staticmethod
    def url_of(path: UPath) -> str:
        return commit.url_of(path)

    def browse(self, path: UPath, *, folder: bool = False) -> str:
        """A browser link to ``path`` (see :func:`aind_assets.resources.urls.browse_url`)."""
        return browse_url(self.url_of(path), self._endpoint_url, folder=folder)

    # -- writing ------------------------------------------------------------------------------
    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
            if not isinstance(obj, Mapping) or set(obj) != set(context.asset_partition_keys):
                raise TypeError(
                    f"{context.asset_key.to_user_string()} ran for "
                    f"{len(context.asset_partition_keys)} partitions at once: it must return a dict "
                    "keyed by partition key"
                )
            # Each partition's materialization gets its own metadata (what was written for it),
            # never the whole run's: a ranged run writes exactly what one-partition runs write.
            shared_inputs = self._shared_inputs(context, context.asset_partition_keys)
            paths = self._get_paths_for_partitions(context)
            started = {pkey: self._started_at(context, pkey) for pkey in paths}

            def prepare(pkey: str) -> _Prepared:
                return self._prepare(
                    context, obj[pkey], paths[pkey], pkey, shared_inputs, started[pkey]
                )

            # each partition's version is written a few at once (requests that wait on the
            # store), then all are committed together (one DocDB request per protocol step)
            with ThreadPoolExecutor(max_workers=min(PARTITION_WRITERS, len(paths))) as pool:
                prepared = list(pool.map(prepare, paths))
            for pkey, meta in zip(paths, self._commit(context, prepared), strict=True):
                add_partition_metadata(context.step_context, meta, pkey)
            context.log.info(f"{context.asset_key.to_user_string()}: wrote {len(paths)} partitions")
            return
        key: str | None
        if context.has_asset_partitions:
            path = next(iter(self._get_paths_for_partitions(context).values()))
            key = context.asset_partition_key
        else:
            path, key = self._get_path(context), None
        shared = self._shared_inputs(context, [key] if key is not None else [])
        one = self._prepare(context, obj, path, key, shared)
        context.add_output_metadata(self._commit(context, [one])[0])

    def dump_to_path(self, context: OutputContext, obj: Any, path: UPath) -> None:
        """Write the value into a new, empty version folder (``_prepare`` adds the rest)."""
        self._dump(context, obj, path)

    def _dump(self, context: OutputContext, obj: Any, path: UPath) -> int:
        """:meth:`dump_to_path`; returns the bytes written (no listing of them afterwards)."""
        if path.protocol not in ("s3", "s3a"):  # S3 has no folders (s3fs would ask the bucket)
            path.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, pd.DataFrame):
            with (path / VALUE_PARQUET).open("wb") as f:
                obj.to_parquet(f, index=False)
                return f.tell()
        if isinstance(obj, Path):
            if not obj.exists():
                raise FileNotFoundError(
                    f"output {obj} of {context.asset_key.to_user_string()} is missing"
                )
            dest = path / VALUE_DATA / obj.name
            path.fs.put(str(obj), dest.path, recursive=obj.is_dir())
            files = obj.rglob("*") if obj.is_dir() else [obj]
            return sum(f.stat().st_size for f in files if f.is_file())
        data = pydantic_core.to_json(obj, indent=2)
        (path / VALUE_JSON).fs.pipe_file((path / VALUE_JSON).path, data)
        return len(data)

    def _prepare(
        self,
        context: OutputContext,
        obj: Any,
        path: UPath,
        partition: str | None,
        shared_inputs: list[str],
        started: datetime | None = None,
    ) -> _Prepared:
        """A new version folder (the value, then ``processing.json``) and its DocDB record."""
        started = started or self._started_at(context, partition)
        version = commit.new_version_id(context.run_id)
        folder = commit.version_path(path, version)
        size = self._dump(context, obj, folder)
        self.checkpoint("value_written")
        record, name = self._record(context, folder, partition, started, shared_inputs)
        record_json = record.model_dump_json(indent=2).encode()
        folder.fs.pipe_file((folder / RECORD_FILE).path, record_json)
        self.checkpoint("version_written")
        document = None
        if self._docdb is not None:
            document = lineage.record_document(
                record,
                name,
                asset_key=context.asset_key.to_user_string(),
                partition_key=partition,
                run_id=context.run_id,
                location=self.url_of(path),
                written_at=datetime.now(UTC),
            )
        write = commit.Write(path, version, document, {"run_id": context.run_id})
        return _Prepared(write, obj, partition, record, name, started, size + len(record_json))

    def _commit(self, context: OutputContext, prepared: list[_Prepared]) -> list[dict[str, Any]]:
        """Commit the versions (all at once: :func:`commit.commit_many`); each one's metadata."""
        outcomes = commit.commit_many(
            [p.write for p in prepared],
            docdb=self._docdb,
            collection=self._records_collection,
            lease_ttl_s=self._commit_lease_ttl_s,
            lease_wait_s=3 * self._commit_lease_ttl_s,
            checkpoint=self.checkpoint,
            workers=PARTITION_WRITERS,
        )
        return [self._written(context, p, o) for p, o in zip(prepared, outcomes, strict=True)]

    def _written(
        self, context: OutputContext, p: _Prepared, outcome: commit.Outcome
    ) -> dict[str, Any]:
        if outcome.warning:
            context.log.warning(outcome.warning)
        committed = commit.version_path(p.write.partition, outcome.version)
        meta: dict[str, Any] = {
            "path": MetadataValue.path(self.url_of(committed)),
            # links a browser opens: S3 console, the S3 endpoint, or file:// (resources/urls)
            "output": MetadataValue.url(self.browse(committed, folder=True)),
            "processing_record": MetadataValue.url(self.browse(committed / RECORD_FILE)),
            "record_name": p.name,
            "record": record_table(p.record, p.name, self._records_collection, p.partition),
            "version": outcome.version,
            "duration_s": round((datetime.now(UTC) - p.started).total_seconds(), 3),
            **self._value_metadata(p.value),
        }
        if outcome.committed:
            meta["bytes written"] = p.size
            if outcome.superseded or outcome.removed or outcome.collected:
                meta["replaced"] = (
                    f"{outcome.superseded} record(s) superseded, {outcome.removed} left by "
                    f"crashed writes removed, {len(outcome.collected)} old version(s) deleted"
                )
        else:
            meta["bytes written"] = 0
            meta["superseded"] = f"a later write ({outcome.previous}) committed first"
        return meta

    @staticmethod
    def _value_metadata(obj: Any) -> dict[str, Any]:
        if isinstance(obj, pd.DataFrame):
            return {"rows": len(obj), "columns": list(map(str, obj.columns))}
        if isinstance(obj, list | tuple | dict):
            return {"items": len(obj)}
        return {}

    # -- lineage ------------------------------------------------------------------------------
    def _metadata(self, context: OutputContext, partition: str | None) -> dict[str, Any]:
        """The metadata an output's record is built from: the output's, then the asset's, then
        the partition's own (``context.add_asset_metadata(..., partition_key=key)``) on top."""
        meta = {k: _raw(v) for k, v in (context.output_metadata or {}).items()}
        with contextlib.suppress(Exception):  # no step context (direct IO manager use)
            step = context.step_context
            meta.update(
                {k: _raw(v) for k, v in (step.get_asset_metadata(context.asset_key) or {}).items()}
            )
            if partition is not None:
                scoped = step.get_asset_metadata(context.asset_key, partition_key=partition)
                meta.update({k: _raw(v) for k, v in (scoped or {}).items()})
        return meta

    def _started_at(self, context: OutputContext, partition: str | None = None) -> datetime:
        meta = self._metadata(context, partition)
        if lineage.META_STARTED_AT in meta:
            return datetime.fromisoformat(str(meta[lineage.META_STARTED_AT]))
        step_id = self._step_id(context)
        if step_id in self._step_started:
            return self._step_started[step_id]
        try:
            step = context.step_context
            records = step.instance.get_records_for_run(
                context.run_id, of_type=DagsterEventType.STEP_START
            ).records
            for r in records:
                if r.event_log_entry.step_key == step.step.key:
                    started = datetime.fromtimestamp(r.event_log_entry.timestamp, UTC)
                    self._step_started[step_id] = started
                    return started
        except Exception:  # noqa: BLE001 - outside a run (direct IO manager use): use now
            pass
        return datetime.now(UTC)

    def _shared_inputs(self, context: OutputContext, partitions: Sequence[str]) -> list[str]:
        """Inputs the step loaded that no partition of this output owns (unpartitioned
        upstreams, or upstream partitions of another partitions definition): every partition's.
        Inputs loaded for partition ``k`` stay for ``k`` (see :meth:`_partition_inputs`)."""
        step = self._step_id(context)
        with self._lock:
            loaded = {p: v for (s, p), v in self._inputs.items() if s == step}
            for p in loaded:
                if p is None or p not in partitions:
                    self._inputs.pop((step, p), None)
        return [u for p, urls in loaded.items() if p is None or p not in partitions for u in urls]

    def _partition_inputs(self, context: OutputContext, partition: str | None) -> list[str]:
        with self._lock:
            return self._inputs.pop((self._step_id(context), partition), [])

    def _record(
        self,
        context: OutputContext,
        path: UPath,
        partition: str | None,
        started: datetime,
        shared_inputs: list[str],
    ):
        meta = self._metadata(context, partition)
        defn = {k: _raw(v) for k, v in (context.definition_metadata or {}).items()}
        parameters: dict[str, Any] = {}
        with contextlib.suppress(Exception):  # no step context (direct use) or no config
            parameters.update(context.step_context.op_config or {})
        parameters.update(meta.get(lineage.META_PARAMETERS) or {})
        if partition is not None:
            parameters["partition_key"] = partition
        inputs = list(meta.get(lineage.META_INPUTS) or [])
        inputs += shared_inputs
        if partition is not None:
            inputs += self._partition_inputs(context, partition)
        try:
            code_version = context.asset_spec.code_version
        except Exception:  # noqa: BLE001
            code_version = None
        code = lineage.build_code(
            name=context.asset_key.to_user_string(),
            version=code_version or lineage.package_version(),
            parameters=json.loads(pydantic_core.to_json(parameters)),
            input_data=inputs,
            commit=lineage.git_commit(),
        )
        processing = lineage.build_processing(
            code=code,
            start=started,
            output_location=self.url_of(path),
            output_path=str(path.relative_to(self._base_path)),
            process_type=meta.get(lineage.META_PROCESS_TYPE)
            or defn.get(lineage.META_PROCESS_TYPE)
            or "Other",
            stage=meta.get(lineage.META_STAGE) or defn.get(lineage.META_STAGE) or "Processing",
            notes=meta.get(lineage.META_NOTES) or f"dagster run {context.run_id}",
        )
        return processing, lineage.record_name(code)

    @staticmethod
    def _step_id(context: InputContext | OutputContext) -> tuple[str, str]:
        try:
            step = context.step_context
            return (step.run_id, step.step.key)
        except Exception:  # noqa: BLE001
            return ("", "")

    # -- reading ------------------------------------------------------------------------------
    def _load_partition_from_path(
        self,
        context: InputContext,
        partition_key: str,
        path: UPath,
        backcompat_path: UPath | None = None,
    ) -> Any:
        # remember which upstream partition is loading: its folder is that partition's input
        self._loading.partition = partition_key
        try:
            return super()._load_partition_from_path(context, partition_key, path, backcompat_path)
        finally:
            self._loading.partition = None

    def load_from_path(self, context: InputContext, path: UPath) -> Any:
        value, folder = commit.load_committed(path, lambda f: self._load_folder(context, f))
        partition = getattr(self._loading, "partition", None)
        with self._lock:
            key = (self._step_id(context), partition)
            self._inputs.setdefault(key, []).append(self.url_of(folder))
        return value

    def _load_folder(self, context: InputContext, path: UPath) -> Any:
        """Load the value of one committed folder; FileNotFoundError if it vanished."""
        entries = commit.entries(path)  # one listing, not a request per name
        tops = {e.split("/", 1)[0] for e in entries}
        if RECORD_FILE not in tops:
            raise FileNotFoundError(f"{self.url_of(path)} has no {RECORD_FILE}")
        if VALUE_PARQUET in tops:
            with (path / VALUE_PARQUET).open("rb") as f:
                return pd.read_parquet(f)
        if VALUE_DATA in tops:
            children = sorted({e.split("/")[1] for e in entries if e.startswith(f"{VALUE_DATA}/")})
            if len(children) == 1:
                return path / VALUE_DATA / children[0]
            return path / VALUE_DATA
        raw = commit.read_bytes(path / VALUE_JSON)
        typ = context.dagster_type.typing_type if context.dagster_type else Any
        if context.has_asset_partitions and typing.get_origin(typ) is dict:
            typ = typing.get_args(typ)[1]  # dict[partition key, value]: load one value
        if typ in (Any, object) or getattr(typ, "__name__", "") == "Any":
            return json.loads(raw)
        try:
            return pydantic.TypeAdapter(typ).validate_json(raw)
        except pydantic.PydanticSchemaGenerationError:
            return json.loads(raw)


class ObjectStoreIOManager(ConfigurableIOManagerFactory):
    """The platform's IO manager: outputs under ``root`` and records in DocDB."""

    object_store: ObjectStoreResource
    docdb: DocDBResource
    root: str = Field(description="Where outputs go: s3://bucket/prefix or a local directory")
    records_collection: str = Field(default="processing_records")
    write_records_to_docdb: bool = True
    commit_lease_ttl_s: float = Field(
        default=60.0,
        gt=0,
        description="How long an output's commit lease outlives a writer killed while "
        "committing (the next writer waits at most this long)",
    )

    def create_io_manager(self, context) -> StoreIOManager:  # noqa: ANN001 - dagster hook
        return StoreIOManager(
            base_path=self.object_store.upath(self.root),
            docdb=self.docdb if self.write_records_to_docdb else None,
            records_collection=self.records_collection,
            commit_lease_ttl_s=self.commit_lease_ttl_s,
            endpoint_url=self.object_store.endpoint_url,
        )
