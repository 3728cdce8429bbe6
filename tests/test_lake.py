"""The lake over a real S3 server and over file://: bytes, listing, atomic partitions, clear errors."""

from __future__ import annotations

import os
import signal
import threading
import time

import pandas as pd
import pytest

from lib.config import load_settings
from lib.lake import Lake, LakeError, NoSuchObject, open_lake
from lib.services import ObjectStore, private_variables


@pytest.fixture(params=["s3", "file"])
def lake(request, tmp_path):
    if request.param == "file":
        yield open_lake(load_settings(), f"file://{tmp_path}/lake")
        return
    settings = request.getfixturevalue("settings")
    lake = open_lake(settings, f"{settings.lake_uri}/tests-{os.urandom(4).hex()}")
    yield lake
    lake.delete_prefix("")


def frame(rows: int, tag: str) -> pd.DataFrame:
    return pd.DataFrame({"collision_index": [f"{tag}{i:07d}" for i in range(rows)], "value": range(rows)})


def test_bytes_round_trip_listing_and_deletion(lake):
    lake.put_bytes("raw/a/year=2018/file.csv", b"a,b\n1,2\n")
    lake.put_bytes("raw/a/year=2019/file.csv", b"x")
    assert lake.get_bytes("raw/a/year=2018/file.csv") == b"a,b\n1,2\n"
    assert lake.list("raw/a/") == ["raw/a/year=2018/file.csv", "raw/a/year=2019/file.csv"]
    lake.delete_prefix("raw/a/year=2019/")
    assert lake.list("raw/") == ["raw/a/year=2018/file.csv"]
    with pytest.raises(NoSuchObject, match="no object 'raw/a/year=2019/file.csv'"):
        lake.get_bytes("raw/a/year=2019/file.csv")


def test_partitions_replace_their_data_and_only_committed_ones_are_read(lake):
    lake.write_partition("curated/collisions", 2018, frame(5, "A"), source_sha256={"collision": "abc"})
    second = lake.write_partition("curated/collisions", 2018, frame(3, "B"))
    assert [p.year for p in lake.partitions("curated/collisions")] == [2018]
    data = lake.read_partition("curated/collisions", 2018)
    assert list(data["collision_index"]) == ["B0000000", "B0000001", "B0000002"]
    assert second["rows"] == 3
    # exactly one data file remains beside the manifest
    assert len(lake.list("curated/collisions/year=2018/")) == 2

    # a data file without a manifest (an interrupted write) is invisible to readers
    lake.put_bytes("curated/collisions/year=2019/part-orphan.parquet", b"not parquet")
    assert [p.year for p in lake.partitions("curated/collisions")] == [2018]
    assert len(lake.read_dataset("curated/collisions")) == 3
    with pytest.raises(LakeError, match="no committed partition for 2019"):
        lake.read_partition("curated/collisions", 2019)


def test_unreachable_endpoint_missing_bucket_and_wrong_keys_are_named(settings):
    env = {"S3_ENDPOINT_URL": "http://127.0.0.1:1", "LAKE_URI": settings.lake_uri}
    with pytest.raises(LakeError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:1"):
        open_lake(load_settings({**os.environ, **env}))
    with pytest.raises(LakeError, match="bucket 'no-such-bucket' does not exist"):
        open_lake(settings, "s3://no-such-bucket")
    wrong = load_settings({**os.environ, "AWS_SECRET_ACCESS_KEY": "wrong-secret"})
    with pytest.raises(LakeError, match="refused the credentials"):
        open_lake(wrong)


def test_file_lake_rejects_unknown_schemes():
    with pytest.raises(LakeError, match="use s3://"):
        Lake("ftp://somewhere")


def test_a_server_killed_mid_write_leaves_the_committed_partition_intact(tmp_path):
    """Kill -9 the S3 server while a partition is being rewritten; the old one must survive."""
    settings = load_settings(private_variables("crash"))
    store = ObjectStore("s3", settings, tmp_path, True)
    store.wait_until_healthy(store.start(), time.monotonic() + 30)
    try:
        lake = open_lake(settings)
        lake.write_partition("curated/collisions", 2018, frame(1000, "OLD"))

        big = frame(400_000, "NEW").assign(payload=lambda d: d["collision_index"] + "-" + os.urandom(8).hex())
        killer = threading.Timer(0.3, lambda: os.kill(store.process().pid, signal.SIGKILL))
        killer.start()
        with pytest.raises(LakeError, match="cannot reach the S3 endpoint"):
            for _ in range(50):  # keep writing until the kill lands
                lake.write_partition("curated/collisions", 2018, big)
        killer.join()

        store.wait_until_healthy(store.start(), time.monotonic() + 30)
        survived = open_lake(settings).read_partition("curated/collisions", 2018)
        assert len(survived) in (1000, 400_000)  # the old partition, or a complete new one: never a mix
        assert survived["collision_index"].str[:3].nunique() == 1
    finally:
        store.stop()
