"""``HBCD_OBSERVER_INTERVAL_S``: the identified-session observer's minimum interval."""

import pytest

from aind_assets.hbcd.sources.assets import hbcd_identified_observer, observer_interval_s


def test_default_and_override() -> None:
    assert observer_interval_s({}) == 300
    assert observer_interval_s({"HBCD_OBSERVER_INTERVAL_S": " 5 "}) == 5
    # the sensor declared at import took the environment of this process (unset in tests)
    assert hbcd_identified_observer.minimum_interval_seconds == observer_interval_s()


@pytest.mark.parametrize("raw", ["0", "-5", "1.5", "five"])
def test_rejects_what_is_not_a_positive_whole_number(raw: str) -> None:
    with pytest.raises(ValueError, match="HBCD_OBSERVER_INTERVAL_S"):
        observer_interval_s({"HBCD_OBSERVER_INTERVAL_S": raw})
