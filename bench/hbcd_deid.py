"""Benchmark of HBCD de-identification on a real S3 server (SeaweedFS), not part of the tests.

    /work/venv/bin/python bench/hbcd_deid.py [--sessions 100] [--big-gib 2] [--workers 4]

1. Generates an identified BIDS tree of about 1 GiB (``--sessions`` sessions, T1w 176x176x160
   and BOLD 64x64x36x40 int16 NIfTI-gz with identifiers planted as in the demo tree) and an
   identity map.
2. Uploads it with ``aws s3 sync`` (local -> S3) and copies it with ``aws s3 sync`` (S3 -> S3,
   server-side copies) on the same server: the baselines.
3. De-identifies it (discovery, every session and the dataset-level files, with ``--workers``
   sessions at a time as concurrent runs would) through :mod:`aind_assets.hbcd.deid.store`, then runs
   the leak scan (the blocking check) over the result.
4. Changes 1 % of the sessions and runs discovery + de-identification again (vs the full run);
   ``aws s3 sync`` of the changed local tree is timed as well.
5. Peak memory (max RSS of a fresh process) of de-identifying one file of ``--big-gib`` GiB
   (uncompressed ``.nii`` S3 -> S3), against the same process de-identifying a 1 MiB file.

Prints a Markdown table (ratios from one run) for bench/README.md.
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
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np

from aind_assets.demo.bids import demo_identity_rows
from aind_assets.hbcd.deid.discovery import plan_requests
from aind_assets.hbcd.deid.store import (
    deidentify_dataset,
    deidentify_session,
    discover_sessions,
    scan_objects,
)
from aind_assets.hbcd.identity.idmap import IdentityRow, format_identity_map, parse_identity_map
from aind_assets.hbcd.layout import HbcdLayout
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.servers import seaweedfs_server

KEY, SECRET = "bench-key", "bench-secret"
BUCKET = "hbcd-bench"


# --- tree generation -----------------------------------------------------------------------


def _volume(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, n) for n in shape[:3]]
    r2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    head = 800 * np.exp(-3 * r2) * (r2 < 0.8)
    if len(shape) == 4:
        head = head[..., None] * (1 + 0.01 * rng.standard_normal(shape[3]))
    return (head + rng.normal(0, 15, shape)).astype(np.int16)


def _write_nifti(path: Path, shape: tuple[int, ...], seed: int, row: IdentityRow) -> None:
    img = nib.Nifti1Image(_volume(shape, seed), np.diag([1.0, 1.0, 1.0, 1.0]))
    img.header["descrip"] = f"{row.pscid}_{row.dccid} TE=2.2".encode()
    img.header["aux_file"] = row.pscid.encode()
    img.header["db_name"] = row.site.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(path.name[:-3], "wb", 1, raw, mtime=0) as gz:
        gz.write(img.to_bytes())


def _session(args: tuple[Path, IdentityRow, str, int]) -> int:
    root, row, ses, seed = args
    sub = f"sub-{row.dccid}"
    d = root / sub / f"ses-{ses}"
    stem = f"{sub}_ses-{ses}"
    files = {
        f"anat/{stem}_run-001_T1w": (176, 176, 160),
        f"func/{stem}_task-rest_run-001_bold": (64, 64, 36, 40),
    }
    for i, (rel, shape) in enumerate(files.items()):
        _write_nifti(d / f"{rel}.nii.gz", shape, seed * 10 + i, row)
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


def generate(root: Path, n_sessions: int) -> tuple[Path, list[IdentityRow]]:
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
        jobs += [(bids, row, s, 100 * i + j) for j, s in enumerate(sessions)]
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


def deidentify_all(store, layout, idmap, workers: int) -> tuple[float, int, int]:  # noqa: ANN001
    """Discovery and every session to de-identify (``workers`` at a time). Returns seconds,
    sessions done and files written."""
    t = time.perf_counter()
    found = discover_sessions(store, layout, idmap)
    plan = plan_requests(found.discovery, found.ledger, idmap)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            pool.map(lambda k: deidentify_session(store, layout, idmap, k), plan.sessions)
        )
    if plan.dataset:
        results.append(deidentify_dataset(store, layout, idmap))
    elapsed = time.perf_counter() - t
    assert all(r.ok for r in results), [r.failed for r in results if not r.ok]
    return elapsed, len(plan.sessions), sum(len(r.written) for r in results)


_CHILD = r"""
import json, sys, time
from aind_assets.hbcd.identity.idmap import parse_identity_map
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
print(json.dumps({"seconds": time.perf_counter() - t, "written": result.written, "maxrss_kib": hwm}))
"""


def _big_nifti(path: Path, gib: float, row: IdentityRow) -> None:
    """An uncompressed NIfTI of ``gib`` GiB written in slabs (never whole in memory)."""
    nz = 256
    nx = ny = 256
    nt = max(1, int(gib * 2**30 / (nx * ny * nz * 2)))
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((nx, ny, nz, nt))
    hdr.set_data_dtype(np.int16)
    hdr["descrip"] = f"{row.pscid}_{row.dccid}".encode()
    hdr["vox_offset"] = 352
    slab = _volume((nx, ny, nz), 1).tobytes(order="F")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
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
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="hbcd-bench-"))
    rows_out: list[tuple[str, str]] = []
    try:
        t = time.perf_counter()
        bids, rows = generate(tmp / "source", args.sessions)
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

            t_upload = _aws(endpoint, "sync", str(bids), f"{layout.identified_bids}/")
            t_copy = _aws(
                endpoint, "sync", f"{layout.identified_bids}/", f"s3://{BUCKET}/copy/assembly_bids/"
            )
            print(f"aws s3 sync: upload {t_upload:.1f} s, S3->S3 {t_copy:.1f} s")

            t_full, n_full, files_full = deidentify_all(store, layout, idmap, args.workers)
            print(f"de-identified {n_full} sessions ({files_full} files) in {t_full:.1f} s")
            t = time.perf_counter()
            scan = scan_objects(
                store, store.list_objects(layout.deidentified_bids), layout.deidentified_bids, idmap
            )
            t_scan = time.perf_counter() - t
            assert scan.clean, scan.by_kind()
            print(f"leak scan of {scan.scanned} objects in {t_scan:.1f} s: clean")

            t_noop, n_noop, _ = deidentify_all(store, layout, idmap, args.workers)
            assert n_noop == 0

            # 1 % of the sessions change (their T1w sidecar and BOLD image)
            changed = max(1, args.sessions // 100)
            rnd = random.Random(3)
            for row in rnd.sample(rows, changed):
                ses = bids / f"sub-{row.dccid}" / "ses-V02"
                sidecar = next(ses.glob("anat/*_T1w.json"))
                sidecar.write_text(sidecar.read_text().replace("2.4", "2.5"))
                bold = next(ses.glob("func/*_bold.nii.gz"))
                _write_nifti(bold, (64, 64, 36, 40), 999, row)
            t_sync_changed = _aws(endpoint, "sync", str(bids), f"{layout.identified_bids}/")
            t_rerun, n_rerun, files_rerun = deidentify_all(store, layout, idmap, args.workers)
            assert n_rerun == changed, (n_rerun, changed)
            print(
                f"re-run with {changed} changed session(s): {t_rerun:.2f} s, {files_rerun} files written"
            )

            # peak memory: one file of --big-gib GiB in a session of its own
            big_row = rows[0]
            base = tmp / "big" / f"sub-{big_row.dccid}" / "ses-V09" / "anat"
            _big_nifti(base / f"sub-{big_row.dccid}_ses-V09_T1w.nii", args.big_gib, big_row)
            big_size = (base / f"sub-{big_row.dccid}_ses-V09_T1w.nii").stat().st_size
            small_dir = tmp / "small" / f"sub-{big_row.dccid}" / "ses-V08" / "anat"
            _big_nifti(small_dir / f"sub-{big_row.dccid}_ses-V08_T1w.nii", 1 / 1024, big_row)
            for local in (tmp / "big", tmp / "small"):
                store.put_tree(local, layout.identified_bids)
            small = peak_memory(
                store_cfg,
                tmp / "source/release_identifiers.csv",
                layout,
                f"sub-{big_row.rc_id}_ses-V08",
            )
            big = peak_memory(
                store_cfg,
                tmp / "source/release_identifiers.csv",
                layout,
                f"sub-{big_row.rc_id}_ses-V09",
            )
            print(
                f"peak RSS: 1 MiB file {small['maxrss_kib'] / 1024:.0f} MiB, {big_size / 2**30:.1f} GiB file {big['maxrss_kib'] / 1024:.0f} MiB ({big['seconds']:.1f} s)"
            )

        rows_out = [
            (
                "tree",
                f"{args.sessions} sessions, {size / 2**30:.2f} GiB ({files_full} files), {args.workers} sessions at a time, {os.cpu_count()} cores",
            ),
            ("`aws s3 sync` local -> S3 (upload)", f"{t_upload:.1f} s"),
            ("`aws s3 sync` S3 -> S3 (server-side copy)", f"{t_copy:.1f} s"),
            ("de-identification, full run (S3 -> S3)", f"{t_full:.1f} s"),
            ("ratio de-identification / `aws s3 sync` upload", f"{t_full / t_upload:.1f}x"),
            ("ratio de-identification / `aws s3 sync` S3 -> S3", f"{t_full / t_copy:.1f}x"),
            (
                "leak scan of the whole result (the blocking check)",
                f"{t_scan:.1f} s ({t_scan / t_full:.2f}x the de-identification)",
            ),
            (
                "re-run, nothing changed (discovery + ledger)",
                f"{t_noop:.2f} s ({t_noop / t_full:.3f}x the full run)",
            ),
            (
                f"re-run, {changed} of {args.sessions} sessions changed",
                f"{t_rerun:.2f} s ({t_rerun / t_full:.3f}x the full run; `aws s3 sync` of the change {t_sync_changed:.1f} s)",
            ),
            (
                f"peak RSS de-identifying a {big_size / 2**30:.1f} GiB file",
                f"{big['maxrss_kib'] / 1024:.0f} MiB (1 MiB file: {small['maxrss_kib'] / 1024:.0f} MiB)",
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
