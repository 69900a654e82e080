"""What a run function gets: :class:`AnalysisContext` (pure: no Dagster).

Results go to a local folder; inputs are read from the object store, NWB files as HDF5 or Zarr
(:meth:`AnalysisContext.nwb`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from aind_assets.analysis.models import AnalysisDispatchModel
from aind_assets.resources.urls import is_s3, join_url

if TYPE_CHECKING:
    from aind_assets.resources.object_store import ObjectStoreResource

__all__ = ["HDF5_SIGNATURE", "AnalysisContext", "AnalysisInputError"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

logger = logging.getLogger(__name__)


class AnalysisInputError(RuntimeError):
    """An input file could not be read; the message names the file."""


class AnalysisContext:
    """Handed to a run function: where to write results and how to read inputs.

    * ``results_dir`` — a local folder; everything written there is uploaded to the job's results
      path (PNG files are the job's plots, shown in the Dagster UI);
    * :meth:`open` / :meth:`nwb` — read input files from the object store (S3 or local; NWB as
      HDF5 or Zarr);
    * :meth:`save_figure` — write a matplotlib figure as a PNG into ``results_dir``.
    """

    def __init__(
        self,
        *,
        store: ObjectStoreResource,
        results_dir: Path,
        task: AnalysisDispatchModel,
        analysis: str,
        log: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.store = store
        self.results_dir = results_dir
        self.task = task
        self.analysis = analysis
        self.log = log or logger

    def open(self, url: str, mode: str = "rb") -> IO[Any]:
        """Open an input file of the object store (streamed)."""
        try:
            return self.store.open(url, mode)
        except FileNotFoundError as exc:
            raise AnalysisInputError(f"input file {url} does not exist") from exc

    def nwb_format(self, url: str) -> Literal["hdf5", "zarr", "zarr_v2"]:
        """How the NWB file at ``url`` is stored: a Zarr folder (``zarr.json``: Zarr v3;
        ``.zgroup``: Zarr v2, as AIND publishes it) or an HDF5 file (its signature)."""
        base = url.rstrip("/")
        try:
            if self.store.exists(join_url(base, "zarr.json")):
                return "zarr"
            if self.store.exists(join_url(base, ".zgroup")):
                return "zarr_v2"
            with self.open(base, "rb") as raw:
                for offset in (0, 512, 1024, 2048):  # HDF5 may follow a user block
                    raw.seek(offset)
                    if raw.read(8) == HDF5_SIGNATURE:
                        return "hdf5"
        except AnalysisInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a folder, no permission, ...
            raise AnalysisInputError(
                f"cannot read NWB file {url}: {type(exc).__name__}: {exc}"
            ) from exc
        raise AnalysisInputError(
            f"cannot read NWB file {url}: not an NWB file, neither HDF5 (no HDF5 signature) "
            "nor Zarr (no zarr.json or .zgroup)"
        )

    @contextmanager
    def nwb(self, url: str) -> Iterator[Any]:
        """Open an NWB file of the object store with pynwb; yields the ``NWBFile``.

        HDF5 files are streamed through the store (h5py reads the file object); NWB stored as
        Zarr (a folder, v3 with ``NWBZarrIO`` or v2 with ``NWBZarrV2IO`` from hdmf-zarr) is read
        chunk by chunk through fsspec with the bucket's own access (anonymous for public
        buckets). Nothing is downloaded whole. A file that is missing or not a readable NWB file
        raises :class:`AnalysisInputError` naming it.
        """
        kind = self.nwb_format(url)
        stack = ExitStack()
        try:
            if kind == "hdf5":
                import h5py
                from pynwb import NWBHDF5IO

                from aind_assets.analysis.h5safe import GcSafeReader

                raw = stack.enter_context(self.open(url, "rb"))
                # reads pause cyclic GC: h5py + fsspec service thread deadlock otherwise (h5safe)
                h5 = stack.enter_context(h5py.File(GcSafeReader(raw), "r"))
                io: Any = stack.enter_context(NWBHDF5IO(file=h5, mode="r"))
            else:
                from hdmf_zarr import NWBZarrIO, NWBZarrV2IO

                reader = NWBZarrIO if kind == "zarr" else NWBZarrV2IO
                path = url.rstrip("/")
                options = self.store.storage_options_for(path) if is_s3(path) else None
                io = stack.enter_context(reader(path=path, mode="r", storage_options=options))
            nwbfile = io.read()
        except Exception as exc:  # noqa: BLE001 - any failure to read is the file's fault
            stack.close()
            raise AnalysisInputError(
                f"cannot read NWB file {url} ({kind}): {type(exc).__name__}: {exc}"
            ) from exc
        with stack:
            yield nwbfile

    def save_figure(self, figure: Any, name: str, *, dpi: int = 80) -> Path:
        """Save a matplotlib figure as ``results_dir/name`` (PNG) and close it.

        Build figures with ``matplotlib.figure.Figure()`` (no pyplot, no GUI backend: safe in
        run workers); pyplot figures are closed after saving.
        """
        if not name.lower().endswith(".png"):
            name = f"{name}.png"
        path = self.results_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=dpi, bbox_inches="tight")
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None and getattr(figure, "number", None) is not None:
            pyplot.close(figure)
        return path
