"""Environment variables → resources. The one place configuration is read.

With nothing set, the **embedded default** runs on one machine with no cloud credentials:
object store = a local directory under ``AIND_DATA_DIR`` (``./data``), DocDB = the local
file-backed Mongo-wire server the run command starts on ``AIND_EMBEDDED_DOCDB_PORT``.
Secrets (the DocDB URI, AWS keys) reach Dagster resources as ``dagster.EnvVar`` so their values
never land in run config, tags or logs.

| variable | meaning | default |
| --- | --- | --- |
| ``AIND_DATA_DIR`` | local data dir (embedded store, DocDB file, logs) | ``./data`` |
| ``AIND_DOCDB_URI`` | MongoDB/DocumentDB URI (secret) | embedded server |
| ``AIND_DOCDB_DATABASE`` | database | ``aind_assets`` |
| ``AIND_DOCDB_ASSETS_COLLECTION`` | data-asset records | ``data_assets`` |
| ``AIND_DOCDB_RECORDS_COLLECTION`` | processing records of materializations | ``processing_records`` |
| ``AIND_DOCDB_RESULTS_COLLECTION`` | analysis result records | ``analysis_results`` |
| ``AIND_EMBEDDED_DOCDB_PORT`` | port of the embedded DocDB | ``27027`` |
| ``AIND_STORE_ROOT`` | default object-store root: ``s3://bucket/prefix`` or a directory | ``$AIND_DATA_DIR/store`` |
| ``AIND_S3_ENDPOINT_URL`` | S3 endpoint (SeaweedFS, MinIO…); unset for AWS | none |
| ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` | S3 credentials (secret) | AWS chain |
| ``AIND_S3_ANONYMOUS_BUCKETS`` | buckets read without credentials (public data), comma separated | none |
| ``AIND_MAX_QUEUED_RUNS_PER_FLOW`` | runs of one flow a sensor may leave waiting in the queue (people's runs go first regardless) | ``8`` |
| ``AIND_NUM_PARALLEL_WORKERS`` | work items run at once in a step: analysis jobs (of all partitions of a run), HBCD subjects of a de-identification batch (run config ``num_parallel_workers`` wins) | ``4`` |
| ``AIND_RUN_BATCH_SIZE`` | partitions per run that the analysis discovery sensors request (1: one run per partition) | ``10`` |
| ``HBCD_RUN_BATCH_SIZE`` | most sessions per run that the HBCD de-identification sensor and schedule request (1: one run per session); a tick's sessions are spread over the flow's run slots (the ``aind/flow: hbcd`` limit of the run queue) | ``AIND_RUN_BATCH_SIZE`` if set, else ``50`` |
| ``HBCD_VERIFY_UNCHANGED_IMAGES`` | ``1``: an unchanged ``.nii.gz`` is read and inflated (CRC-32) while the server copies it; ``0``: only its head and last 8 bytes are read (hbcd/deid/files.py) | ``1`` |
| ``AIND_EXPERIMENTER`` | experimenter named in analysis records (a run's ``aind/experimenter`` tag wins) | ``unknown`` |
| ``AIND_IO_ROOT`` | where the IO manager writes outputs | ``$AIND_STORE_ROOT/dagster-io`` |
| ``AIND_DATA_ASSETS_ROOT`` | where (demo) data assets live | ``$AIND_STORE_ROOT/data-assets`` |
| ``AIND_RESULTS_ROOT`` | analysis results root | ``$AIND_STORE_ROOT/analysis-results`` |
| ``HBCD_IDENTIFIED_ROOT`` | identified side (PR bucket) | ``$AIND_STORE_ROOT/hbcd-pr`` |
| ``HBCD_DEIDENTIFIED_ROOT`` | de-identified side | ``$AIND_STORE_ROOT/hbcd-deid`` |
| ``HBCD_STAGING_ROOT`` | release staging | ``$AIND_STORE_ROOT/hbcd-staging`` |
| ``AIND_EXAMPLES_OUT_OF_PROCESS`` | ``1``: the packaged example analyses run in their own environment through Dagster Pipes (docs/analysis.md) | ``0`` (in process) |
| ``HBCD_OBSERVER_INTERVAL_S`` | minimum seconds between ticks of ``hbcd_identified_observer`` (read at import) | ``300`` |
| ``HBCD_IDENTITY_MAP`` | identifier map CSV (identified side) | ``$HBCD_IDENTIFIED_ROOT/identifiers/release_identifiers.csv`` |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import EnvVar
from pydantic import BaseModel

from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url
from aind_assets.settings_checks import SettingsError, check_environment

DEFAULT_EMBEDDED_DOCDB_PORT = 27027

__all__ = ["Settings", "SettingsError", "examples_out_of_process", "flag"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def flag(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    """A yes/no variable (1/0, true/false, yes/no, on/off; unset: ``default``)."""
    raw = (os.environ if env is None else env).get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value not in _TRUE | _FALSE:
        raise SettingsError(f"{name}={raw!r}: use 1/0, true/false, yes/no")
    return value in _TRUE


def examples_out_of_process(env: Mapping[str, str] | None = None) -> bool:
    """``AIND_EXAMPLES_OUT_OF_PROCESS``: the packaged example analyses run out of process (read
    when they register, at import)."""
    return flag("AIND_EXAMPLES_OUT_OF_PROCESS", False, env)


class Settings(BaseModel):
    """Resolved configuration (secrets are kept as the *names* of their variables)."""

    data_dir: Path
    docdb_uri: str | None
    docdb_database: str = "aind_assets"
    assets_collection: str = "data_assets"
    records_collection: str = "processing_records"
    results_collection: str = "analysis_results"
    embedded_docdb_port: int = DEFAULT_EMBEDDED_DOCDB_PORT
    max_queued_runs_per_flow: int = 8
    store_root: str
    s3_endpoint_url: str | None = None
    aws_key_set: bool = False
    s3_anonymous_buckets: list[str] = []
    experimenter: str | None = None
    examples_out_of_process: bool = False
    num_parallel_workers: int = 4
    run_batch_size: int = 10
    hbcd_run_batch_size: int = 50
    hbcd_verify_unchanged_images: bool = True
    io_root: str
    data_assets_root: str
    results_root: str
    hbcd_identified_root: str
    hbcd_deidentified_root: str
    hbcd_staging_root: str
    hbcd_identity_map: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        check_environment(env)

        def get(name: str, default: Any = None) -> Any:
            value = env.get(name)
            return value if value not in (None, "") else default

        data_dir = Path(get("AIND_DATA_DIR", "data")).absolute()
        store = get("AIND_STORE_ROOT", str(data_dir / "store"))
        if not store.startswith("s3://"):
            store = str(Path(store).absolute())
        identified = get("HBCD_IDENTIFIED_ROOT", join_url(store, "hbcd-pr"))
        return cls(
            data_dir=data_dir,
            docdb_uri=get("AIND_DOCDB_URI"),
            docdb_database=get("AIND_DOCDB_DATABASE", "aind_assets"),
            assets_collection=get("AIND_DOCDB_ASSETS_COLLECTION", "data_assets"),
            records_collection=get("AIND_DOCDB_RECORDS_COLLECTION", "processing_records"),
            results_collection=get("AIND_DOCDB_RESULTS_COLLECTION", "analysis_results"),
            embedded_docdb_port=int(get("AIND_EMBEDDED_DOCDB_PORT", DEFAULT_EMBEDDED_DOCDB_PORT)),
            max_queued_runs_per_flow=int(get("AIND_MAX_QUEUED_RUNS_PER_FLOW", 8)),
            store_root=store,
            s3_endpoint_url=get("AIND_S3_ENDPOINT_URL"),
            aws_key_set=bool(get("AWS_ACCESS_KEY_ID")),
            s3_anonymous_buckets=[
                b.strip().removeprefix("s3://").strip("/")
                for b in get("AIND_S3_ANONYMOUS_BUCKETS", "").split(",")
                if b.strip()
            ],
            experimenter=get("AIND_EXPERIMENTER"),
            examples_out_of_process=examples_out_of_process(env),
            num_parallel_workers=int(get("AIND_NUM_PARALLEL_WORKERS", 4)),
            run_batch_size=int(get("AIND_RUN_BATCH_SIZE", 10)),
            hbcd_run_batch_size=int(get("HBCD_RUN_BATCH_SIZE", get("AIND_RUN_BATCH_SIZE", 50))),
            hbcd_verify_unchanged_images=flag("HBCD_VERIFY_UNCHANGED_IMAGES", True, env),
            io_root=get("AIND_IO_ROOT", join_url(store, "dagster-io")),
            data_assets_root=get("AIND_DATA_ASSETS_ROOT", join_url(store, "data-assets")),
            results_root=get("AIND_RESULTS_ROOT", join_url(store, "analysis-results")),
            hbcd_identified_root=identified,
            hbcd_deidentified_root=get("HBCD_DEIDENTIFIED_ROOT", join_url(store, "hbcd-deid")),
            hbcd_staging_root=get("HBCD_STAGING_ROOT", join_url(store, "hbcd-staging")),
            hbcd_identity_map=get(
                "HBCD_IDENTITY_MAP", join_url(identified, "identifiers/release_identifiers.csv")
            ),
        )

    @property
    def embedded(self) -> bool:
        """True when DocDB is the local server the run command starts."""
        return self.docdb_uri is None

    @property
    def embedded_docdb_uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.embedded_docdb_port}/?directConnection=true"

    @property
    def embedded_docdb_path(self) -> Path:
        return self.data_dir / "docdb" / "docdb.sqlite"

    # -- resources ----------------------------------------------------------------------------
    def docdb(self, *, for_dagster: bool = False) -> DocDBResource:
        """The DocDB resource; inside Dagster the URI stays an ``EnvVar`` (it may hold a password)."""
        if self.docdb_uri is None:
            uri: Any = self.embedded_docdb_uri
        else:
            uri = EnvVar("AIND_DOCDB_URI") if for_dagster else self.docdb_uri
        return DocDBResource(uri=uri, database=self.docdb_database)

    def object_store(self, *, for_dagster: bool = False) -> ObjectStoreResource:
        kwargs: dict[str, Any] = {
            "root": self.store_root,
            "endpoint_url": self.s3_endpoint_url,
            "anonymous_buckets": list(self.s3_anonymous_buckets),
        }
        if self.aws_key_set:
            if for_dagster:
                kwargs["access_key_id"] = EnvVar("AWS_ACCESS_KEY_ID")
                kwargs["secret_access_key"] = EnvVar("AWS_SECRET_ACCESS_KEY")
            else:
                kwargs["access_key_id"] = os.environ.get("AWS_ACCESS_KEY_ID")
                kwargs["secret_access_key"] = os.environ.get("AWS_SECRET_ACCESS_KEY")
        return ObjectStoreResource(**kwargs)

    def describe(self) -> dict[str, Any]:
        """Settings safe to print: no secret, and the DocDB URI redacted."""
        from aind_assets.resources.docdb import redact_uri

        out = self.model_dump(mode="json")
        out["docdb_uri"] = (
            redact_uri(self.docdb_uri)
            if self.docdb_uri
            else f"embedded ({self.embedded_docdb_uri})"
        )
        return out
