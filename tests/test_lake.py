"""The lake over a real S3 server and over file://: bytes, listing, atomic partitions, clear errors."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from dataclasses import replace

import pandas as pd
import pytest

from lib.config import load_settings
from lib.data.lake import Lake, LakeError, NoSuchObject, open_lake
from lib.services.object_store import ObjectStore
from lib.services.stack import private_variables


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


class KillingProxy:
    """A TCP relay in front of the S3 server that kills the server once a data file's upload is under way.

    It watches the bytes the client sends: after `after_bytes` of a PUT whose path names a partition's
    data file (`part-...`), it calls `kill`, so the server dies mid-upload, before any manifest is written.
    """

    def __init__(self, upstream_port: int, kill, after_bytes: int = 256 * 1024):
        self.upstream_port, self.kill, self.after_bytes = upstream_port, kill, after_bytes
        self.killed = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:  # the server is down: refuse the client as the server itself would
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        uploading, sent = False, 0
        try:
            while chunk := source.recv(65536):
                if from_client and chunk.startswith(b"PUT ") and b"/part-" in chunk.split(b"\r\n", 1)[0]:
                    uploading, sent = True, 0
                sent += len(chunk)
                if uploading and sent >= self.after_bytes and not self.killed.is_set():
                    self.killed.set()
                    self.kill()
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def read_once_recovered(lake, dataset: str, year: int, within_s: float = 60) -> pd.DataFrame:
    """Read a partition once the restarted server serves it: SeaweedFS answers 500 while it recovers
    the volume that the kill cut mid-write (its bucket answers before its objects do)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return lake.read_partition(dataset, year)
        except LakeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_a_server_killed_mid_write_leaves_the_committed_partition_intact(tmp_path):
    """Kill -9 the S3 server while a new data file is being uploaded; the old partition must survive whole."""
    settings = load_settings(private_variables("crash"))
    store = ObjectStore("s3", settings, tmp_path, True)
    store.wait_until_healthy(store.start(), time.monotonic() + 30)
    proxy = KillingProxy(store.port, lambda: os.kill(store.process().pid, signal.SIGKILL))
    try:
        open_lake(settings).write_partition("curated/collisions", 2018, frame(1000, "OLD"))

        big = frame(400_000, "NEW").assign(payload=lambda d: d["collision_index"] + "-" + os.urandom(8).hex())
        through_proxy = replace(settings, s3_endpoint_url=f"http://127.0.0.1:{proxy.port}")
        with pytest.raises(LakeError, match="cannot reach the S3 endpoint"):
            open_lake(through_proxy).write_partition("curated/collisions", 2018, big)
        assert proxy.killed.is_set(), "the server was not killed during the data file's upload"

        store.wait_until_healthy(store.start(), time.monotonic() + 30)
        survived = read_once_recovered(open_lake(settings), "curated/collisions", 2018)
        assert len(survived) == 1000 and set(survived["collision_index"].str[:3]) == {"OLD"}
    finally:
        proxy.close()
        store.stop()
