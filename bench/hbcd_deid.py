"""Benchmark of HBCD de-identification on a real S3 server (SeaweedFS), not part of the tests.

    python bench/hbcd_deid.py [--sessions 100] [--big-gib 2] [--workers 4] [--header-ids 0.1]

1. Generates an identified BIDS tree of about 1 GiB (``--sessions`` sessions, T1w 176x176x160
   and BOLD 64x64x36x40 int16 NIfTI-gz) and an identity map. Identifiers are planted in every
   name (paths, and the T1w's gzip FNAME, written like ``gzip``/``pigz`` do, with a time), every
   sidecar and TSV, and in the NIfTI header (``descrip``, ``aux_file``, ``db_name``) of a
   fraction ``--header-ids`` of the images; the other headers are what dcm2niix writes
   (``TE=..;Time=..``). BOLD images are written as nibabel writes them (minimal gzip header).
2. Uploads it with ``aws s3 sync`` (local -> S3) and copies it with ``aws s3 sync`` (S3 -> S3,
   server-side copies) on the same server: the baselines.
3. De-identifies it (discovery, every session and the dataset-level files, with ``--workers``
   sessions at a time as concurrent runs would) through :mod:`aind_assets.hbcd.deid.store`,
   then runs the leak scan (the blocking checks of every session and the dataset-level files,
   batched: :func:`~aind_assets.hbcd.deid.scanning.scan_units`; and one unit at a time).
4. Changes 1 % of the sessions and runs discovery + de-identification again (vs the full run)
   and the leak checks of every unit again (incremental: only what changed is read);
   ``aws s3 sync`` of the changed local tree is timed as well.
5. Writes derivatives for every session on the de-identified side (a preprocessed T1w, a mask,
   confounds TSV, JSON, HTML report, log) and re-identifies them all
   (:func:`~aind_assets.hbcd.reid.store.reidentify_derivatives`) against ``aws s3 sync`` S3 -> S3
   of the same derivatives.
6. Peak memory (``VmHWM`` of a fresh process) de-identifying one ``.nii.gz`` of ``--big-gib``
   GiB whose header holds identifiers (so every byte is recompressed), against the same process
   de-identifying a small file.

Prints a Markdown table (ratios from one run) for bench/README.md and writes the numbers to
``bench/hbcd_deid_results.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip

from aind_assets.demo.bids import demo_identity_rows
from aind_assets.hbcd.deid.commit import commit_session_write, marker_url
from aind_assets.hbcd.deid.discovery import plan_requests
from aind_assets.hbcd.deid.ledger import discover_sessions
from aind_assets.hbcd.deid.scanning import scan_dataset, scan_session, scan_units
from aind_assets.hbcd.deid.store import deidentify_dataset, deidentify_session
from aind_assets.hbcd.identity.idmap import IdentityRow, format_identity_map, parse_identity_map
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.hbcd.reid.store import reidentify_derivatives
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.servers import seaweedfs_server
from bench.cpu import CpuMeter

KEY, SECRET = "bench-key", "bench-secret"
BUCKET = "hbcd-bench"
RESULTS = Path(__file__).with_name("hbcd_deid_results.json")


# --- tree generation -----------------------------------------------------------------------


def synthetic_volume(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A smooth head plus noise, int16: compresses like real T1w/BOLD data (also used by
    ``deflate_levels.py``)."""
    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, n) for n in shape[:3]]
    r2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    head = 800 * np.exp(-3 * r2) * (r2 < 0.8)
    if len(shape) == 4:
        head = head[..., None] * (1 + 0.01 * rng.standard_normal(shape[3]))
    return (head + rng.normal(0, 15, shape)).astype(np.int16)


