"""Plot titles and labels of the packaged analyses read well (pure functions)."""

from aind_assets.analysis.examples.code.behavior_performance import group_title, short_labels


def test_session_labels_keep_what_tells_files_apart() -> None:
    names = [
        "behavior_774659_2024-05-01_10-00-00.nwb",
        "behavior_774659_2024-05-02_09-30-00.nwb",
        "behavior_774659_2024-05-13_11-15-00.nwb",
    ]
    labels = short_labels(names)
    assert labels == ["2024-05-01_10-00-00", "2024-05-02_09-30-00", "2024-05-13_11-15-00"]
    assert len(set(labels)) == len(names)
    assert short_labels(["one_file.nwb"]) == ["one_file"]
    long = short_labels(["x" * 60 + "a.nwb", "x" * 60 + "b.nwb"])
    assert all(len(label) <= 24 for label in long) and len(set(long)) == 2


def test_group_title_names_the_field_and_its_value() -> None:
    assert group_title({"subject__subject_id": "774659"}) == "subject id 774659"
    assert group_title({"subject__subject_id": "1", "session_type": "A"}) == (
        "subject id 1, session type A"
    )
