"""The data lake: one interface over `s3://bucket[/prefix]` (any S3 server, via `minio`) and `file:///path`.

Keys are `/`-separated paths below the lake root. Partitions of a dataset live under
`<dataset>/year=YYYY/`: the parquet data file is written first under a fresh name, then
`_manifest.json` is written last and names that file. Readers go through the manifest, so they
see a partition either as it was or as it is now, never half-written; an interrupted write leaves
only an unreferenced data file, removed by the next successful commit.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from lib.config import Settings
from lib.errors import NeedsAction

if TYPE_CHECKING:
    import pandas as pd
    from minio import Minio

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"


class LakeError(RuntimeError):
    """The lake cannot be reached or used; the message names the endpoint, bucket or key."""


class LakeAccessError(LakeError, NeedsAction):
    """The lake's bucket is missing or the S3 server refused the keys: a setting must change."""


class NoSuchObject(LakeError):
    """The key holds nothing."""


def s3_client(settings: Settings, timeout: float = 30, retries: int = 1) -> Minio:
    """A minio client for S3_ENDPOINT_URL that fails fast instead of retrying for minutes."""
    # minio and urllib3 are imported by the first s3:// lake, not by every import of this module: they
    # take a quarter of a second, and a file:// lake never needs them.
    import urllib3
    from minio import Minio

    endpoint = urlparse(settings.s3_endpoint_url)
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(timeout, 5), read=timeout),
        retries=urllib3.Retry(total=retries, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
    )
    return Minio(endpoint.netloc, access_key=settings.aws_access_key_id,
                 secret_key=settings.aws_secret_access_key, secure=endpoint.scheme == "https", http_client=http)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Partition:
    dataset: str
    year: int
    manifest: dict

    @property
    def rows(self) -> int:
        return self.manifest["rows"]


