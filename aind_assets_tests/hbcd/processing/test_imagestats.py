"""Per-image statistics from streamed NIfTI voxel data (pure)."""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
import pytest

from aind_assets.hbcd.processing.imagestats import (
    ImageStatsError,
    image_stats,
    qc_table,
    stats_relpath,
)


def _nifti(data: np.ndarray, *, slope: float | None = None, nifti2: bool = False) -> bytes:
    klass = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    img = klass(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    if slope is not None:
        img.header.set_slope_inter(slope, 10.0)
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"hello"))
    return img.to_bytes()


def test_3d_statistics_match_numpy() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(5, 1, (12, 10, 8)).astype(np.float32)
    data[3:9, 3:7, 2:6] += 100  # a bright "head"
    s = image_stats(io.BytesIO(gzip.compress(_nifti(data))))
    assert s["shape"] == [12, 10, 8] and s["n_volumes"] == 1
    assert s["voxel_size"] == [2.0, 2.0, 3.0]
    assert s["intensity"]["mean"] == pytest.approx(float(data.mean()), rel=1e-6)
    assert s["intensity"]["std"] == pytest.approx(float(data.std()), rel=1e-5)
    assert s["intensity"]["max"] == pytest.approx(float(data.max()), rel=1e-6)
    assert s["foreground_fraction"] == pytest.approx(6 * 4 * 4 / data.size, abs=0.01)
    assert s["snr"] > 50
    assert "tsnr_median" not in s


def test_4d_scaled_nifti2_plain() -> None:
    rng = np.random.default_rng(2)
    vols = rng.integers(0, 50, (6, 6, 4, 5)).astype(np.int16)
    vols[1:5, 1:5, 1:3, :] += 1000
    s = image_stats(io.BytesIO(_nifti(vols, slope=2.0, nifti2=True)))
    scaled = vols.astype(np.float64) * 2.0 + 10.0
    assert s["n_volumes"] == 5 and s["shape"] == [6, 6, 4, 5]
    assert s["intensity"]["mean"] == pytest.approx(float(scaled.mean()), rel=1e-9)
    assert s["tsnr_median"] > 10 and s["dvars_mean_pct"] > 0
    table = qc_table([("func/x_bold.nii", s), ("anat/y_T1w.nii.gz", {"n_volumes": 1})])
    lines = table.splitlines()
    assert lines[0].split("\t")[0] == "filename" and lines[1].startswith(
        "anat/y_T1w.nii.gz\t1\tn/a"
    )


def test_truncated_and_foreign_files_are_clear_errors() -> None:
    raw = _nifti(np.zeros((4, 4, 4), dtype=np.int16))
    with pytest.raises(ImageStatsError, match="truncated"):
        image_stats(io.BytesIO(raw[:-10]))
    with pytest.raises(ImageStatsError, match="not a NIfTI"):
        image_stats(io.BytesIO(b"hello world, not an image"))


def test_stats_relpath() -> None:
    assert (
        stats_relpath("anat/sub-A_ses-B_run-001_T1w.nii.gz")
        == "anat/sub-A_ses-B_run-001_desc-imagestats_T1w.json"
    )
    assert stats_relpath("x.nii") == "x_desc-imagestats.json"
