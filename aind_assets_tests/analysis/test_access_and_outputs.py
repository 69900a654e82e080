"""Per-bucket access (anonymous public buckets beside credentialed ones), a per-analysis output
location (``s3_output_bucket``) and the experimenter of records."""

from __future__ import annotations

import pytest

from aind_assets.analysis.models import DispatchConfig
from aind_assets.resources.object_store import ObjectStoreResource
from aind_assets.settings import Settings


def test_settings_name_anonymous_buckets_and_the_experimenter(tmp_path):
    s = Settings.from_env(
        {
            "AIND_DATA_DIR": str(tmp_path),
            "AIND_S3_ANONYMOUS_BUCKETS": "aind-open-data, s3://other-public/ ,",
            "AIND_EXPERIMENTER": "jane.doe@alleninstitute.org",
            "AWS_ACCESS_KEY_ID": "k",
        }
    )
    assert s.s3_anonymous_buckets == ["aind-open-data", "other-public"]
    assert s.experimenter == "jane.doe@alleninstitute.org"
    store = s.object_store()
    public = store.storage_options_for("s3://aind-open-data/ecephys_1/nwb/x.nwb")
    private = store.storage_options_for("s3://private-bucket/x")
    assert public["anon"] is True and "key" not in public and "secret" not in public
    assert "anon" not in private
    assert Settings.from_env({"AIND_DATA_DIR": str(tmp_path)}).s3_anonymous_buckets == []


@pytest.mark.servers
def test_anonymous_bucket_is_read_without_credentials(s3_store):
    private = s3_store.url("private.txt")
    s3_store.put_bytes(private, b"secret data")
    bucket = s3_store.root.removeprefix("s3://").split("/")[0]
    anonymous = ObjectStoreResource(
        root=s3_store.root,
        endpoint_url=s3_store.endpoint_url,
        access_key_id=s3_store.access_key_id,
        secret_access_key=s3_store.secret_access_key,
        anonymous_buckets=[bucket],
    )
    credentialed = ObjectStoreResource(
        root="s3://elsewhere",
        endpoint_url=s3_store.endpoint_url,
        access_key_id=s3_store.access_key_id,
        secret_access_key=s3_store.secret_access_key,
        anonymous_buckets=["some-public-bucket"],
    )
    # the other buckets keep the credentials
    assert credentialed.get_bytes(private) == b"secret data"
    # the bucket named anonymous gets none: this server has no public bucket, so it refuses
    with pytest.raises(PermissionError):
        anonymous.get_bytes(private)


def test_s3_output_bucket_per_analysis():
    def config(*outputs: str | None) -> DispatchConfig:
        return DispatchConfig.model_validate(
            [
                {
                    "name": f"s{i}",
                    "query": {},
                    "analyses": [{"name": "unit_quality", "s3_output_bucket": out}],
                }
                for i, out in enumerate(outputs)
            ]
        )

    assert config("aind-scratch-data/jane").output_root("unit_quality") == (
        "s3://aind-scratch-data/jane"
    )
    assert config(None, "s3://b/p/").output_root("unit_quality") == "s3://b/p"
    assert config(None).output_root("unit_quality") is None
    with pytest.raises(ValueError, match="several s3_output_bucket values"):
        config("a/x", "b/y")
