"""Where each side of the HBCD flow keeps what (pure: names and URLs only).

Layout (every path is relative to a side's root)::

    identified root                              de-identified root
      assembly_bids/sub-<DCCID>/ses-<label>/...    assembly_bids/sub-<RC>/ses-<label>/...
      assembly_bids/participants.tsv ...           assembly_bids/participants.tsv ...
      derivatives/ses-<label>/<pipeline>/          derivatives/ses-<label>/<pipeline>/
          sub-<DCCID>/ses-<label>/...                  sub-<RC>/ses-<label>/...
      derivatives/ses-<label>/cbrain_misc/         derivatives/ses-<label>/cbrain_misc/
          sub-<DCCID>_<pipeline>_ses-<label>.json      sub-<RC>_<pipeline>_ses-<label>.json
      identifiers/release_identifiers.csv
      .aind-assets/ledger/<partition>/<digests>    (identified side only: what was de-identified)
      .aind-assets/discovery/report.json           (identified side only: last scan, unmapped)
      .aind-assets/reidentified/ledger.json.gz     (identified side only)
      .aind-assets/scanned/<unit>.json             (identified side only: objects scanned clean)
"""

from __future__ import annotations

from dataclasses import dataclass

from aind_assets.hbcd.identity.idmap import IdentityMap
from aind_assets.hbcd.identity.replace import (
    parse_session_partition_key,
)
from aind_assets.hbcd.identity.scrub import HbcdError
from aind_assets.hbcd.manifests import (
    manifest_relpath,
)
from aind_assets.resources.urls import join_url

BIDS = "assembly_bids"
BIDS_FOLDER = BIDS
DERIVATIVES = "derivatives"
STATE = ".aind-assets"
CBRAIN_MISC = "cbrain_misc"


# --- layout ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HbcdLayout:
    identified_root: str
    deidentified_root: str

    @property
    def identified_bids(self) -> str:
        return join_url(self.identified_root, BIDS)

    @property
    def deidentified_bids(self) -> str:
        return join_url(self.deidentified_root, BIDS)

    @property
    def deidentified_derivatives(self) -> str:
        return join_url(self.deidentified_root, DERIVATIVES)

    @property
    def identified_derivatives(self) -> str:
        return join_url(self.identified_root, DERIVATIVES)

    @property
    def ledger_root(self) -> str:
        return join_url(self.identified_root, STATE, "ledger")

    @property
    def discovery_report(self) -> str:
        return join_url(self.identified_root, STATE, "discovery", "report.json")

    def scan_record(self, unit: str) -> str:
        """What the leak check last found clean in a unit (identified side only)."""
        return join_url(self.identified_root, STATE, "scanned", f"{unit}.json")

    @property
    def reid_ledger(self) -> str:
        return join_url(self.identified_root, STATE, "reidentified", "ledger.json.gz")

    def session_urls(self, partition_key: str, idmap: IdentityMap) -> tuple[str, str, str, str]:
        """(rc, session label, identified subject folder, de-identified subject folder)."""
        rc, ses = parse_session_partition_key(partition_key)
        row = idmap.by_rc(rc)
        if row is None:
            raise HbcdError(
                f"partition {partition_key}: its release-candidate ID is not in the identity map"
            )
        return (
            rc,
            ses,
            join_url(self.identified_bids, f"sub-{row.dccid}"),
            join_url(self.deidentified_bids, f"sub-{rc}"),
        )

    def derivative_folder(self, rc: str, ses: str, pipeline: str) -> str:
        return join_url(self.deidentified_derivatives, f"ses-{ses}", pipeline, f"sub-{rc}")

    def manifest_url(self, rc: str, ses: str, pipeline: str) -> str:
        return join_url(self.deidentified_derivatives, manifest_relpath(rc, pipeline, ses))