class Lake:
    """Bytes in and out, listing, deletion and atomic parquet partitions."""

    def __init__(self, uri: str, settings: Settings | None = None):
        parsed = urlparse(uri)
        self.uri = uri
        if parsed.scheme == "file":
            self._root = Path(parsed.path)
            self._client = None
        elif parsed.scheme == "s3":
            if settings is None:
                raise LakeError(f"{uri}: an s3:// lake needs S3 settings (endpoint and keys)")
            self.bucket = parsed.netloc
            self._prefix = parsed.path.strip("/")
            self._client = s3_client(settings)
            self._endpoint = settings.s3_endpoint_url
        else:
            raise LakeError(f"LAKE_URI={uri!r}: use s3://bucket[/prefix] or file:///absolute/path")

    # -- keys and errors -----------------------------------------------------------------

    def _object(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def _path(self, key: str) -> Path:
        return self._root / key

    def _s3(self, action: str, key: str, call):
        """Run one S3 call and turn failures into a LakeError that says what to check."""
        import urllib3  # loaded already by s3_client
        from minio.error import S3Error

        try:
            return call()
        except S3Error as error:
            if error.code == "NoSuchBucket":
                raise LakeAccessError(f"bucket {self.bucket!r} does not exist on {self._endpoint} "
                                      "(create it, or check LAKE_URI)") from error
            if error.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"):
                raise LakeAccessError(f"{self._endpoint} refused the credentials ({error.code}) while trying to "
                                      f"{action} {key!r}: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from error
            raise LakeError(f"S3 error {error.code} while trying to {action} {key!r}: {error.message}") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise LakeError(f"cannot reach the S3 endpoint {self._endpoint} to {action} {key!r} "
                            f"({type(error).__name__}); is it running? (`make status`)") from error

    def check(self) -> None:
        """Fail now, clearly, if the lake is unreachable, missing or refuses our keys."""
        if self._client is None:
            self._root.mkdir(parents=True, exist_ok=True)
            return
        if not self._s3("open the bucket", self.bucket, lambda: self._client.bucket_exists(self.bucket)):
            raise LakeAccessError(f"bucket {self.bucket!r} does not exist on {self._endpoint} (create it, or check "
                                  "LAKE_URI)")

    # -- bytes ---------------------------------------------------------------------------

    def _replace_local(self, key: str, write) -> None:
        """Write a local file beside its target, then rename it into place (atomic on one file system)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as tmp:
            write(tmp)
        os.replace(tmp.name, path)

    def put_bytes(self, key: str, data: bytes) -> None:
        if self._client is None:
            self._replace_local(key, lambda tmp: tmp.write(data))
            return
        self._s3("write", key, lambda: self._client.put_object(
            self.bucket, self._object(key), io.BytesIO(data), len(data)))

    def put_file(self, key: str, source: Path) -> None:
        """Upload a (possibly large) local file without reading it into memory."""
        if self._client is None:
            def copy(tmp):
                with open(source, "rb") as handle:
                    shutil.copyfileobj(handle, tmp, 1 << 20)
            self._replace_local(key, copy)
            return
        self._s3("write", key, lambda: self._client.fput_object(self.bucket, self._object(key), str(source)))

    def get_bytes(self, key: str) -> bytes:
        if self._client is None:
            try:
                return self._path(key).read_bytes()
            except FileNotFoundError:
                raise NoSuchObject(f"{self.uri}: no object {key!r}") from None

        def read() -> bytes:
            response = self._client.get_object(self.bucket, self._object(key))
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        try:
            return self._s3("read", key, read)
        except LakeError as error:
            from minio.error import S3Error

            if isinstance(error.__cause__, S3Error) and error.__cause__.code == "NoSuchKey":
                raise NoSuchObject(f"{self.uri}: no object {key!r}") from None
            raise

    def list(self, prefix: str = "") -> list[str]:
        """Every key below `prefix`, sorted."""
        if self._client is None:
            base = self._path(prefix)
            if not base.exists():
                return []
            return sorted(str(p.relative_to(self._root)) for p in base.rglob("*")
                          if p.is_file() and not p.name.startswith(".tmp-"))
        start = len(self._prefix) + 1 if self._prefix else 0
        objects = self._s3("list", prefix, lambda: list(
            self._client.list_objects(self.bucket, prefix=self._object(prefix), recursive=True)))
        return sorted(obj.object_name[start:] for obj in objects)

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            if self._client is None:
                self._path(key).unlink(missing_ok=True)
            else:
                self._s3("delete", key, lambda k=key: self._client.remove_object(self.bucket, self._object(k)))

    def delete_prefix(self, prefix: str) -> None:
        self.delete(self.list(prefix))

    # -- partitions ----------------------------------------------------------------------

    @staticmethod
    def partition_prefix(dataset: str, year: int) -> str:
        return f"{dataset}/year={year}/"

    def manifest(self, dataset: str, year: int) -> dict | None:
        try:
            return json.loads(self.get_bytes(self.partition_prefix(dataset, year) + MANIFEST))
        except NoSuchObject:
            return None

    def write_partition(self, dataset: str, year: int, table: pd.DataFrame | pa.Table, **metadata) -> dict:
        """Commit one partition: data under a fresh name, then the manifest, then drop old files."""
        if not isinstance(table, pa.Table):  # a DataFrame
            table = pa.Table.from_pandas(table, preserve_index=False)
        prefix = self.partition_prefix(dataset, year)
        data_name = f"part-{uuid.uuid4().hex[:12]}.parquet"
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, compression="zstd")
        data = buffer.getvalue().to_pybytes()
        self.put_bytes(prefix + data_name, data)
        manifest = {
            "dataset": dataset,
            "year": year,
            "data_file": data_name,
            "rows": table.num_rows,
            "columns": table.schema.names,
            "data_sha256": sha256_bytes(data),
            "committed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **metadata,
        }
        self.put_bytes(prefix + MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
        stale = [k for k in self.list(prefix) if not k.endswith((MANIFEST, data_name))]
        self.delete(stale)
        log.info("Committed %s year %s: %s rows in %s.", dataset, year, f"{table.num_rows:,}", data_name)
        return manifest

    def partitions(self, dataset: str) -> list[Partition]:
        """Committed partitions of a dataset (those with a manifest), by year."""
        found = []
        for key in self.list(dataset + "/"):
            if key.endswith("/" + MANIFEST):
                year = int(key.split("year=")[1].split("/")[0])
                found.append(Partition(dataset, year, json.loads(self.get_bytes(key))))
        return sorted(found, key=lambda p: p.year)

    def read_partition(self, dataset: str, year: int, columns: list[str] | None = None,
                       filters: list[tuple] | None = None) -> pd.DataFrame:
        """A committed partition's `columns`, only the rows that pass pyarrow `filters` when given."""
        manifest = self.manifest(dataset, year)
        if manifest is None:
            raise LakeError(f"{self.uri}: {dataset} has no committed partition for {year}")
        key = self.partition_prefix(dataset, year) + manifest["data_file"]
        try:
            return pq.read_table(pa.BufferReader(self.get_bytes(key)), columns=columns, filters=filters).to_pandas()
        except pa.ArrowInvalid as error:
            raise LakeError(f"{self.uri}/{key}: the committed data file is not readable parquet ({error}); "
                            f"rebuild the year with 01_ingest (force=True)") from error

    def read_dataset(self, dataset: str, years: Iterable[int] | None = None,
                     columns: list[str] | None = None) -> pd.DataFrame:
        """Concatenate committed partitions (all, or the given years that exist)."""
        import pandas as pd  # here: ingestion, which only writes, never needs pandas

        wanted = None if years is None else set(years)
        frames = [self.read_partition(dataset, p.year, columns) for p in self.partitions(dataset)
                  if wanted is None or p.year in wanted]
        if not frames:
            return pd.DataFrame(columns=columns or [])
        return pd.concat(frames, ignore_index=True)


def open_lake(settings: Settings, uri: str | None = None) -> Lake:
    """The lake named by LAKE_URI (or `uri`), checked to be reachable."""
    lake = Lake(uri or settings.lake_uri, settings)
    lake.check()
    return lake
