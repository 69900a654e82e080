"""Fixtures for the pure HBCD tests (no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aind_assets.demo.bids import write_identified_bids
from aind_assets.hbcd.identity.idmap import IdentityMap, IdentityRow, parse_identity_map

MAP_CSV = """DCCID,PSCID,site,release_candidate_id,anonymized_site
123456,UMN0012,UMN,NDARINVAAAA1111,site01
234567,UCSD0034,UCSD,NDARINVBBBB2222,site02
345678,UMN0056,UMN,NDARINVCCCC3333,site01
"""


@pytest.fixture(scope="session")
def idmap() -> IdentityMap:
    return parse_identity_map(MAP_CSV, "test-map")


@pytest.fixture(scope="session")
def row(idmap: IdentityMap) -> IdentityRow:
    return idmap.rows[0]


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> tuple[Path, IdentityMap]:
    """(identified assembly_bids root, its identity map)."""
    root = tmp_path_factory.mktemp("demo")
    map_path = write_identified_bids(root)
    return root / "assembly_bids", parse_identity_map(map_path.read_text(), "demo-map")
