"""``ctx.nwb(...)`` on NWB stored as HDF5 (pynwb) and as Zarr (hdmf-zarr), local and on S3,
streamed; and the dispatcher selecting a Zarr NWB folder as fsspec's glob does."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
from hdmf_zarr import NWBZarrIO
from pynwb import NWBHDF5IO, NWBFile, TimeSeries

from aind_assets.analysis.files import select_files
from aind_assets.analysis.models import AnalysisDispatchModel
from aind_assets.analysis.wrapper import AnalysisContext, AnalysisInputError


def make_nwb(large: bool = False) -> NWBFile:
    nwb = NWBFile(
        session_description="formats",
        identifier="formats-1",
        session_start_time=datetime(2025, 6, 2, 14, 16, 20, tzinfo=UTC),
    )
    rng = np.random.default_rng(0)
    for _ in range(3):
        nwb.add_unit(spike_times=np.sort(rng.uniform(0, 100, 200)))
    if large:  # 16 MB of raw data the analysis never reads
        data = rng.standard_normal((2_000_000, 1)).astype("float64")
        nwb.add_acquisition(TimeSeries(name="raw", data=data, unit="V", rate=30000.0))
    return nwb


@pytest.fixture(scope="module")
def nwb_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nwb-formats")
    with NWBHDF5IO(str(out / "session.nwb"), "w") as io:
        io.write(make_nwb(large=True))
    zarr_dir = out / "zarr" / "session.nwb"
    zarr_dir.parent.mkdir()
    with NWBZarrIO(str(zarr_dir), mode="w") as io:
        io.write(make_nwb())
    (out / "not_nwb.nwb").write_bytes(b"plain text, not NWB")
    return out


class CountingContext(AnalysisContext):
    """Counts the bytes read through :meth:`open` (what streaming reads)."""

    read_bytes = 0

    def open(self, url: str, mode: str = "rb") -> IO[Any]:
        handle = super().open(url, mode)
        context = self
        original = handle.read

        def read(size: int = -1) -> bytes:
            data = original(size)
            context.read_bytes += len(data)
            return data

        handle.read = read  # type: ignore[method-assign]
        return handle


def context(store, tmp_path: Path) -> CountingContext:
    task = AnalysisDispatchModel(s3_location=["x"], asset_name=["x"], docdb_record_id=["x"])
    return CountingContext(
        store=store,
        results_dir=tmp_path,
        task=task,
        analysis="t",
        log=logging.getLogger("t"),
    )


def test_nwb_hdf5_and_zarr_through_the_same_call(store, nwb_files, tmp_path):
    root = store.url("asset")
    store.put_tree(nwb_files, root)
    ctx = context(store, tmp_path)
    hdf5, zarr = f"{root}/session.nwb", f"{root}/zarr/session.nwb"
    assert ctx.nwb_format(hdf5) == "hdf5" and ctx.nwb_format(zarr) == "zarr"
    for url in (hdf5, zarr):
        with ctx.nwb(url) as nwb:
            assert len(nwb.units) == 3
            assert len(nwb.units["spike_times"][0]) == 200
    # streamed: reading the units of the HDF5 file did not fetch its 16 MB of raw data
    size = (nwb_files / "session.nwb").stat().st_size
    assert size > 16_000_000 and ctx.read_bytes < size / 4
    with pytest.raises(AnalysisInputError, match="not_nwb.nwb: not an NWB file"):
        ctx.nwb_format(f"{root}/not_nwb.nwb")
    with pytest.raises(AnalysisInputError, match="missing.nwb"), ctx.nwb(f"{root}/missing.nwb"):
        pass


def test_a_zarr_nwb_folder_is_selected_like_fsspec_glob(store, nwb_files):
    root = store.url("asset")
    store.put_tree(nwb_files, root)
    files = select_files([root], ".nwb", lambda loc: [i.url for i in store.list_objects(loc)])
    assert files[root] == sorted(
        [f"{root}/not_nwb.nwb", f"{root}/session.nwb", f"{root}/zarr/session.nwb"]
    )
    # what the package's dispatcher gets: fsspec's glob (folders included), s3:// prefixed
    scheme = "s3://" if root.startswith("s3://") else ""
    globbed = store.fs_for(root).glob(f"{root.removeprefix(scheme)}/**/*.nwb")
    assert files[root] == sorted(f"{scheme}{p}" for p in globbed)
