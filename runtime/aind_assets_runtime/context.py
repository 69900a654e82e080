"""The job of an out-of-process analysis and what its run function gets.

:class:`AnalysisContext` has the in-process context's surface (``results_dir``, ``task``,
``analysis``, ``log``, :meth:`~AnalysisContext.open`, :meth:`~AnalysisContext.nwb`,
:meth:`~AnalysisContext.save_figure`), so one run function works in both modes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

logger = logging.getLogger("aind_assets_runtime")


class AnalysisInputError(RuntimeError):
    """An input file could not be read; the message names the file."""


class DispatchTask(BaseModel):
    """The job's ``AnalysisDispatchModel`` (analysis-pipeline-utils field names)."""

    model_config = ConfigDict(extra="allow")

    s3_location: list[str]
    asset_name: list[str] = Field(default_factory=list)
    docdb_record_id: list[str] = Field(default_factory=list)
    file_location: list[str] | None = None
    distributed_parameters: dict[str, Any] | None = None
    group_metadata: dict[str, Any] | None = None
    query: str | None = None


class Parameters(BaseModel):
    """The job's merged parameters (validated by the platform) as attributes: ``params.x``."""

    model_config = ConfigDict(extra="allow")


class Storage(BaseModel):
    """How to reach the object store: the platform's endpoint, region and public buckets.
    Credentials come from the environment (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``,
    or the task's role), never from the job."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    anonymous_buckets: list[str] = Field(default_factory=list)

    def options_for(self, url: str) -> dict[str, Any]:
        if not url.startswith("s3://"):
            return {}
        opts: dict[str, Any] = {
            "use_listings_cache": False,
            "client_kwargs": {"region_name": self.region},
        }
        if self.endpoint_url:
            opts["client_kwargs"]["endpoint_url"] = self.endpoint_url
        if url[len("s3://") :].split("/", 1)[0] in self.anonymous_buckets:
            opts["anon"] = True
        return opts

    def filesystem(self, url: str) -> Any:
        import fsspec

        if url.startswith("s3://"):
            return fsspec.filesystem("s3", skip_instance_cache=True, **self.options_for(url))
        return fsspec.filesystem("file", auto_mkdir=True)


def _path(url: str) -> str:
    return url[len("s3://") :] if url.startswith("s3://") else url


class AnalysisContext:
    """Handed to a run function: where to write results and how to read inputs."""

    def __init__(
        self,
        *,
        results_dir: Path,
        task: DispatchTask,
        analysis: str,
        storage: Storage | None = None,
        log: Any = None,
    ) -> None:
        self.results_dir = results_dir
        self.task = task
        self.analysis = analysis
        self.storage = storage or Storage()
        self.log = log or logger

    def open(self, url: str, mode: str = "rb") -> IO[Any]:
        """Open an input file of the object store (streamed)."""
        try:
            return self.storage.filesystem(url).open(_path(url), mode)
        except FileNotFoundError as exc:
            raise AnalysisInputError(f"input file {url} does not exist") from exc

    def _exists(self, url: str) -> bool:
        return bool(self.storage.filesystem(url).exists(_path(url)))

    def nwb_format(self, url: str) -> str:
        """``zarr`` (``zarr.json``), ``zarr_v2`` (``.zgroup``) or ``hdf5`` (its signature)."""
        base = url.rstrip("/")
        try:
            if self._exists(base + "/zarr.json"):
                return "zarr"
            if self._exists(base + "/.zgroup"):
                return "zarr_v2"
            with self.open(base, "rb") as raw:
                for offset in (0, 512, 1024, 2048):
                    raw.seek(offset)
                    if raw.read(8) == HDF5_SIGNATURE:
                        return "hdf5"
        except AnalysisInputError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise AnalysisInputError(
                f"cannot read NWB file {url}: {type(exc).__name__}: {exc}"
            ) from exc
        raise AnalysisInputError(f"cannot read NWB file {url}: neither HDF5 nor Zarr")

    @contextmanager
    def nwb(self, url: str) -> Iterator[Any]:
        """Open an NWB file with pynwb (HDF5 streamed, Zarr chunk by chunk); yields the NWBFile."""
        kind = self.nwb_format(url)
        stack = ExitStack()
        try:
            if kind == "hdf5":
                import h5py
                from pynwb import NWBHDF5IO

                from aind_assets_runtime.h5safe import GcSafeReader

                raw = stack.enter_context(self.open(url, "rb"))
                # reads pause cyclic GC: h5py + fsspec service thread deadlock otherwise (h5safe)
                h5 = stack.enter_context(h5py.File(GcSafeReader(raw), "r"))
                io: Any = stack.enter_context(NWBHDF5IO(file=h5, mode="r"))
            else:
                from hdmf_zarr import NWBZarrIO, NWBZarrV2IO

                reader = NWBZarrIO if kind == "zarr" else NWBZarrV2IO
                path = url.rstrip("/")
                io = stack.enter_context(
                    reader(path=path, mode="r", storage_options=self.storage.options_for(path))
                )
            nwbfile = io.read()
        except Exception as exc:  # noqa: BLE001 - any failure to read is the file's fault
            stack.close()
            raise AnalysisInputError(
                f"cannot read NWB file {url} ({kind}): {type(exc).__name__}: {exc}"
            ) from exc
        with stack:
            yield nwbfile

    def save_figure(self, figure: Any, name: str, *, dpi: int = 80) -> Path:
        """Save a matplotlib figure as ``results_dir/name`` (PNG) and close it."""
        if not name.lower().endswith(".png"):
            name = f"{name}.png"
        path = self.results_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=dpi, bbox_inches="tight")
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None and getattr(figure, "number", None) is not None:
            pyplot.close(figure)
        return path