def _write_nifti(
    path: Path, shape: tuple[int, ...], seed: int, row: IdentityRow, *, header_ids: bool
) -> None:
    """A NIfTI-gz: header identifiers when asked (else a dcm2niix-like ``descrip``); a T1w is
    gzipped like the ``gzip``/``pigz`` tools do (FNAME = its identified name, a time), other
    images as nibabel writes them (no name, time 0)."""
    img = nib.Nifti1Image(synthetic_volume(shape, seed), np.diag([1.0, 1.0, 1.0, 1.0]))
    if header_ids:
        img.header["descrip"] = f"{row.pscid}_{row.dccid} TE=2.2".encode()
        img.header["aux_file"] = row.pscid.encode()
        img.header["db_name"] = row.site.encode()
    else:
        img.header["descrip"] = b"TE=2.2;Time=101010.000;phase=1"
    path.parent.mkdir(parents=True, exist_ok=True)
    name, mtime = (path.name[:-3], 1700000000) if "_T1w" in path.name else ("", 0)
    with open(path, "wb") as raw, gzip.GzipFile(name, "wb", 1, raw, mtime=mtime) as gz:
        gz.write(img.to_bytes())


def _session(args: tuple[Path, IdentityRow, str, int, float]) -> int:
    root, row, ses, seed, header_ids = args
    sub = f"sub-{row.dccid}"
    d = root / sub / f"ses-{ses}"
    stem = f"{sub}_ses-{ses}"
    files = {
        f"anat/{stem}_run-001_T1w": (176, 176, 160),
        f"func/{stem}_task-rest_run-001_bold": (64, 64, 36, 40),
    }
    for i, (rel, shape) in enumerate(files.items()):
        planted = random.Random(seed * 10 + i).random() < header_ids
        _write_nifti(d / f"{rel}.nii.gz", shape, seed * 10 + i, row, header_ids=planted)
        sidecar = {
            "PatientName": row.pscid,
            "PatientID": row.dccid,
            "InstitutionName": f"{row.site} MR center",
            "ImageComments": f"{row.pscid}_{row.dccid} visit {ses}",
            "RepetitionTime": 2.4,
        }
        (d / f"{rel}.json").write_text(json.dumps(sidecar, indent=2))
    scans = "filename\tacq_time\tQU_motion\n" + "".join(
        f"{r}.nii.gz\t2024-01-01T10:00:00\t1\n" for r in files
    )
    (d / f"{stem}_scans.tsv").write_text(scans)
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def generate(root: Path, n_sessions: int, header_ids: float) -> tuple[Path, list[IdentityRow]]:
    n_subjects = (n_sessions + 1) // 2
    rows = demo_identity_rows(n_subjects, seed=7)
    bids = root / "assembly_bids"
    bids.mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "bench", "BIDSVersion": "1.9.0"}')
    lines = ["participant_id\tsite\tmedication_code"]
    lines += [f"sub-{r.dccid}\t{r.site}\t9{r.dccid}7" for r in rows]
    (bids / "participants.tsv").write_text("\n".join(lines) + "\n")
    jobs = []
    for i, row in enumerate(rows):
        sessions = ("V02", "V03")[: min(2, n_sessions - 2 * i)]
        sub = bids / f"sub-{row.dccid}"
        sub.mkdir()
        (sub / f"sub-{row.dccid}_sessions.tsv").write_text(
            "session_id\tsite\n" + "".join(f"ses-{s}\t{row.site}\n" for s in sessions)
        )
        jobs += [(bids, row, s, 100 * i + j, header_ids) for j, s in enumerate(sessions)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(_session, jobs))
    map_path = root / "release_identifiers.csv"
    map_path.write_text(format_identity_map(rows))
    return bids, rows


# --- helpers -------------------------------------------------------------------------------


def _aws(endpoint: str, *args: str) -> float:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    aws = shutil.which("aws") or str(Path(sys.executable).parent / "aws")
    t = time.perf_counter()
    subprocess.run(
        [aws, "--endpoint-url", endpoint, "s3", *args, "--only-show-errors"], env=env, check=True
    )
    return time.perf_counter() - t


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def deidentify_all(  # noqa: ANN001
    store, layout, idmap, workers: int, verify_unchanged: bool = True
) -> tuple[float, list[str], dict]:
    """Discovery and every session to de-identify (``workers`` at a time). Returns seconds,
    the sessions done and how the files were written (outcome -> count). ``verify_unchanged``:
    ``HBCD_VERIFY_UNCHANGED_IMAGES`` (:mod:`aind_assets.hbcd.deid.files`)."""
    t = time.perf_counter()
    found = discover_sessions(store, layout, idmap)
    plan = plan_requests(found.discovery, found.ledger, idmap)

    def one(key: str):  # noqa: ANN202
        return deidentify_session(store, layout, idmap, key, verify_unchanged=verify_unchanged)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, plan.sessions))
    if plan.dataset:
        results.append(deidentify_dataset(store, layout, idmap, verify_unchanged=verify_unchanged))
    elapsed = time.perf_counter() - t
    assert all(r.ok for r in results), [r.failed for r in results if not r.ok]
    outcomes: Counter[str] = Counter()
    for r in results:
        outcomes.update(r.outcomes)
    return elapsed, list(plan.sessions), dict(sorted(outcomes.items()))


