"""Per-image statistics and QC metrics from NIfTI voxel data (pure; no Dagster).

The local processing pipeline of the HBCD flow (:data:`PIPELINE`). Each image is read as a
stream: nibabel parses the header (and extensions), then the voxel data is decoded one 3-D
volume at a time, so memory is bounded by a volume plus per-voxel running sums for 4-D series.

Metrics per image: shape, voxel size, data type, number of volumes, intensity min/max/mean/std
(after the header's scaling), foreground fraction (Otsu threshold of the mean volume), robust
percentiles of the foreground, SNR (foreground mean / background standard deviation); for 4-D
series also the median temporal SNR in the foreground and the mean DVARS (RMS of successive
volume differences, % of the global mean).

Outputs follow BIDS-derivatives naming: ``<datatype>/<stem>_desc-imagestats_<suffix>.json`` per
image and ``sub-<RC>_ses-<label>_desc-imageqc_scans.tsv`` per session. Neither is a file the BIDS
schema knows (a JSON without its data file is a sidecar without data to the official validator;
``scans`` takes no ``desc``): a release lists them in the pipeline dataset's ``.bidsignore``
(:data:`BIDS_IGNORE`), as BIDS asks of files outside the specification.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from nibabel.nifti1 import Nifti1Header
from nibabel.nifti2 import Nifti2Header
from numpy.typing import NDArray

from aind_assets.hbcd.identity.scrub import IdentifierFreeError
from aind_assets.hbcd.streams import ReadableBinary

__all__ = [
    "BIDS_IGNORE",
    "PIPELINE",
    "ImageStatsError",
    "dataset_description",
    "image_stats",
    "is_image",
    "qc_table",
    "stats_relpath",
]

PIPELINE = "imagestats"
#: ``.bidsignore`` lines of the pipeline's derivative dataset: its outputs outside the BIDS schema
#: (``bids-validator-deno`` 3 misses ``*_desc-imagestats_*.json``: a second ``*`` before a
#: fixed extension does not match there, hence no extension).
BIDS_IGNORE = ("*_desc-imagestats_*", "*_desc-imageqc_scans.tsv")
PIPELINE_DESCRIPTION = "Per-image statistics and QC metrics from NIfTI voxel data (aind-assets)"
_QC_COLUMNS = (
    "filename",
    "n_volumes",
    "foreground_fraction",
    "snr",
    "tsnr_median",
    "dvars_mean_pct",
    "intensity_mean",
    "intensity_std",
)


class ImageStatsError(IdentifierFreeError, ValueError):
    """The image cannot be read (the message holds no path or content)."""


def is_image(relpath: str) -> bool:
    name = relpath.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def stats_relpath(image_relpath: str) -> str:
    """``anat/sub-X_ses-Y_run-001_T1w.nii.gz`` -> ``anat/sub-X_ses-Y_run-001_desc-imagestats_T1w.json``
    (relative to the session folder)."""
    folder, _, name = image_relpath.rpartition("/")
    stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else name[: -len(".nii")]
    base, sep, suffix = stem.rpartition("_")
    new = f"{base}_desc-imagestats_{suffix}.json" if sep else f"{stem}_desc-imagestats.json"
    return f"{folder}/{new}" if folder else new


class _Reader:
    """Counts bytes consumed and serves an already-read prefix first."""

    def __init__(self, raw: ReadableBinary, prefix: bytes = b"") -> None:
        self.raw, self.prefix, self.pos = raw, prefix, 0

    def read(self, n: int = -1) -> bytes:
        out = b""
        if self.prefix:
            if n < 0 or n >= len(self.prefix):
                out, self.prefix = self.prefix, b""
                n = n - len(out) if n >= 0 else -1
            else:
                out, self.prefix = self.prefix[:n], self.prefix[n:]
                n = 0
        if n != 0:
            out += self.raw.read(n)
        self.pos += len(out)
        return out

    def tell(self) -> int:
        return self.pos

    def read_exact(self, n: int) -> bytes:
        parts, need = [], n
        while need > 0:
            data = self.read(min(need, 1 << 24))
            if not data:
                break
            parts.append(data)
            need -= len(data)
        return b"".join(parts)


def _header(reader: _Reader):
    head = reader.read(4)
    if len(head) < 4:
        raise ImageStatsError("file too short for a NIfTI header")
    size_le = int.from_bytes(head, "little")
    size_be = int.from_bytes(head, "big")
    if 348 in (size_le, size_be):
        klass = Nifti1Header
    elif 540 in (size_le, size_be):
        klass = Nifti2Header
    else:
        raise ImageStatsError("not a NIfTI-1 or NIfTI-2 file")
    reader.prefix = head + reader.prefix
    reader.pos -= 4
    try:
        return klass.from_fileobj(reader)
    except Exception as e:  # noqa: BLE001 - nibabel raises several types; report the type only
        raise ImageStatsError(f"unreadable NIfTI header ({type(e).__name__})") from None


def _otsu(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(finite, bins=256, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0, dtype=float), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0, dtype=float), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between))])


def _num(x: float | None, digits: int = 6) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), digits)


def image_stats(stream: ReadableBinary) -> dict[str, Any]:
    """Statistics and QC metrics of one NIfTI image (``.nii`` or ``.nii.gz``, sniffed)."""
    magic = stream.read(2)
    raw: ReadableBinary = stream
    if magic == b"\x1f\x8b":
        # typeshed's _ReadableFileobj also demands seek(), which GzipFile calls only to rewind
        # (a backward seek on it); reading forward, as here, needs read() alone.
        raw = gzip.GzipFile(fileobj=_Reader(stream, magic), mode="rb")  # type: ignore[call-overload]
        reader = _Reader(raw)
    else:
        reader = _Reader(stream, magic)
    hdr = _header(reader)
    shape = tuple(int(s) for s in hdr.get_data_shape())
    if not shape or any(s <= 0 for s in shape):
        raise ImageStatsError("NIfTI header has an empty data shape")
    dtype = hdr.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "iufb":
        raise ImageStatsError(f"unsupported NIfTI data type {dtype}")
    slope, inter = hdr.get_slope_inter()
    slope = 1.0 if slope is None or not math.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not math.isfinite(inter) else float(inter)
    vox_offset = int(hdr.get_data_offset())
    skip = vox_offset - reader.tell()
    if skip < 0:
        raise ImageStatsError("NIfTI vox_offset lies inside the header")
    reader.read_exact(skip)

    spatial = shape[:3] + (1,) * (3 - len(shape[:3]))
    n_vox = int(np.prod(spatial))
    n_vol = int(np.prod(shape[3:])) if len(shape) > 3 else 1
    nbytes = n_vox * dtype.itemsize
    total = count = 0.0
    total_sq = 0.0
    vmin, vmax = math.inf, -math.inf
    t_sum: NDArray[np.float64] | None = None  # voxelwise sum over volumes
    t_sq: NDArray[np.float64] | None = None  # voxelwise sum of squares (n_vol > 1 only)
    prev: NDArray[np.float64] | None = None
    dvars: list[float] = []
    for _ in range(n_vol):
        data = reader.read_exact(nbytes)
        if len(data) < nbytes:
            raise ImageStatsError("NIfTI voxel data is truncated")
        vol = np.frombuffer(data, dtype=dtype).astype(np.float64)
        if slope != 1.0 or inter != 0.0:
            vol = vol * slope + inter
        finite = np.isfinite(vol)
        fv = vol[finite] if not finite.all() else vol
        if fv.size:
            vmin, vmax = min(vmin, float(fv.min())), max(vmax, float(fv.max()))
            total += float(fv.sum())
            total_sq += float(np.dot(fv, fv))
            count += fv.size
        vol = np.where(finite, vol, 0.0)
        if n_vol > 1:
            if t_sum is None or t_sq is None:
                t_sum, t_sq = vol.copy(), vol * vol
            else:
                t_sum += vol
                t_sq += vol * vol
            if prev is not None:
                d = vol - prev
                dvars.append(math.sqrt(float(np.dot(d, d)) / n_vox))
            prev = vol
        else:
            t_sum = vol
    mean = total / count if count else math.nan
    std = math.sqrt(max(total_sq / count - mean * mean, 0.0)) if count else math.nan
    if t_sum is None:  # cannot happen: every dimension is positive, so n_vol >= 1
        raise ImageStatsError("NIfTI image has no volume")
    mean_vol: NDArray[np.float64] = t_sum / n_vol if n_vol > 1 else t_sum
    threshold = _otsu(mean_vol)
    fg = mean_vol > threshold
    bg = ~fg
    fg_vals = mean_vol[fg]
    snr = None
    if fg_vals.size and bg.sum() > 1:
        bg_std = float(mean_vol[bg].std())
        snr = float(fg_vals.mean()) / bg_std if bg_std > 0 else None
    out: dict[str, Any] = {
        "shape": list(shape),
        "voxel_size": [_num(z) for z in hdr.get_zooms()[:3]],
        "data_type": str(dtype.newbyteorder("=")),
        "n_volumes": n_vol,
        "intensity": {
            "min": _num(vmin),
            "max": _num(vmax),
            "mean": _num(mean),
            "std": _num(std),
        },
        "foreground_fraction": _num(float(fg.mean())),
        "foreground_percentiles": (
            dict(
                zip(
                    ("p02", "p50", "p98"),
                    (_num(v) for v in np.percentile(fg_vals, [2, 50, 98])),
                    strict=True,
                )
            )
            if fg_vals.size
            else None
        ),
        "snr": _num(snr),
    }
    if n_vol > 1:
        if t_sq is None:  # cannot happen: set with t_sum on the first volume when n_vol > 1
            raise ImageStatsError("NIfTI time series has no volume")
        var = np.maximum(t_sq / n_vol - mean_vol * mean_vol, 0.0)
        sd = np.sqrt(var)
        with np.errstate(divide="ignore", invalid="ignore"):
            tsnr = np.where(sd > 0, mean_vol / sd, np.nan)[fg]
        tsnr = tsnr[np.isfinite(tsnr)]
        out["tsnr_median"] = _num(float(np.median(tsnr))) if tsnr.size else None
        out["dvars_mean_pct"] = (
            _num(100.0 * float(np.mean(dvars)) / abs(mean)) if dvars and mean else None
        )
    return out


def qc_table(rows: Iterable[tuple[str, Mapping[str, Any]]]) -> str:
    """Session QC table (TSV, cells as strings; ``n/a`` when not applicable): one row per image
    ``(filename relative to the session folder, stats)``."""
    lines = ["\t".join(_QC_COLUMNS)]
    for filename, s in sorted(rows, key=lambda r: r[0]):
        values = {
            "filename": filename,
            "n_volumes": s.get("n_volumes"),
            "foreground_fraction": s.get("foreground_fraction"),
            "snr": s.get("snr"),
            "tsnr_median": s.get("tsnr_median"),
            "dvars_mean_pct": s.get("dvars_mean_pct"),
            "intensity_mean": (s.get("intensity") or {}).get("mean"),
            "intensity_std": (s.get("intensity") or {}).get("std"),
        }
        lines.append("\t".join("n/a" if values[c] is None else str(values[c]) for c in _QC_COLUMNS))
    return "\n".join(lines) + "\n"


def dataset_description(version: str, code_url: str) -> str:
    """``dataset_description.json`` of the pipeline's derivatives folder."""
    body = {
        "Name": PIPELINE_DESCRIPTION,
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": f"aind-assets {PIPELINE}",
                "Version": version,
                "CodeURL": code_url,
                "Description": PIPELINE_DESCRIPTION,
            }
        ],
    }
    return json.dumps(body, indent=4) + "\n"
