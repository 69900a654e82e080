"""What the release stage's assets, checks, sensor and CLI share: the ``hbcd_releases``
partitions, asset keys, and the ``hbcd_release`` resource built from settings.
"""

import dagster as dg
from pydantic import Field

from aind_assets.hbcd.identity.idmap import Identifiers
from aind_assets.hbcd.release import specs, staging
from aind_assets.hbcd.release.spec import ReleaseSpec
from aind_assets.hbcd.resources import IdentityMapResource
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.resources.urls import join_url

RELEASES_NAME = "hbcd_releases"  # the partitions' name (``.name`` is typed ``str | None``)
RELEASES = dg.DynamicPartitionsDefinition(name=RELEASES_NAME)
READY_KEY = dg.AssetKey(["hbcd", "release_ready_sessions"])
STAGING_KEY = dg.AssetKey(["hbcd", "release_staging"])
SUMMARY_KEY = dg.AssetKey(["hbcd", "release_summary"])
GROUP = "hbcd_release"


class HbcdReleaseResource(dg.ConfigurableResource):
    """Where releases come from and go, and the identity map for the leak checks."""

    object_store: ObjectStoreResource
    deidentified_root: str = Field(description="De-identified side (assembly_bids/, derivatives/)")
    staging_root: str = Field(description="Release staging root: <root>/<release>/hbcd/...")
    specs_root: str = Field(description="Registered release specs: <root>/<release>.yaml")
    identity_map: IdentityMapResource = Field(
        description="The identity map (identified side; for the leak checks, never logged)"
    )

    def spec(self, release: str) -> ReleaseSpec:
        return specs.read_spec(self.object_store, self.specs_root, release)

    def identifiers(self) -> Identifiers:
        """The DCCIDs, PSCIDs and sites to look for (values never leave this process)."""
        return self.identity_map.load().identifiers()

    def release_url(self, release: str) -> str:
        return staging.release_url(self.staging_root, release)


def release_partition(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> str:
    op = (
        context.op_execution_context
        if isinstance(context, dg.AssetCheckExecutionContext)
        else context
    )
    if not op.has_partition_key:
        raise dg.Failure("run it for one release: a partition of hbcd_releases")
    return op.partition_key


def build_release_resource(settings, *, for_dagster: bool = True) -> HbcdReleaseResource:  # noqa: ANN001
    """The release resource from :class:`aind_assets.settings.Settings`."""
    store = settings.object_store(for_dagster=for_dagster)
    return HbcdReleaseResource(
        object_store=store,
        deidentified_root=settings.hbcd_deidentified_root,
        staging_root=settings.hbcd_staging_root,
        specs_root=join_url(settings.io_root, "hbcd", "release_specs"),
        identity_map=IdentityMapResource(object_store=store, url=settings.hbcd_identity_map),
    )