def scan_all(  # noqa: ANN001
    store,
    layout,
    idmap,
    keys: list[str],
    workers: int,
    incremental: bool = True,
    batched: bool = True,
) -> tuple[float, dict]:
    """The blocking leak checks of every session in ``keys`` and of the dataset-level files
    (incremental, as the checks run; ``incremental=False``: the full audit of
    ``aind-assets hbcd scan``), and the commit of every session that passed (its writing
    marker removed). ``batched``: all units in one
    :func:`~aind_assets.hbcd.deid.scanning.scan_units` call (one listing of the tree, the
    records read in one concurrent batch); else one check per unit, ``workers`` at a time.
    Returns seconds and totals."""
    t = time.perf_counter()
    if batched:
        results = list(
            scan_units(store, layout, idmap, keys, dataset=True, incremental=incremental).values()
        )
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(
                pool.map(
                    lambda k: scan_session(store, layout, idmap, k, incremental=incremental), keys
                )
            )
        results.append(scan_dataset(store, layout, idmap, incremental=incremental))
    assert all(r.clean for r in results), [r.by_kind() for r in results if not r.clean]
    # a passing check commits its session (removes the writing marker, as deid/checks.py does);
    # a batched check removes them all in one request
    if batched:
        store.delete([marker_url(layout.deidentified_root, k) for k in keys])
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda k: commit_session_write(store, layout.deidentified_root, k), keys))
    elapsed = time.perf_counter() - t
    totals = {
        "objects_read": sum(r.scanned for r in results),
        "objects_unchanged_since_clean_scan": sum(r.unchanged for r in results),
        "nifti_gz_read_up_to_voxels": sum(r.voxels_skipped for r in results),
        "bytes_read": sum(r.bytes_scanned for r in results),
    }
    return elapsed, totals


def write_derivatives(store, layout, rows: list[IdentityRow], keys: list[str]) -> int:  # noqa: ANN001
    """Outputs of a pipeline for every session on the de-identified side: a preprocessed T1w
    (server-side copy of the de-identified one), a mask, a confounds TSV, a JSON sidecar, an
    HTML report and a log naming the subject. Returns the number of objects."""
    by_rc = {r.rc_id: r for r in rows}
    jobs: list[tuple[str, str | bytes]] = []
    rng = np.random.default_rng(5)
    mask = nib.Nifti1Image((rng.random((64, 64, 36)) > 0.5).astype(np.uint8), np.eye(4))
    mask_bytes = gzip.compress(mask.to_bytes(), 1, mtime=0)
    for key in keys:
        rc, ses = key[len("sub-") :].split("_ses-")
        row = by_rc[rc]
        sub, stem = f"sub-{rc}", f"sub-{rc}_ses-{ses}"
        out = f"{layout.deidentified_derivatives}/ses-{ses}/benchprep/{sub}/ses-{ses}"
        t1 = f"{layout.deidentified_bids}/{sub}/ses-{ses}/anat/{stem}_run-001_T1w.nii.gz"
        jobs.append((f"{out}/anat/{stem}_desc-preproc_T1w.nii.gz", t1))
        jobs.append((f"{out}/anat/{stem}_desc-brain_mask.nii.gz", mask_bytes))
        confounds = "global_signal\tframewise_displacement\n" + "".join(
            f"{rng.normal():.6f}\t{abs(rng.normal()):.6f}\n" for _ in range(40)
        )
        jobs.append((f"{out}/func/{stem}_desc-confounds_timeseries.tsv", confounds.encode()))
        sidecar = {"Sources": [f"bids:raw:{sub}/ses-{ses}/anat/{stem}_run-001_T1w.nii.gz"]}
        jobs.append((f"{out}/anat/{stem}_desc-preproc_T1w.json", json.dumps(sidecar).encode()))
        report = f"<html><body><h1>{sub} ses-{ses} at {row.anon_site}</h1>" + (
            f"<p>{sub}: motion ok</p>" * 800
        )
        jobs.append((f"{out}/{sub}_ses-{ses}_report.html", report.encode()))
        log = "".join(f"[{i}] processing {sub} ses-{ses}\n" for i in range(300))
        jobs.append((f"{out}/logs/{stem}_benchprep.log", log.encode()))

    def put(job: tuple[str, str | bytes]) -> None:
        url, what = job
        if isinstance(what, str):
            store.copy(what, url)
        else:
            store.put_bytes(url, what)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, jobs))
    return len(jobs)


