"""The identified HBCD sessions as an observed source asset (thin: versions come from the pure
:mod:`aind_assets.hbcd.sources.versions`).

``hbcd/identified_session`` is an external asset partitioned by ``bids_sessions``. The
``hbcd_identified_observer`` sensor lists the identified ``assembly_bids`` (keys, sizes, ETags;
no object read) and reports an observation with a new data version for every registered
session that changed. ``hbcd/deidentified_session`` depends on it and records the versions it
consumed (:func:`record_consumed_source`), so Dagster's own stale status ("Unsynced" in the UI)
marks a de-identified session whose identified data changed since it was made.

A sensor, not ``@observable_source_asset``: that decorator is beta in Dagster 1.13 (a warning
on every start) and reports every partition on every observation; the sensor reports only
changes. Observations carry partition keys (release-candidate IDs), versions and counts only.
"""

import os
from collections.abc import Iterable, Sequence

import dagster as dg

from aind_assets.hbcd.deid.discovery import Discovery, discover
from aind_assets.hbcd.deid.ledger import list_identified_bids, read_ledger
from aind_assets.hbcd.identity.scrub import scrubbed_errors
from aind_assets.hbcd.keys import (
    BIDS_SESSIONS_NAME,
    FLOW_TAGS,
    GROUP,
    IDENTIFIED_SESSION,
    OWNERS,
    bids_sessions,
    decode_cursor,
    encode_cursor,
)
from aind_assets.hbcd.resources import HbcdResource
from aind_assets.hbcd.sources.versions import (
    Observation,
    consumed_version,
    current_observation,
    observe,
)
from aind_assets.hbcd.storage import map_concurrently
from aind_assets.partition_metadata import newest_by_partition

#: The tag Dagster reads an observation's data version from.
DATA_VERSION_TAG = "dagster/data_version"

identified_session = dg.AssetSpec(
    key=IDENTIFIED_SESSION,
    partitions_def=bids_sessions,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"s3", "bids"},
    tags={**FLOW_TAGS, "hbcd/side": "identified"},
    description=(
        "One BIDS session as delivered on the identified side (assembly_bids/sub-<DCCID>/"
        "ses-<label>/ in the PR bucket), named by its release-candidate ID. Not made by "
        "Dagster: the hbcd_identified_observer sensor reports a new data version whenever a "
        "file of the session is added, removed or rewritten (from the bucket listing: keys, "
        "sizes, ETags). A de-identified session made from an older version shows as Unsynced."
    ),
)


#: ``HBCD_OBSERVER_INTERVAL_S``: minimum seconds between observer ticks (read when the sensor is
#: declared, at import; the UI tests shorten it to see a source change within seconds).
OBSERVER_INTERVAL_ENV = "HBCD_OBSERVER_INTERVAL_S"


def observer_interval_s(env: dict[str, str] | None = None) -> int:
    """The observer's minimum interval: ``HBCD_OBSERVER_INTERVAL_S``, default 300 s."""
    raw = (os.environ if env is None else env).get(OBSERVER_INTERVAL_ENV, "").strip() or "300"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{OBSERVER_INTERVAL_ENV}={raw!r}: a whole number of seconds >= 1")
    return int(raw)


def observation_event(o: Observation) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=IDENTIFIED_SESSION,
        partition=o.partition_key,
        tags={DATA_VERSION_TAG: o.version},
        metadata={"files": o.files, "bytes": dg.MetadataValue.int(o.bytes)},
    )


def source_observations(discovery: Discovery, keys: Iterable[str]) -> list[dg.AssetObservation]:
    """Observations of these sessions' current versions (the discovery sensor reports the
    sessions it requests, so a run never reads data newer than the last observation)."""
    return [
        observation_event(current_observation(key, discovery.sessions[key]))
        for key in sorted(keys)
        if key in discovery.sessions
    ]


@dg.sensor(
    name="hbcd_identified_observer",
    minimum_interval_seconds=observer_interval_s(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Observe the identified sessions: list the PR bucket (no object read) and report a new "
        "data version for every session whose files changed, so de-identified sessions made "
        "from older data show as Unsynced."
    ),
)
def hbcd_identified_observer(
    context: dg.SensorEvaluationContext, hbcd: HbcdResource
) -> dg.SensorResult:
    idmap = hbcd.idmap()
    with scrubbed_errors(idmap, "identified-session observation"):
        objects, ledger = map_concurrently(
            hbcd.store,
            lambda f: f(),
            [
                lambda: list_identified_bids(hbcd.store, hbcd.layout),
                lambda: read_ledger(hbcd.store, hbcd.layout),
            ],
        )
        discovery = discover(objects, idmap)
    registered = context.instance.get_dynamic_partitions(BIDS_SESSIONS_NAME)
    # once the source has been observed at all, a first sight of a session already
    # de-identified from its current files is not reported (see ``observe``); before that,
    # everything is, so the de-identified sessions made from then on have the source recorded
    observed_before = bool(context.instance.fetch_observations(IDENTIFIED_SESSION, limit=1).records)
    done = {k: e.session_digest for k, e in ledger.entries.items()} if observed_before else {}
    changes, state = observe(discovery, decode_cursor(context.cursor), registered, done)
    message = (
        f"{len(discovery.sessions)} identified session(s), {len(registered)} registered; "
        f"{len(changes)} new data version(s)"
    )
    context.log.info(message)
    return dg.SensorResult(
        asset_events=[observation_event(o) for o in changes],
        cursor=encode_cursor(state),
        skip_reason=None if changes else dg.SkipReason(message),
    )


def latest_source_versions(
    instance: dg.DagsterInstance, partition_keys: Sequence[str]
) -> dict[str, str | None]:
    """The data version of the newest observation of each identified session (None: never
    observed). Two event-log queries for a whole batch, not one per session."""
    newest = newest_by_partition(
        instance, IDENTIFIED_SESSION, dg.DagsterEventType.ASSET_OBSERVATION, partition_keys
    )
    versions: dict[str, str | None] = dict.fromkeys(partition_keys)
    for key, record in newest.items():
        observation = record.asset_observation
        if observation is not None and key in versions:
            versions[key] = observation.tags.get(DATA_VERSION_TAG)
    return versions


def record_consumed_source(context: dg.AssetExecutionContext) -> str:
    """Give the asset being materialized a data version derived from the identified sessions'
    versions it consumed and its code version. Dagster's default (code version + input
    versions) cannot serve: for a partitioned dependency it hashes only materializations, and
    the identified sessions are observed, so the default would never change. Returns it."""
    keys = (
        context.partition_keys
        if context.has_partition_key or context.has_partition_key_range
        else []
    )
    code = context.assets_def.code_versions_by_key.get(context.asset_key)
    version = consumed_version(latest_source_versions(context.instance, list(keys)), code)
    context.set_data_version(context.asset_key, dg.DataVersion(version))
    return version
