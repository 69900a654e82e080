"""Demo DocDB data-asset records shaped like AIND's, and the NWB files each one holds.

:func:`demo_asset_records` is deterministic for ``(n, seed, start)`` and *prefix-stable*: the
records for ``n`` are the first ``n`` records for any larger ``n`` (same ``_id``s), and ``created``
/ ``last_modified`` grow with generation order — so "new data arrived" is demoed by inserting the
extra records of a larger ``n``.

Layout (default ``n=24``): four subjects, ecephys subjects ``741213`` and ``752014`` (modalities
ecephys + behavior, project "Ephys Platform", names ``ecephys_<subject>_<start>_sorted_<proc>``)
and behavior subjects ``774659`` and ``768823`` (modality behavior, project "Dynamic Foraging",
names ``behavior_<subject>_<start>_processed_<proc>``), one session a day in turn. Every fifth
session (index 1, 6, 11, ...) was processed twice, so ``filter_latest`` with
``filter_by: [data_description.input_data_name]`` matters. Session 4 (ecephys) has no NWB file
(its processing failed: the dispatcher must skip it with a warning) and session 3 (behavior) has
two NWB files (``split_files`` matters). The files a record holds are listed in its
``processing.data_processes[*].outputs.nwb_files``; :func:`demo_nwb_files` reads them and
:func:`write_demo_files` writes them with :func:`aind_assets.demo.nwb.write_demo_nwb`.
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_START",
    "SUBJECTS",
    "demo_asset_records",
    "demo_nwb_files",
    "demo_nwb_kwargs",
    "write_demo_files",
]

#: Day of the first demo session (UTC).
DEFAULT_START = datetime(2025, 6, 2, tzinfo=UTC)
#: (subject_id, kind) in the order sessions rotate through them.
SUBJECTS: list[tuple[str, str]] = [
    ("741213", "ecephys"),
    ("774659", "behavior"),
    ("752014", "ecephys"),
    ("768823", "behavior"),
]
_MODALITIES = {
    "ecephys": [
        {"name": "Extracellular electrophysiology", "abbreviation": "ecephys"},
        {"name": "Behavior", "abbreviation": "behavior"},
    ],
    "behavior": [{"name": "Behavior", "abbreviation": "behavior"}],
}
_PROJECT = {"ecephys": "Ephys Platform", "behavior": "Dynamic Foraging"}
_PROCESS = {
    "ecephys": (
        "sorted",
        "Spike sorting",
        "https://github.com/AllenNeuralDynamics/aind-ephys-pipeline",
    ),
    "behavior": (
        "processed",
        "Other",
        "https://github.com/AllenNeuralDynamics/aind-behavior-pipeline",
    ),
}
_NO_NWB_SESSION = 4
_TWO_NWB_SESSION = 3


def _stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%d_%H-%M-%S")


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _session_records(
    index: int, *, bucket_url: str, seed: int, start: datetime
) -> Iterator[dict[str, Any]]:
    digest = hashlib.sha256(f"aind-demo/{seed}/{index}".encode()).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    subject_id, kind = SUBJECTS[index % len(SUBJECTS)]
    session_start = (start + timedelta(days=index)).replace(
        hour=rng.randint(9, 16), minute=rng.randint(0, 59), second=rng.randint(0, 59)
    )
    raw_name = f"{kind}_{subject_id}_{_stamp(session_start)}"
    label, process_type, code_url = _PROCESS[kind]
    versions = 2 if index % 5 == 1 else 1
    processed = session_start + timedelta(hours=rng.randint(6, 9), minutes=rng.randint(0, 59))
    for version in range(versions):
        if version:
            processed += timedelta(hours=3, minutes=rng.randint(0, 59))
        name = f"{raw_name}_{label}_{_stamp(processed)}"
        if index == _NO_NWB_SESSION:
            nwb_files: list[str] = []
        elif index == _TWO_NWB_SESSION:
            nwb_files = [f"nwb/{name}.nwb", f"nwb/{name}_block2.nwb"]
        else:
            nwb_files = [f"nwb/{name}.nwb"]
        record_id = _uuid(rng)
        code_ocean_id = _uuid(rng)
        last_modified = processed + timedelta(minutes=20, seconds=rng.randint(0, 59))
        yield {
            "_id": record_id,
            "name": name,
            "location": f"{bucket_url.rstrip('/')}/{name}",
            "created": processed,
            "last_modified": last_modified,
            "schema_version": "2.0.0",
            "subject": {
                "subject_id": subject_id,
                "species": {"name": "Mus musculus"},
                "sex": "Female" if int(subject_id) % 2 else "Male",
            },
            "data_description": {
                "name": name,
                "subject_id": subject_id,
                "project_name": _PROJECT[kind],
                "modalities": [dict(m) for m in _MODALITIES[kind]],
                "data_level": "derived",
                "input_data_name": raw_name,
                "creation_time": processed,
                "institution": {
                    "name": "Allen Institute for Neural Dynamics",
                    "abbreviation": "AIND",
                },
            },
            "acquisition": {"acquisition_start_time": session_start},
            "processing": {
                "data_processes": [
                    {
                        "process_type": process_type,
                        "stage": "Processing",
                        "start_date_time": processed - timedelta(hours=1),
                        "end_date_time": processed,
                        "code": {"url": code_url, "version": f"1.{version}.0"},
                        "outputs": {"nwb_files": nwb_files},
                        "notes": None if nwb_files else "NWB packaging failed",
                    }
                ]
            },
            "external_links": {"Code Ocean": [code_ocean_id]},
        }


def demo_asset_records(
    n: int = 24,
    *,
    bucket_url: str,
    seed: int = 0,
    start: datetime = DEFAULT_START,
) -> list[dict[str, Any]]:
    """``n`` AIND-like data-asset records located under ``bucket_url`` (e.g. ``s3://demo-data``).

    Datetimes are timezone-aware UTC; records are in ``created`` order.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    records: list[dict[str, Any]] = []
    index = 0
    while len(records) < n:
        for record in _session_records(index, bucket_url=bucket_url, seed=seed, start=start):
            if len(records) < n:
                records.append(record)
        index += 1
    return records


def _nwb_files_of(record: Mapping[str, Any]) -> list[str]:
    files: list[str] = []
    for process in (record.get("processing") or {}).get("data_processes") or []:
        files.extend((process.get("outputs") or {}).get("nwb_files") or [])
    return files


def demo_nwb_files(records: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Record name → NWB files it holds, relative to its ``location`` (``nwb/<name>.nwb``);
    ``[]`` for a record without any."""
    return {record["name"]: _nwb_files_of(record) for record in records}


def demo_nwb_kwargs(record: Mapping[str, Any], relative_path: str) -> dict[str, Any]:
    """Keyword arguments of :func:`write_demo_nwb` for one file of a record (the seed is derived
    from the record name and path; behavior-only assets have no units)."""
    digest = hashlib.sha256(f"{record['name']}/{relative_path}".encode()).digest()
    abbreviations = {m["abbreviation"] for m in record["data_description"]["modalities"]}
    return {
        "subject_id": record["subject"]["subject_id"],
        "session_start": record["acquisition"]["acquisition_start_time"],
        "seed": int.from_bytes(digest[:8], "big"),
        "n_units": 8 if "ecephys" in abbreviations else 0,
        "n_trials": 40,
    }


def write_demo_files(
    records: Iterable[Mapping[str, Any]], out_dir: str | os.PathLike[str]
) -> dict[str, list[Path]]:
    """Write every record's NWB files to ``out_dir/<name>/<relative path>``; record name → paths.

    Upload ``out_dir/<name>/`` to the record's ``location`` to make the object store match DocDB.
    """
    from aind_assets.demo.nwb import write_demo_nwb

    out = Path(out_dir)
    written: dict[str, list[Path]] = {}
    for record in records:
        paths = []
        for relative in _nwb_files_of(record):
            target = out / record["name"] / relative
            paths.append(write_demo_nwb(target, **demo_nwb_kwargs(record, relative)))
        if not paths:
            # the asset exists but holds no NWB file (its processing failed): a log says so,
            # so that its location exists and dispatch skips it (a missing location fails)
            log = out / record["name"] / "logs" / "processing.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("processing failed: no NWB file was written\n")
        written[record["name"]] = paths
    return written
