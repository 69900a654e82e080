from __future__ import annotations

import pytest

from aind_assets.hbcd.identity.idmap import COLUMNS, IdentityMap, parse_identity_map
from aind_assets_tests.hbcd.conftest import MAP_CSV

HEADER = ",".join(COLUMNS)
ALL_VALUES = ["123456", "UMN0012", "UMN", "234567", "UCSD0034", "UCSD", "345678", "UMN0056"]


def _error(text: str) -> str:
    with pytest.raises(ValueError, match=r"^map\.csv: ") as info:  # names the map
        parse_identity_map(text, "map.csv")
    return str(info.value)


def test_parse_and_lookups(idmap: IdentityMap):
    assert len(idmap) == 3
    r = idmap.by_dccid("123456")
    assert (r.dccid, r.pscid, r.site, r.rc_id, r.anon_site) == (
        "123456",
        "UMN0012",
        "UMN",
        "NDARINVAAAA1111",
        "site01",
    )
    assert idmap.by_rc("ndarinvaaaa1111") is r  # case-insensitive
    assert idmap.by_pscid("umn0012") is r
    assert idmap.by_dccid("999999") is None
    assert idmap.anonymized_site("UCSD") == "site02"
    assert idmap.site_for_anonymized("site01") == "UMN"
    assert idmap.has_rc("NDARINVCCCC3333") and not idmap.has_rc("123456")
    assert idmap.rc_ids() == {"NDARINVAAAA1111", "NDARINVBBBB2222", "NDARINVCCCC3333"}


def test_identifiers_have_kinds(idmap: IdentityMap):
    ids = idmap.identifiers()
    assert ids["123456"] == "DCCID"
    assert ids["ucsd0034"] == "PSCID"
    assert ids["UMN"] == "site"
    assert "NDARINVAAAA1111" not in ids and "site01" not in ids
    assert len(ids) == 3 + 3 + 2


def test_require_lookups_do_not_echo_the_key(idmap: IdentityMap):
    with pytest.raises(KeyError, match="DCCID not found in identity map") as info:
        idmap.require_dccid("987654")
    assert "987654" not in str(info.value)


def test_repr_and_str_hide_identifiers(idmap: IdentityMap):
    texts = [
        repr(idmap),
        str(idmap),
        f"{idmap}",
        repr(idmap.rows),
        str(idmap.rows[0]),
        repr(idmap.identifiers()),
        str(idmap.identifiers()),
    ]
    for text in texts:
        for value in ALL_VALUES:
            assert value not in text, text
    assert "rows=3" in repr(idmap)


def test_header_is_case_insensitive_any_order_extra_columns_bom():
    text = (
        "\ufeffanonymized_site,Release_Candidate_ID,notes,dccid,pscid,SITE\n"
        "site01,NDARINVAAAA1111,x,123456,UMN0012,UMN\n\n"
    )
    m = parse_identity_map(text, "m")
    assert m.by_dccid("123456").rc_id == "NDARINVAAAA1111"


def test_duplicate_dccid_names_rows_not_value():
    text = MAP_CSV + "123456,UMN0099,UMN,NDARINVDDDD4444,site01\n"
    msg = _error(text)
    assert msg == "map.csv: row 5: duplicate DCCID (same as row 2)"


@pytest.mark.parametrize(
    ("extra_row", "expected"),
    [
        ("999999,UMN0012,UMN,NDARINVDDDD4444,site01", "row 5: duplicate PSCID (same as row 2)"),
        (
            "999999,UMN0099,UMN,NDARINVBBBB2222,site01",
            "row 5: duplicate release_candidate_id (same as row 3)",
        ),
        (
            "999999,UMN0099,UMN,NDARINVDDDD4444,site07",
            "row 5: site maps to a different anonymized_site than in row 2",
        ),
        (
            "999999,WUSTL0099,WUSTL,NDARINVDDDD4444,site01",
            "row 5: anonymized_site is already used for another site (row 2)",
        ),
        (
            "999999,UMN0099,UMN,UCSD0034,site01",
            "row 5: release_candidate_id equals a PSCID (row 3)",
        ),
        ("999999,UMN-0099,UMN,NDARINVDDDD4444,site01", "row 5: PSCID must contain only"),
        ("999999,,UMN,NDARINVDDDD4444,site01", "row 5: missing PSCID"),
        ("999999,UMN0099,UMN", "row 5: missing release_candidate_id"),
    ],
)
def test_row_errors_name_row_and_column_only(extra_row, expected):
    msg = _error(MAP_CSV + extra_row + "\n")
    assert expected in msg
    assert msg.startswith("map.csv: ")
    for value in [*ALL_VALUES, "999999", "UMN0099", "UMN-0099", "WUSTL0099", "NDARINVDDDD4444"]:
        assert value not in msg.removeprefix("map.csv: "), msg


def test_missing_header_column_and_empty():
    assert "missing column(s) anonymized_site" in _error("DCCID,PSCID,site,release_candidate_id\n")
    assert "no header" in _error("\n\n")
    assert "no rows" in _error(HEADER + "\n")


def test_errors_do_not_chain_content():
    with pytest.raises(ValueError, match=r"^m: row 5: duplicate DCCID") as info:
        parse_identity_map(MAP_CSV + "123456,UMN0099,UMN,NDARINVDDDD4444,site01\n", "m")
    assert info.value.__cause__ is None
