"""STATS19 files: which published file holds a year's table, and its bytes on local disk.

Finding a year's file. DfT renamed its files over time (lib/data/README.md, "File names"). For a
(year, table) the candidates are tried in this order; "not found" (HTTP 404, or no such file) moves to
the next one:

1. `dft-road-casualty-statistics-{collision,vehicle,casualty}-YYYY.csv`: current single-year files (2019 on);
2. `dft-road-casualty-statistics-accident-YYYY.csv`: the older collision name that mirrors still carry;
3. `dft-road-casualty-statistics-{table}-1979-latest-published-year.csv`: every year in one file,
   which `lib.data.stats19` reads as a stream of batches filtered to the year, never held whole in memory.

Only when every candidate is missing does `fetch` raise `YearNotPublished` ("year 2031 is not published
at <base url>"). A host name that does not resolve fails at once (`HostNotFound`: no retry heals it;
the message points at synthetic data and mirrors). Other HTTP failures are retried with exponential
backoff when transient (connection errors, timeouts, cut transfers, 429 and 5xx; `Retry-After` is
honoured) and reported otherwise.

Downloads stream to `<cache_dir>/<name>.part` with a progress bar and are renamed when complete. A
cached copy is revalidated with a conditional GET (ETag / Last-Modified, saved next to it), so the
multi-gigabyte combined file is downloaded once, not once per year. `file://` URLs are read in place.
`Source.sha256` (or `sha256_file`) is the checksum the lake compares before writing: the rule is
"no write when the lake already holds the same bytes".
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from lib.data.schema import TABLES
from lib.errors import NeedsAction

if TYPE_CHECKING:
    import requests

logger = logging.getLogger(__name__)

FILE_PREFIX = "dft-road-casualty-statistics-"
COMBINED_SUFFIX = "1979-latest-published-year"
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 120.0


class DownloadError(RuntimeError):
    """A file could not be downloaded; the message names the URL."""


class HostNotFound(DownloadError, NeedsAction):
    """The base URL's host name does not resolve; retrying will not change that."""


class NotFound(DownloadError):
    """The server says the file does not exist (HTTP 404, or no such local file)."""


class YearNotPublished(DownloadError):
    """No candidate file holds the requested year."""


# --- where the files are -------------------------------------------------------------------------------------


def combined_file_name(table: str) -> str:
    return f"{FILE_PREFIX}{table}-{COMBINED_SUFFIX}.csv"


def candidate_files(year: int, table: str) -> list[tuple[str, bool]]:
    """(file name, holds many years) in the order to try them."""
    if table not in TABLES:
        raise ValueError(f"table {table!r} is not one of {TABLES}")
    names = [(f"{FILE_PREFIX}{table}-{year}.csv", False)]
    if table == "collision":
        names.append((f"{FILE_PREFIX}accident-{year}.csv", False))
    names.append((combined_file_name(table), True))
    return names


def file_url(base_url: str, name: str) -> str:
    return base_url.rstrip("/") + "/" + name


@dataclass(frozen=True)
class Source:
    """One downloaded (or local) published file."""

    year: int
    table: str
    url: str
    path: Path
    combined: bool  # holds many years: rows must be filtered to `year`

    @property
    def name(self) -> str:
        """The published file name, as the lake stores it."""
        return self.path.name

    @property
    def sha256(self) -> str:
        return sha256_file(self.path)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file. Remembered while the file's size and mtime stay the same: a combined
    file of all years is checked once for every year it supplies, and it can be gigabytes."""
    stat = Path(path).stat()
    return _sha256_of(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    base_url: str,
    year: int,
    table: str,
    cache_dir: Path,
    *,
    progress: bool = True,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> Source:
    """The first candidate file for (year, table) that exists, downloaded into `cache_dir`."""
    tried = []
    for name, combined in candidate_files(year, table):
        url = file_url(base_url, name)
        try:
            path = download(url, Path(cache_dir), progress=progress, retries=retries, backoff=backoff, timeout=timeout)
        except NotFound:
            tried.append(name)
            continue
        logger.info("The %s table for %d comes from %s.", table, year, url)
        return Source(year=year, table=table, url=url, path=path, combined=combined)
    raise YearNotPublished(
        f"year {year} is not published at {base_url}: no {table} file found (tried {', '.join(tried)})"
    )


def fetch_year(base_url: str, year: int, cache_dir: Path, *, progress: bool = True) -> dict[str, Source]:
    """The year's three published files (`fetch` per table); raises `YearNotPublished` if one is missing."""
    return {table: fetch(base_url, year, table, cache_dir, progress=progress) for table in TABLES}


