"""The analysis flow's Dagster resource: where records, partitions and results live."""

import functools
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from aind_assets.analysis.config_checks import validate_dispatch_config
from aind_assets.analysis.discovery import PartitionMap, ensure_indexes
from aind_assets.analysis.models import DispatchConfig, load_dispatch_config
from aind_assets.analysis.registry import AnalysisRegistry, load_analyses
from aind_assets.batches import DEFAULT_BATCH_SIZE
from aind_assets.parallel import DEFAULT_WORKERS
from aind_assets.resources.docdb import DocDBResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.settings import examples_out_of_process


@functools.cache
def _load(
    path: str, modules: tuple[str, ...], out_of_process: bool
) -> tuple[DispatchConfig, AnalysisRegistry]:
    registry = load_analyses(modules, examples_out_of_process=out_of_process)
    config = load_dispatch_config(path, known_analyses=registry.names())
    return validate_dispatch_config(config, registry, path), registry


class AnalysisResource(dg.ConfigurableResource):
    """DocDB, the object store and the analysis flow's collections, roots and knobs."""

    docdb: DocDBResource
    object_store: ObjectStoreResource
    assets_collection: str = Field(description="DocDB collection of data-asset records")
    results_collection: str = Field(description="DocDB collection of analysis result records")
    partitions_collection: str = Field(
        default="dispatch_partitions", description="Partition key → DocDB records"
    )
    results_root: str = Field(description="Analysis results go to <results_root>/<hash>/")
    dispatch_config: str = Field(description="Dispatch config file (YAML or JSON)")
    analysis_modules: list[str] = Field(default_factory=list)
    page_size: int = Field(default=1000, description="Records per discovery page")
    tick_budget_s: float = Field(default=40.0, description="Paging time per sensor tick")
    remove_gone: bool = Field(default=False, description="Delete partitions whose assets left")
    request_runs: bool = Field(
        default=True, description="Sensors request runs (False: they only register partitions)"
    )
    sweep_batch: int = Field(
        default=1, description="Partition-map chunks (<= 1000 partitions) checked per tick"
    )
    claim_timeout_s: float = Field(default=6 * 3600.0)
    run_batch_size: int = Field(
        default=DEFAULT_BATCH_SIZE,
        ge=1,
        description="Partitions per run the discovery sensors request (1: one run each)",
    )
    num_parallel_workers: int = Field(
        default=DEFAULT_WORKERS,
        ge=1,
        description="Jobs of a run (all its partitions) run at once (run config can override)",
    )
    experimenter: str | None = Field(
        default=None,
        description="Experimenter named in records (a run's aind/experimenter tag wins)",
    )

    pipes: dict[str, Any] = Field(
        default_factory=dict,
        description="How out-of-process analyses run (launchers.PipesLaunchSettings fields)",
    )

    _indexed: bool = PrivateAttr(default=False)

    def load(self) -> tuple[DispatchConfig, AnalysisRegistry]:
        """The dispatch config (validated against the registry) and the registry."""
        return _load(self.dispatch_config, tuple(self.analysis_modules), examples_out_of_process())

    def partition_map(self) -> PartitionMap:
        return PartitionMap(self.docdb, self.partitions_collection)

    def ensure_indexes(self) -> None:
        if not self._indexed:
            ensure_indexes(self.docdb, self.assets_collection)
            self._indexed = True
