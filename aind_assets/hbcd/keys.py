"""What the HBCD stages share on the Dagster side: asset keys, check names, the group, run tags
and the partitions definition, so no stage imports another stage's internals.
"""

import base64
import json
import zlib
from collections.abc import Mapping

import dagster as dg

from aind_assets.runs import automated_tags, flow_tags

GROUP = "hbcd"
FLOW = "hbcd"
#: Tags of the jobs people launch; sensors and schedules request runs with AUTOMATED_TAGS.
FLOW_TAGS = flow_tags(FLOW)
AUTOMATED_TAGS = automated_tags(FLOW)
#: Who answers for the HBCD assets (shown in the UI's Owner column).
OWNERS = ["team:hbcd-data"]
BIDS_SESSIONS_NAME = "bids_sessions"  # the partitions' name (``.name`` is typed ``str | None``)
bids_sessions = dg.DynamicPartitionsDefinition(name=BIDS_SESSIONS_NAME)

#: The identified sessions (an observed source asset; its partitions are ``bids_sessions``).
IDENTIFIED_SESSION = dg.AssetKey(["hbcd", "identified_session"])
DEIDENTIFIED_SESSION = dg.AssetKey(["hbcd", "deidentified_session"])
DEIDENTIFIED_DATASET = dg.AssetKey(["hbcd", "deidentified_dataset"])
SESSION_DERIVATIVES = dg.AssetKey(["hbcd", "session_derivatives"])
CBRAIN_DERIVATIVES = dg.AssetKey(["hbcd", "cbrain_derivatives"])
REIDENTIFIED_DERIVATIVES = dg.AssetKey(["hbcd", "reidentified_derivatives"])
LORIS_CHANGE_FEED = dg.AssetKey(["hbcd", "loris_change_feed"])

LEAK_CHECK = "no_identifiers"
STALENESS_CHECK = "inputs_in_sync"
LEAK_CHECK_KEY = dg.AssetCheckKey(DEIDENTIFIED_SESSION, LEAK_CHECK)
MAX_LISTED = 200


def listed(items: list[str]) -> list[str]:
    return items[:MAX_LISTED] + (
        [f"... {len(items) - MAX_LISTED} more"] if len(items) > MAX_LISTED else []
    )


def encode_cursor(state: Mapping[str, str]) -> str:
    """Compact cursor text for ``{unit: digest}`` (RC-keyed; zlib + base64 JSON)."""
    raw = json.dumps(dict(sorted(state.items())), separators=(",", ":")).encode()
    return "z1:" + base64.b64encode(zlib.compress(raw, 9)).decode()


def decode_cursor(cursor: str | None) -> dict[str, str]:
    """Inverse of :func:`encode_cursor`; an empty or unreadable cursor is an empty state (the
    ledger, not the cursor, is the truth, so this only causes duplicate requests)."""
    if not cursor:
        return {}
    try:
        if cursor.startswith("z1:"):
            return dict(json.loads(zlib.decompress(base64.b64decode(cursor[3:]))))
        return dict(json.loads(cursor))
    except (ValueError, zlib.error, TypeError):
        return {}


def latest_leak_check_passed(instance: dg.DagsterInstance, partition_key: str) -> bool:
    """Whether the newest leak-check evaluation of this session passed."""
    from dagster._core.event_api import PartitionKeyFilter

    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(DEIDENTIFIED_SESSION, LEAK_CHECK),
        limit=1,
        partition_filter=PartitionKeyFilter(key=partition_key),
    )
    if not records or records[0].event is None:
        return False
    evaluation = records[0].event.dagster_event.event_specific_data  # type: ignore[union-attr]
    return bool(getattr(evaluation, "passed", False))