_CHILD = r"""
import json, sys, time
from aind_assets.hbcd.deid.store import deidentify_session
from aind_assets.hbcd.identity.idmap import parse_identity_map
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.resources.object_store import ObjectStoreResource
cfg = json.loads(sys.argv[1])
store = ObjectStoreResource(**cfg["store"])
idmap = parse_identity_map(open(cfg["map"]).read())
layout = HbcdLayout(cfg["identified"], cfg["deidentified"])
t = time.perf_counter()
result = deidentify_session(store, layout, idmap, cfg["key"])
assert result.ok, result.failed
# VmHWM: this process's own peak (ru_maxrss would include the parent's, kept across exec)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": time.perf_counter() - t, "written": result.written,
                  "outcomes": result.outcomes, "maxrss_kib": hwm}))
"""


def _big_nifti_gz(path: Path, gib: float, row: IdentityRow) -> None:
    """A ``.nii.gz`` of about ``gib`` GiB (compressed) with identifiers in its header, written
    in slabs (never whole in memory)."""
    nx = ny = nz = 256
    slab = synthetic_volume((nx, ny, nz), 1).tobytes(order="F")
    ratio = len(igzip.compress(slab, 1)) / len(slab)
    nt = max(1, round(gib * 2**30 / (len(slab) * ratio)))
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((nx, ny, nz, nt))
    hdr.set_data_dtype(np.int16)
    hdr["descrip"] = f"{row.pscid}_{row.dccid}".encode()
    hdr["vox_offset"] = 352
    path.parent.mkdir(parents=True, exist_ok=True)
    with igzip.open(path, "wb", compresslevel=1) as f:
        f.write(hdr.binaryblock + b"\0" * 4)
        for _ in range(nt):
            f.write(slab)