def download(
    url: str,
    cache_dir: Path,
    *,
    progress: bool = True,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> Path:
    """A local path holding the bytes at `url`: `file://` in place, http(s) downloaded into `cache_dir`."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        path = Path(url2pathname(unquote(urlparse(url).path)))
        if not path.is_file():
            raise NotFound(f"{url} does not exist")
        return path
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http, https and file URLs are supported")
    cache_dir.mkdir(parents=True, exist_ok=True)
    return _download_http(url, cache_dir / Path(urlparse(url).path).name, progress, retries, backoff, timeout)


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _download_http(url: str, dest: Path, progress: bool, retries: int, backoff: float, timeout: float) -> Path:
    import requests  # here, not at the top: reading a file:// source (an ingest's usual case) never needs it

    meta_path = dest.with_name(dest.name + ".meta.json")
    # identity: the bytes on disk must be the published bytes, not a re-encoded transfer
    headers = {"Accept-Encoding": "identity"}
    if dest.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("url") == url:
            if meta.get("etag"):
                headers["If-None-Match"] = meta["etag"]
            if meta.get("last_modified"):
                headers["If-Modified-Since"] = meta["last_modified"]
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            return _get(url, dest, part, meta_path, headers, progress, timeout)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                _Transient) as error:  # fmt: skip
            part.unlink(missing_ok=True)
            if _name_not_resolved(error):
                host = urlparse(url).hostname
                raise HostNotFound(
                    f"{url}: the host name {host} did not resolve ({error.__class__.__name__}), so nothing was "
                    f"downloaded. Without access to {host}, use synthetic data (`make demo DEMO_DATA=synthetic`) "
                    "or a mirror laid out like DfT's: STATS19_BASE_URL=file:///path/to/road-accidents-safety-data/ "
                    "in .env"
                ) from error
            if attempt == retries:
                raise DownloadError(f"{url}: giving up after {retries + 1} attempts; last error: {error}") from error
            delay = getattr(error, "retry_after", None) or backoff * 2**attempt
            logger.warning("Downloading %s failed (%s); retrying in %.1f s.", url, error, delay)
            time.sleep(delay)
            attempt += 1


def _name_not_resolved(error: BaseException) -> bool:
    """Whether a DNS lookup failure lies anywhere in the exception's chain (requests wraps urllib3 wraps socket)."""
    seen = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return True
        pending += [current.__cause__, current.__context__, getattr(current, "reason", None),
                    *(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))]
    return False


def _get(url: str, dest: Path, part: Path, meta_path: Path, headers: dict, progress: bool, timeout: float) -> Path:
    """One GET: 304 keeps the cached copy, 200 streams to `part` and renames it when complete."""
    import requests
    from tqdm import tqdm

    with requests.get(url, stream=True, headers=headers, timeout=timeout) as response:
        if response.status_code == 304:
            logger.info("%s is unchanged since the cached download; using %s.", url, dest)
            return dest
        if response.status_code == 404:
            raise NotFound(f"{url} was not found (HTTP 404)")
        if response.status_code in TRANSIENT_STATUS or response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code}", _retry_after(response))
        if not response.ok:
            raise DownloadError(f"{url}: HTTP {response.status_code} {response.reason}")
        expected = int(response.headers.get("Content-Length") or 0) or None
        written = 0
        with open(part, "wb") as out, tqdm(
            total=expected, unit="B", unit_scale=True, desc=dest.name, disable=not progress, mininterval=1
        ) as bar:
            for chunk in response.iter_content(chunk_size=1 << 20):
                out.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
        if expected is not None and written != expected:
            raise _Transient(f"the transfer stopped after {written:,} of {expected:,} bytes")
        os.replace(part, dest)
        validators = {"etag": response.headers.get("ETag"), "last_modified": response.headers.get("Last-Modified")}
        meta_path.write_text(json.dumps({"url": url, **validators}))
        return dest


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return min(float(value), MAX_RETRY_AFTER) if value.replace(".", "", 1).isdigit() else None