def peak_memory(store_cfg: dict, map_path: Path, layout, key: str) -> dict:  # noqa: ANN001
    cfg = {
        "store": store_cfg,
        "map": str(map_path),
        "identified": layout.identified_root,
        "deidentified": layout.deidentified_root,
        "key": key,
    }
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(cfg)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--big-gib", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=4, help="sessions de-identified at once")
    parser.add_argument(
        "--header-ids", type=float, default=0.1, help="fraction of images with header identifiers"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="hbcd-bench-"))
    load: list[float] = [os.getloadavg()[0]]
    try:
        t = time.perf_counter()
        bids, rows = generate(tmp / "source", args.sessions, args.header_ids)
        size = _tree_size(bids)
        print(
            f"generated {args.sessions} sessions, {size / 2**30:.2f} GiB in {time.perf_counter() - t:.0f} s"
        )
        idmap = parse_identity_map((tmp / "source/release_identifiers.csv").read_text())
        with seaweedfs_server(tmp / "weed", tmp / "weed.log", KEY, SECRET) as server:
            endpoint = f"http://127.0.0.1:{server.port}"
            store_cfg = {
                "root": f"s3://{BUCKET}",
                "endpoint_url": endpoint,
                "access_key_id": KEY,
                "secret_access_key": SECRET,
            }
            store = ObjectStoreResource(**store_cfg)
            store.ensure_root()
            layout = HbcdLayout(f"s3://{BUCKET}/pr", f"s3://{BUCKET}/deid")

            load.append(os.getloadavg()[0])
            assert server.proc is not None
            cpu = CpuMeter(server.proc.pid)
            with cpu.measure("aws_upload"):
                t_upload = _aws(endpoint, "sync", str(bids), f"{layout.identified_bids}/")
            with cpu.measure("aws_s3_to_s3"):
                t_copy = _aws(
                    endpoint,
                    "sync",
                    f"{layout.identified_bids}/",
                    f"s3://{BUCKET}/copy/assembly_bids/",
                )
            print(f"aws s3 sync: upload {t_upload:.1f} s, S3->S3 {t_copy:.1f} s")

            load.append(os.getloadavg()[0])
            with cpu.measure("deid"):
                t_full, keys, outcomes = deidentify_all(store, layout, idmap, args.workers)
            files_full = sum(outcomes.values())
            print(
                f"de-identified {len(keys)} sessions ({files_full} files) in {t_full:.1f} s: {outcomes}"
            )
            # the same with unchanged images trusted (head and trailer read): from the S3 -> S3
            # copy (a ledger of its own), to a side of its own
            trusted = HbcdLayout(f"s3://{BUCKET}/copy", f"s3://{BUCKET}/deid-trusted")
            with cpu.measure("deid_unchanged_images_trusted"):
                t_trusted, _, trusted_outcomes = deidentify_all(
                    store, trusted, idmap, args.workers, verify_unchanged=False
                )
            print(f"de-identified again, unchanged images trusted: {t_trusted:.1f} s")
            print(f"CPU seconds (client, server): {cpu.steps}")
            load.append(os.getloadavg()[0])
            t_scan, scan_totals = scan_all(store, layout, idmap, keys, args.workers)
            print(f"leak scan in {t_scan:.1f} s: clean, {scan_totals}")
            # the same checks one unit at a time (a check per partition), then batched again:
            # both after the first scan (nothing left to read: listings and records only)
            t_each, _ = scan_all(store, layout, idmap, keys, args.workers, batched=False)
            t_batch_again, _ = scan_all(store, layout, idmap, keys, args.workers)
            print(
                f"leak checks again: one unit at a time {t_each:.2f} s, batched {t_batch_again:.2f} s"
            )
            t_audit, audit_totals = scan_all(store, layout, idmap, keys, args.workers, False)
            print(f"full scan (nothing trusted) in {t_audit:.1f} s: clean, {audit_totals}")

            t_noop, noop_keys, _ = deidentify_all(store, layout, idmap, args.workers)
            assert noop_keys == []

            # 1 % of the sessions change (their T1w sidecar and BOLD image)
            changed = max(1, args.sessions // 100)
            rnd = random.Random(3)
            for row in rnd.sample(rows, changed):
                ses = bids / f"sub-{row.dccid}" / "ses-V02"
                sidecar = next(ses.glob("anat/*_T1w.json"))
                sidecar.write_text(sidecar.read_text().replace("2.4", "2.5"))
                bold = next(ses.glob("func/*_bold.nii.gz"))
                _write_nifti(bold, (64, 64, 36, 40), 999, row, header_ids=False)
            t_sync_changed = _aws(endpoint, "sync", str(bids), f"{layout.identified_bids}/")
            t_rerun, rerun_keys, rerun_outcomes = deidentify_all(store, layout, idmap, args.workers)
            assert len(rerun_keys) == changed, (rerun_keys, changed)
            t_rescan, rescan_totals = scan_all(store, layout, idmap, keys, args.workers)
            print(
                f"re-run with {changed} changed session(s): {t_rerun:.2f} s, "
                f"{sum(rerun_outcomes.values())} files written; leak checks of every unit "
                f"{t_rescan:.2f} s, {rescan_totals}"
            )

            # re-identification of derivatives
            load.append(os.getloadavg()[0])
            n_deriv = write_derivatives(store, layout, rows, keys)
            t_deriv_copy = _aws(
                endpoint,
                "sync",
                f"{layout.deidentified_derivatives}/",
                f"s3://{BUCKET}/copy/derivatives/",
            )
            t = time.perf_counter()
            reid = reidentify_derivatives(store, layout, idmap)
            t_reid = time.perf_counter() - t
            assert not reid.failed and len(reid.new) == n_deriv, (reid.failed, len(reid.new))
            print(
                f"re-identified {n_deriv} derivatives in {t_reid:.1f} s (aws {t_deriv_copy:.1f} s)"
            )

            # peak memory: one file of --big-gib GiB in a session of its own
            load.append(os.getloadavg()[0])
            big_row = rows[0]
            base = tmp / "big" / f"sub-{big_row.dccid}" / "ses-V09" / "anat"
            _big_nifti_gz(base / f"sub-{big_row.dccid}_ses-V09_T1w.nii.gz", args.big_gib, big_row)
            big_size = (base / f"sub-{big_row.dccid}_ses-V09_T1w.nii.gz").stat().st_size
            small_dir = tmp / "small" / f"sub-{big_row.dccid}" / "ses-V08" / "anat"
            _big_nifti_gz(small_dir / f"sub-{big_row.dccid}_ses-V08_T1w.nii.gz", 1 / 64, big_row)
            small_size = (small_dir / f"sub-{big_row.dccid}_ses-V08_T1w.nii.gz").stat().st_size
            for local in (tmp / "big", tmp / "small"):
                store.put_tree(local, layout.identified_bids)
                shutil.rmtree(local)
            map_path = tmp / "source/release_identifiers.csv"
            small = peak_memory(store_cfg, map_path, layout, f"sub-{big_row.rc_id}_ses-V08")
            big = peak_memory(store_cfg, map_path, layout, f"sub-{big_row.rc_id}_ses-V09")
            load.append(os.getloadavg()[0])
            print(
                f"peak RSS: {small_size / 2**20:.0f} MiB file {small['maxrss_kib'] / 1024:.0f} MiB, "
                f"{big_size / 2**30:.2f} GiB file {big['maxrss_kib'] / 1024:.0f} MiB "
                f"({big['seconds']:.1f} s, {big['outcomes']})"
            )

        results = {
            "sessions": args.sessions,
            "tree_gib": size / 2**30,
            "files": files_full,
            "workers": args.workers,
            "cores": os.cpu_count(),
            "header_ids_fraction": args.header_ids,
            "load_average_1min_samples": [round(x, 2) for x in load],
            "aws_upload_seconds": t_upload,
            "aws_s3_to_s3_seconds": t_copy,
            "deid_seconds": t_full,
            "deid_outcomes": outcomes,
            "deid_ratio_vs_aws_upload": t_full / t_upload,
            "deid_ratio_vs_aws_s3_to_s3": t_full / t_copy,
            "deid_unchanged_images_trusted_seconds": t_trusted,
            "deid_unchanged_images_trusted_outcomes": trusted_outcomes,
            "deid_unchanged_images_trusted_ratio_vs_aws_upload": t_trusted / t_upload,
            "deid_unchanged_images_trusted_ratio_vs_aws_s3_to_s3": t_trusted / t_copy,
            "cpu_seconds": cpu.steps,
            "leak_scan_seconds": t_scan,
            "leak_scan_ratio": t_scan / t_full,
            "leak_scan_totals": scan_totals,
            "leak_scan_again_one_unit_at_a_time_seconds": t_each,
            "leak_scan_again_batched_seconds": t_batch_again,
            "full_scan_nothing_trusted_seconds": t_audit,
            "full_scan_nothing_trusted_ratio": t_audit / t_full,
            "full_scan_nothing_trusted_totals": audit_totals,
            "rerun_nothing_changed_seconds": t_noop,
            "rerun_changed_sessions": changed,
            "rerun_seconds": t_rerun,
            "rerun_ratio_vs_full": t_rerun / t_full,
            "rerun_outcomes": rerun_outcomes,
            "aws_sync_of_change_seconds": t_sync_changed,
            "rerun_leak_scan_seconds": t_rescan,
            "rerun_leak_scan_totals": rescan_totals,
            "reid_objects": n_deriv,
            "reid_seconds": t_reid,
            "aws_s3_to_s3_derivatives_seconds": t_deriv_copy,
            "reid_ratio_vs_aws_s3_to_s3": t_reid / t_deriv_copy,
            "big_file_gib": big_size / 2**30,
            "big_file_seconds": big["seconds"],
            "big_file_outcomes": big["outcomes"],
            "peak_rss_mib": big["maxrss_kib"] / 1024,
            "small_file_mib": small_size / 2**20,
            "peak_rss_small_file_mib": small["maxrss_kib"] / 1024,
        }
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        lo, hi = min(load), max(load)
        rows_out = [
            (
                "tree",
                f"{args.sessions} sessions, {size / 2**30:.2f} GiB ({files_full} files), "
                f"{args.workers} sessions at a time, {os.cpu_count()} cores, load {lo:.0f}-{hi:.0f}",
            ),
            ("how the files were written", ", ".join(f"{k} {v}" for k, v in outcomes.items())),
            ("`aws s3 sync` local -> S3 (upload)", f"{t_upload:.1f} s"),
            ("`aws s3 sync` S3 -> S3 (server-side copy)", f"{t_copy:.1f} s"),
            ("de-identification, full run (S3 -> S3)", f"{t_full:.1f} s"),
            ("**full de-identification / `aws s3 sync` S3 -> S3**", f"**{t_full / t_copy:.2f}x**"),
            ("**full de-identification / `aws s3 sync` upload**", f"**{t_full / t_upload:.2f}x**"),
            (
                "de-identification, unchanged images trusted (`HBCD_VERIFY_UNCHANGED_IMAGES=0`)",
                f"{t_trusted:.1f} s: {t_trusted / t_copy:.2f}x S3 -> S3, "
                f"{t_trusted / t_upload:.2f}x upload",
            ),
            (
                "CPU seconds, client / S3 server (the server shares the cores here)",
                "; ".join(
                    f"{k}: {v['client_cpu_s']:.1f} / {v['server_cpu_s']:.1f}"
                    for k, v in cpu.steps.items()
                ),
            ),
            (
                f"re-identification of {n_deriv} derivatives (S3 -> S3)",
                f"{t_reid:.1f} s (`aws s3 sync` S3 -> S3 of them: {t_deriv_copy:.1f} s)",
            ),
            (
                "**full re-identification / `aws s3 sync` S3 -> S3**",
                f"**{t_reid / t_deriv_copy:.2f}x**",
            ),
            (
                "blocking leak scan after the full run (every unit's check)",
                f"{t_scan:.2f} s, {scan_totals['objects_read']} objects read "
                f"({scan_totals['objects_unchanged_since_clean_scan']} recorded clean when "
                "written)",
            ),
            ("**blocking leak scan / de-identification**", f"**{t_scan / t_full:.3f}x**"),
            (
                "leak checks again, nothing to read: one unit at a time / batched",
                f"{t_each:.2f} s ({t_each / t_full:.3f}x) / {t_batch_again:.2f} s "
                f"({t_batch_again / t_full:.3f}x)",
            ),
            (
                "full scan trusting no record (`aind-assets hbcd scan`)",
                f"{t_audit:.2f} s ({t_audit / t_full:.3f}x the de-identification), "
                f"{audit_totals['objects_read']} objects, "
                f"{audit_totals['bytes_read'] / 2**20:.0f} MiB read "
                f"({audit_totals['nifti_gz_read_up_to_voxels']} NIfTI-gz up to their voxels)",
            ),
            (
                f"re-run, {changed} of {args.sessions} sessions changed: de-identification",
                f"{t_rerun:.2f} s ({t_rerun / t_full:.3f}x the full run; `aws s3 sync` of the "
                f"change {t_sync_changed:.1f} s)",
            ),
            (
                "re-run: leak checks of every unit",
                f"{t_rescan:.2f} s, {rescan_totals['objects_read']} objects read "
                f"({rescan_totals['objects_unchanged_since_clean_scan']} unchanged, not read)",
            ),
            (
                "re-run, nothing changed (discovery + ledger)",
                f"{t_noop:.2f} s ({t_noop / t_full:.3f}x the full run)",
            ),
            (
                f"**peak RSS de-identifying a {big_size / 2**30:.2f} GiB `.nii.gz`** "
                "(header identifiers: every byte recompressed)",
                f"**{big['maxrss_kib'] / 1024:.0f} MiB** ({small_size / 2**20:.0f} MiB file: "
                f"{small['maxrss_kib'] / 1024:.0f} MiB)",
            ),
        ]
        print("\n| measure | result |\n| --- | --- |")
        for k, v in rows_out:
            print(f"| {k} | {v} |")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


if __name__ == "__main__":
    main()
